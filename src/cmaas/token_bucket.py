"""A token bucket's arithmetic, pure: a sustained rate refills a bucket up to its burst.

:mod:`cmaas.delivery.ratelimit` keeps buckets in one process's memory; the keystore's
rate store keeps them in the database, shared by the gateway instances, and applies
the same function in a row's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BucketState", "Took", "take_tokens"]


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
