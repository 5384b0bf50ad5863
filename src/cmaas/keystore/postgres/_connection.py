"""The connections, locks and clock that every store of one PostgreSQL keystore
shares, and the :class:`~cmaas.keystore._db.Db` adapter the stores speak through."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row

from cmaas.keystore._db import Db, Params, Row
from cmaas.keystore.migrations import to_apply
from cmaas.keystore.postgres.migrations import MIGRATIONS

__all__ = ["Connections", "PostgresDb", "connect", "take_write_lock"]

_Connection = psycopg.AsyncConnection[DictRow]

# The key of the transaction-level advisory lock that every write transaction takes: one
# writer at a time in the whole database, as SQLite's BEGIN IMMEDIATE gives. It keeps
# the single-instance semantics of the SQLite stores (read-modify-write of quotas and
# pools; event ids that grow in commit order) across processes, such as the admin CLI
# beside a gateway. An arbitrary constant: "cmaas" in ASCII.
_WRITE_LOCK = 0x636D616173


class Connections:
    """One connection for write transactions and one for reads, each with its lock,
    and one per lane (the heartbeat's, the rate buckets'), opened when first used.

    A write transaction runs at READ COMMITTED under :data:`_WRITE_LOCK`; a read runs
    in a REPEATABLE READ, READ ONLY transaction, so that its statements see one
    snapshot, and never waits for a write. A pool would let several transactions of
    one process run at once, which the stores' single-writer design cannot use yet.

    A connection that broke (the server restarted, a network cut) fails the
    transaction that was using it, and is opened again for the next one.
    """

    def __init__(
        self, url: str, writer: _Connection, reader: _Connection, clock: Callable[[], float]
    ) -> None:
        self._url = url
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._lanes: dict[str, _Lane] = {}

    @classmethod
    async def open(cls, url: str, clock: Callable[[], float]) -> Connections:
        """Connect twice to ``url`` and migrate the database.

        Raises:
            SchemaTooNew: The database was migrated by a newer CMaaS.
            psycopg.Error: The server cannot be reached or refuses the connection.
        """
        writer = await connect(url)
        try:
            await _migrate(writer)
            reader = await _connect_reader(url)
        except BaseException:
            await writer.close()
            raise
        return cls(url, writer, reader, clock)

    # clock_timestamp(), not now(): a transaction that waited for the write lock must
    # not date its heartbeat from before the wait.
    clock_sql: str | None = (
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms"
    )

    lock_rows = " FOR UPDATE"

    def now(self) -> int:
        """The clock's time in whole unix seconds."""
        return int(self._clock())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Db]:
        """A write transaction, the only one in the database while it runs."""
        async with self._write_lock:
            if self._writer.broken:
                self._writer = await connect(self._url)
            async with self._writer.transaction():
                await take_write_lock(self._writer)
                yield PostgresDb(self._writer)

    def lane(self, name: str = "instances") -> AbstractAsyncContextManager[Db]:
        """A write transaction on the connection of lane ``name``, without
        :data:`_WRITE_LOCK`: it must touch only rows whose writers need no more than row
        locks (an instance's heartbeat, a rate bucket), and so never waits for the queue
        of writes or their lock, nor for another lane's."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(self._url)
        return lane.transaction()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Db]:
        """A read-only transaction on one snapshot."""
        async with self._read_lock:
            if self._reader.broken:
                self._reader = await _connect_reader(self._url)
            async with self._reader.transaction():
                yield PostgresDb(self._reader)

    async def close(self) -> None:
        """Close both connections once the transactions in progress have ended."""
        async with self._write_lock, self._read_lock:
            await self._writer.close()
            await self._reader.close()
        for lane in self._lanes.values():
            await lane.close()


class _Lane:
    """A connection of its own for one kind of short write, opened when first used."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: _Connection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        async with self._lock:
            if self._connection is None or self._connection.broken:
                self._connection = await connect(self._url)
            async with self._connection.transaction():
                yield PostgresDb(self._connection)

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()


class PostgresDb:
    """:class:`~cmaas.keystore._db.Db` on a psycopg connection: the stores' ``?``
    placeholders become psycopg's ``%s``."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        cursor = await self._connection.execute(_placeholders(sql), params)
        return await cursor.fetchone()

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = await self._connection.execute(_placeholders(sql), params)
        return list(await cursor.fetchall())

    async def run(self, sql: str, params: Params = ()) -> int:
        cursor = await self._connection.execute(_placeholders(sql), params)
        return cursor.rowcount

    async def many(self, sql: str, rows: Iterable[Params]) -> None:
        batch = list(rows)
        if batch:
            async with self._connection.cursor() as cursor:
                await cursor.executemany(_placeholders(sql), batch)


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> bytes:
    # The stores' statements are fixed texts with no literal % or ?: each ? is a
    # parameter. Bytes: psycopg takes a query built at run time only as bytes.
    return sql.replace("%", "%%").replace("?", "%s").encode()


async def connect(url: str) -> _Connection:
    """A connection on which each transaction is opened explicitly (autocommit).

    Raises: psycopg.Error: The server cannot be reached or refuses the connection.
    """
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def take_write_lock(connection: _Connection) -> None:
    """Become the one writer in the database until this transaction ends."""
    await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))


async def _connect_reader(url: str) -> _Connection:
    reader = await connect(url)
    try:
        await reader.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await reader.set_read_only(True)
    except BaseException:
        await reader.close()
        raise
    return reader


async def _migrate(db: _Connection) -> None:
    async with db.transaction():
        # Two processes opening a new database at once migrate it one after the other.
        await take_write_lock(db)
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        cursor = await db.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
        row = await cursor.fetchone()
        for migration in to_apply(int(row["v"]) if row else 0, MIGRATIONS):
            # A script of several statements and no parameters: psycopg sends it as one
            # simple query, inside this transaction.
            await db.execute(migration.sql.encode())
            await db.execute(
                "INSERT INTO schema_migrations (version, applied_at)"
                " VALUES (%s, extract(epoch FROM now())::bigint)",
                (migration.version,),
            )
