"""Rate buckets in the database, for the gateway instances that share it: one row per
key (an operation and an app), taken from in the row's own transaction."""

from __future__ import annotations

import math
from collections.abc import Callable

from cmaas.keystore._db import Db, Transactions, database_ms
from cmaas.token_bucket import BucketState, Took, take_tokens

__all__ = ["SqlRateStore"]


class SqlRateStore:
    """:class:`~cmaas.keystore.RateStore` on the tables of a keystore, either backend."""

    def __init__(self, transactions: Transactions, clock_ms: Callable[[], int]) -> None:
        self._tx = transactions
        self._clock_ms = clock_ms

    async def take(self, key: str, rate: float, burst: int, wanted: int) -> Took:
        """Take up to ``wanted`` tokens from ``key``'s bucket, refilled at ``rate`` per
        second up to ``burst`` (:func:`~cmaas.token_bucket.take_tokens`), in the
        database's time (seconds in the returned state).

        One transaction that locks the key's row: concurrent takes, from any instance,
        see each other's, and wait for no other write.

        Raises: ValueError: ``rate`` is not positive. sqlite3.Error, psycopg.Error:
            The database failed (nothing was taken).
        """
        if not rate > 0:
            raise ValueError(f"a bucket's rate must be positive, not {rate}")
        async with self._tx.lane("rates") as db:
            # At most twice: a new key's row inserted meanwhile by another instance is
            # found, and locked, by the second round.
            for _ in range(2):
                took = await self._take_in(db, key, rate, burst, wanted)
                if took is not None:
                    return took
        raise AssertionError("a rate bucket's row was neither found nor inserted")

    async def _take_in(self, db: Db, key: str, rate: float, burst: int, wanted: int) -> Took | None:
        row = await db.one(
            # lock_rows is the backend's fixed text, never input.
            "SELECT tokens, updated_ms FROM rate_buckets WHERE key = ?"  # noqa: S608
            + self._tx.lock_rows,
            (key,),
        )
        # Read once the row is locked: a take that waited for it is dated after the one
        # it waited for.
        now_ms = await database_ms(db, self._tx, self._clock_ms)
        if row is None:
            took = take_tokens(None, now_ms / 1000, rate, burst, wanted)
            inserted = await db.run(
                "INSERT INTO rate_buckets (key, tokens, updated_ms, full_ms)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, took.state.tokens, now_ms, _full_ms(took.state, now_ms, rate, burst)),
            )
            return took if inserted == 1 else None
        # A clock stepped back refills nothing, and takes nothing back.
        now_ms = max(now_ms, int(row["updated_ms"]))
        state = BucketState(float(row["tokens"]), int(row["updated_ms"]) / 1000)
        took = take_tokens(state, now_ms / 1000, rate, burst, wanted)
        await db.run(
            "UPDATE rate_buckets SET tokens = ?, updated_ms = ?, full_ms = ? WHERE key = ?",
            (took.state.tokens, now_ms, _full_ms(took.state, now_ms, rate, burst), key),
        )
        return took

    async def purge_full(self, limit: int = 5000) -> int:
        """Delete the buckets that have refilled to their burst since their last take:
        a missing row is a full bucket. (A plan changed since then refills by the old
        plan's time: a bucket may come back full as much earlier or later.)

        Returns: how many were deleted.
        """
        async with self._tx.write() as db:
            now_ms = await database_ms(db, self._tx, self._clock_ms)
            return await db.run(
                "DELETE FROM rate_buckets WHERE key IN"
                " (SELECT key FROM rate_buckets WHERE full_ms <= ? LIMIT ?)",
                (now_ms, limit),
            )


def _full_ms(state: BucketState, now_ms: int, rate: float, burst: int) -> int:
    """When a bucket left in ``state`` at ``now_ms`` has refilled to ``burst``."""
    return now_ms + math.ceil(max(burst - state.tokens, 0.0) / rate * 1000)
