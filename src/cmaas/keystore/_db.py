"""One way for the stores to speak SQL, whatever the backend.

Every store is written once, against :class:`Db`: statements with ``?`` placeholders in
the SQL that SQLite and PostgreSQL both accept, and rows read by column name. Each
backend supplies its adapters: :class:`AioSqliteDb` and :class:`SqliteDb` here, and
``PostgresDb`` in :mod:`cmaas.keystore.postgres`.

:class:`SqliteDb` runs on a plain ``sqlite3`` connection, on the worker thread of
:class:`~cmaas.keystore._sql.SqliteThread`: its methods are coroutines that never
suspend, so :func:`run_now` can run a whole transaction's coroutine there in one go.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import aiosqlite

__all__ = [
    "AioSqliteDb",
    "Db",
    "Params",
    "Row",
    "Runner",
    "SqliteDb",
    "Transactions",
    "Work",
    "database_ms",
    "run_now",
    "runner_of",
]

T = TypeVar("T")


class Row(Protocol):
    """A result row read by column name: ``sqlite3.Row`` or a psycopg ``dict_row``."""

    def __getitem__(self, key: str, /) -> Any: ...


Params = Sequence[object]


class Db(Protocol):
    """A connection inside a transaction. Statements use ``?`` placeholders."""

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of the statement's result, if any."""
        ...

    async def all(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def run(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns how many rows it changed."""
        ...

    async def many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run a statement once per parameter row."""
        ...


Work = Callable[[Db], Coroutine[Any, Any, T]]
"""A transaction's body: what it does with the connection, and what it returns."""


class Runner(Protocol):
    """Runs a body in a write transaction of its own (or in a shared one, each body in
    a savepoint of its own: SQLite's group commit) and returns what it returned.

    ``urgent`` bodies go ahead of the others where the runner queues them.
    """

    async def __call__(self, work: Work[T], /, *, urgent: bool = False) -> T: ...


class Transactions(Protocol):
    """A backend's transactions and clock, as the stores use them."""

    def now(self) -> int:
        """The clock's time in whole unix seconds."""
        ...

    @property
    def clock_sql(self) -> str | None:
        """A query whose one row's ``now_ms`` is the database's time in unix
        milliseconds: the one clock that the instances sharing a database agree on.
        ``None`` where one process has the database (SQLite): its clock is the clock."""
        ...

    def read(self) -> AbstractAsyncContextManager[Db]:
        """A read transaction on one snapshot."""
        ...

    def write(self) -> AbstractAsyncContextManager[Db]:
        """A write transaction; one writer at a time in the whole database."""
        ...

    def lane(self, name: str = "instances") -> AbstractAsyncContextManager[Db]:
        """A short write transaction that must not queue behind the others: where
        several processes share the database, on a connection of its own for each
        ``name`` (an instance's heartbeat; the rate buckets' takes on every request),
        under the locks of the rows it touches only, so that it waits neither for the
        queue of writes nor for their lock; else as :meth:`write`. Its body must
        touch only rows whose writers need no more than row locks (:attr:`lock_rows`).
        """
        ...

    @property
    def lock_rows(self) -> str:
        """What a ``SELECT`` ends with to lock the rows it reads until the transaction
        ends (`` FOR UPDATE``); empty where a write transaction holds the whole
        database's write lock (SQLite)."""
        ...


async def database_ms(db: Db, transactions: Transactions, clock_ms: Callable[[], int]) -> int:
    """Now in unix milliseconds, in ``db``'s transaction: the database's time where
    several instances share it, else ``clock_ms()``, this process's."""
    if transactions.clock_sql is None:
        return clock_ms()
    row = await db.one(transactions.clock_sql)
    assert row is not None  # a SELECT of one expression gives one row
    return int(row["now_ms"])


def runner_of(transactions: Transactions) -> Runner:
    """A runner that gives each body a write transaction of its own."""

    async def run(work: Work[T], /, *, urgent: bool = False) -> T:
        async with transactions.write() as db:
            return await work(db)

    return run


class SqliteDb:
    """:class:`Db` on a ``sqlite3`` connection: coroutines that never suspend."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        row: sqlite3.Row | None = self._connection.execute(sql, params).fetchone()
        return row

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._connection.execute(sql, params).fetchall())

    async def run(self, sql: str, params: Params = ()) -> int:
        return self._connection.execute(sql, params).rowcount

    async def many(self, sql: str, rows: Iterable[Params]) -> None:
        self._connection.executemany(sql, rows)


def run_now(work: Work[T], connection: sqlite3.Connection) -> T:
    """Run ``work`` on a ``sqlite3`` connection, synchronously, on this thread.

    Raises: whatever ``work`` raises; RuntimeError if it awaits anything but the
        connection (it would never be resumed).
    """
    coroutine = work(SqliteDb(connection))
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a store's transaction body awaited something other than its database")


class AioSqliteDb:
    """:class:`Db` on an aiosqlite connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        cursor = await self._connection.execute(sql, params)
        row: sqlite3.Row | None = await cursor.fetchone()
        return row

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = await self._connection.execute(sql, params)
        return list(await cursor.fetchall())

    async def run(self, sql: str, params: Params = ()) -> int:
        cursor = await self._connection.execute(sql, params)
        return cursor.rowcount

    async def many(self, sql: str, rows: Iterable[Params]) -> None:
        await self._connection.executemany(sql, rows)
