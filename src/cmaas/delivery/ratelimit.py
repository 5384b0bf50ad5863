"""Per-app token buckets: a plan's sustained rate refills them up to its burst.

The arithmetic is one pure function, :func:`~cmaas.token_bucket.take_tokens`, over a
bucket's state (tokens left, when last updated). :class:`TokenBuckets` keeps the states
in memory for one process (a restart starts them full, as a burst allows): the limiter
where one gateway process has the database (SQLite). :class:`SharedBuckets` keeps them
in the database, one row per key, and applies the same function in the row's
transaction, in the database's time: the limiter of the instances that share one
PostgreSQL database, so that an app's rate is the plan's across all of them, whatever
their clocks say. The plan is passed on every call, so a plan changed at runtime
applies from the next request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from cmaas.keystore import Plan, RateStore
from cmaas.token_bucket import BucketState, Took, take_tokens

__all__ = ["BucketState", "RateLimiter", "SharedBuckets", "TokenBuckets", "Took", "take_tokens"]


class RateLimiter(Protocol):
    """Where buckets live: in this process, or shared by several instances."""

    async def take(self, key: str, plan: Plan, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` tokens from ``key``'s bucket under ``plan``.

        Returns: how many were granted, and when not all, the seconds until the rest
            could be.
        Raises: KeystoreError, sqlite3.Error, psycopg.Error: A shared limiter's
            database failed.
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


class SharedBuckets:
    """One bucket per key in the database that several gateway instances share: each
    take is one transaction on the key's row, which it locks (the instances' other
    writes do not wait for it, nor it for them)."""

    def __init__(self, store: RateStore) -> None:
        self._store = store

    async def take(self, key: str, plan: Plan, wanted: int) -> tuple[int, float]:
        took = await self._store.take(key, plan.sustained_per_second, plan.burst, wanted)
        return took.granted, took.retry_after
