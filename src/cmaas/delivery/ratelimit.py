"""Per-app token buckets: a plan's sustained rate refills them up to its burst.

The plan is passed on every call, so a plan changed at runtime applies from the next
request; buckets live in memory (a restart starts them full, as a burst allows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from cmaas.keystore import Plan

__all__ = ["TokenBuckets"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key (an app, or an app and an operation)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def take(self, key: Hashable, plan: Plan, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` tokens.

        Returns:
            How many were granted, and when not all: the seconds until the rest could
            be (at most the time to refill a whole burst).
        """
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(plan.burst), now)
        rate = plan.sustained_per_second
        bucket.tokens = min(float(plan.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        granted = min(wanted, int(bucket.tokens))
        bucket.tokens -= granted
        if granted == wanted:
            return granted, 0.0
        short = min(wanted - granted, plan.burst) - bucket.tokens
        return granted, max(short, 0.0) / rate
