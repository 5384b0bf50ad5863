"""Per-app token buckets: a plan's sustained rate refills them up to its burst.

The arithmetic is one pure function, :func:`take_tokens`, over a bucket's state (tokens
left, when last updated); :class:`TokenBuckets` keeps the states in memory for one
process (a restart starts them full, as a burst allows), and a store shared by several
gateway instances keeps them in one row per key and applies the same function in the
row's transaction, in the database's time. The plan is passed on every call, so a plan
changed at runtime applies from the next request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cmaas.keystore import Plan

__all__ = ["BucketState", "RateLimiter", "TokenBuckets", "Took", "take_tokens"]


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket: ``tokens`` left at ``updated`` (seconds on the limiter's clock)."""

    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Took:
    """Attributes:
    state: The bucket after the take.
    granted: How many tokens were granted.
    retry_after: When not all were: the seconds until the rest could be (at most the
        time to refill a whole burst); else 0.
    """

    state: BucketState
    granted: int
    retry_after: float


def take_tokens(
    state: BucketState | None, now: float, rate: float, burst: int, wanted: int
) -> Took:
    """Refill ``state`` (a new bucket, when None, is full) at ``rate`` per second up to
    ``burst``, then take up to ``wanted`` tokens."""
    tokens = float(burst) if state is None else state.tokens + (now - state.updated) * rate
    tokens = min(float(burst), tokens)
    granted = min(wanted, int(tokens))
    tokens -= granted
    if granted == wanted:
        return Took(BucketState(tokens, now), granted, 0.0)
    short = min(wanted - granted, burst) - tokens
    return Took(BucketState(tokens, now), granted, max(short, 0.0) / rate)


class RateLimiter(Protocol):
    """Where buckets live: in this process, or shared by several instances."""

    async def take(self, key: str, plan: Plan, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` tokens from ``key``'s bucket under ``plan``.

        Returns: how many were granted, and when not all, the seconds until the rest
            could be.
        """
        ...


class TokenBuckets:
    """One bucket per key (an operation and an app), in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, BucketState] = {}

    async def take(self, key: str, plan: Plan, wanted: int) -> tuple[int, float]:
        took = take_tokens(
            self._buckets.get(key), self._clock(), plan.sustained_per_second, plan.burst, wanted
        )
        self._buckets[key] = took.state
        return took.granted, took.retry_after
