"""The connection, lock and clock that every SQLite store of one keystore shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiosqlite

__all__ = ["SharedConnection"]


class SharedConnection:
    """One aiosqlite connection with its transaction helpers and clock.

    The app store and the device store of a keystore hold the same instance, so
    that their transactions are serialised by one lock on one connection.
    """

    def __init__(self, connection: aiosqlite.Connection, clock: Callable[[], float]) -> None:
        self.connection = connection
        self._clock = clock
        # One connection serves the whole process; the lock keeps one coroutine's
        # transaction from interleaving with another's statements.
        self._lock = asyncio.Lock()

    def now(self) -> int:
        """The clock's time in whole unix seconds."""
        return int(self._clock())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction that takes SQLite's write lock up front.

        ``BEGIN IMMEDIATE`` makes a concurrent writer (another process) wait on
        ``busy_timeout`` instead of failing halfway through with SQLITE_BUSY.
        """
        async with self._lock:
            await self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                await self.connection.execute("ROLLBACK")
                raise
            await self.connection.execute("COMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction, so that multi-statement reads see one snapshot."""
        async with self._lock:
            await self.connection.execute("BEGIN")
            try:
                yield self.connection
            finally:
                await self.connection.execute("COMMIT")
