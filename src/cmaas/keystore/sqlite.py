"""The keystore on SQLite (aiosqlite), in WAL mode with foreign keys enforced."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite

from cmaas.file_lock import lock_exclusively
from cmaas.keystore._rows import MAX_SIGNING_KEYS
from cmaas.keystore._sql import (
    WRITER_PRAGMAS,
    GroupCommit,
    SharedConnection,
    SqliteThread,
    group_commit_runner,
    thread_runner,
)
from cmaas.keystore.base import SqlKeystore
from cmaas.keystore.blobs import BlobFiles
from cmaas.keystore.credentials import MasterKeyring
from cmaas.keystore.errors import DatabaseInUse
from cmaas.keystore.migrations import MIGRATIONS, to_apply

__all__ = [
    "MAX_SIGNING_KEYS",
    "SUBMIT_SLICE",
    "GatewayLock",
    "SqliteKeystore",
    "default_blob_dir",
]


SUBMIT_SLICE = 100
"""Messages per outbox operation
(:attr:`~cmaas.keystore.messages.SqlMessageStore.submit_slice`): about 3 ms of the
database thread's CPU on a 2-core VM, where 500 took 15 to 22."""


class SqliteKeystore(SqlKeystore):
    """:class:`~cmaas.keystore.Keystore` on one SQLite file.

    Use :meth:`open`; the constructor expects an already configured connection.
    """

    def __init__(
        self,
        connection: aiosqlite.Connection,
        keyring: MasterKeyring,
        clock: Callable[[], float] = time.time,
        *,
        path: Path,
        blob_dir: Path | None = None,
    ) -> None:
        self._db = connection
        self._reader = _open_reader(path)
        self._shared = SharedConnection(connection, clock, self._reader)
        self._thread = SqliteThread(path)
        self._commits = GroupCommit(self._thread)
        write = group_commit_runner(self._commits)
        super().__init__(
            self._shared,
            keyring,
            write=write,
            take=thread_runner(self._thread),
            clock=clock,
            blob_content=BlobFiles(blob_dir or default_blob_dir(path), write),
            submit_slice=SUBMIT_SLICE,
        )

    @classmethod
    async def open(
        cls,
        path: Path,
        keyring: MasterKeyring,
        clock: Callable[[], float] = time.time,
        *,
        blob_dir: Path | None = None,
    ) -> SqliteKeystore:
        """Open (creating if needed) and migrate the database at ``path``; blobs are
        files in ``blob_dir``, by default :func:`default_blob_dir`.

        Raises:
            SchemaTooNew: The file was migrated by a newer CMaaS.
            sqlite3.Error: The file cannot be opened or is not a database.
        """
        await asyncio.to_thread(_create_private, path)
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            await connection.execute("PRAGMA journal_mode = WAL")
            for pragma in WRITER_PRAGMAS:
                await connection.execute(pragma)
            await _migrate(connection)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, keyring, clock, path=path, blob_dir=blob_dir)

    async def close(self) -> None:
        await self._commits.close()
        await self._thread.close()
        # A read or write in progress on the shared connection finishes first.
        async with self._shared.write_lock():
            await self._db.close()
        self._reader.close()


def _open_reader(path: Path) -> sqlite3.Connection:
    """The connection that reads on the event loop's thread; it may write nothing."""
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.row_factory = sqlite3.Row
    # A reader waits only in rare cases (the WAL being recovered or reset): briefly.
    reader.execute("PRAGMA busy_timeout = 1000")
    reader.execute("PRAGMA query_only = ON")
    return reader


def default_blob_dir(database: Path) -> Path:
    """Where a SQLite gateway keeps its blobs' files unless told: beside the database."""
    return database.with_name(database.name + ".blobs")


class GatewayLock:
    """One gateway process's exclusive hold on a SQLite database, for its lifetime.

    Two gateways on one file would each dispatch the same outbox and count the same
    rates in memory. The hold is an OS lock on ``<database>.lock``, which the OS drops
    when the process ends, however it ends. Only the gateway takes it: ``cmaas admin``
    commands open the database beside a running gateway, as SQLite allows.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def take(cls, database: Path) -> GatewayLock:
        """Hold ``database`` for this process, without waiting.

        Raises:
            DatabaseInUse: Another process holds it.
            OSError: The lock file cannot be created or locked.
        """
        lock_path = database.with_name(database.name + ".lock")
        database.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock_exclusively(descriptor)
        except BlockingIOError:
            os.close(descriptor)
            raise DatabaseInUse(
                f"another gateway process uses the database {database} (it holds"
                f" {lock_path}): one SQLite file serves one gateway instance; to run"
                " several instances, give them one PostgreSQL database"
                " (CMAAS_DATABASE=postgresql://...)"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        return cls(descriptor)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the lock
            self._descriptor = None


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does; its -wal and -shm files follow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)


async def _migrate(connection: aiosqlite.Connection) -> None:
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    cursor = await connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cursor.fetchone()
    for migration in to_apply(int(row[0]) if row else 0, MIGRATIONS):
        # executescript commits what is pending first; BEGIN/COMMIT inside the script
        # make the migration and its bookkeeping row one atomic step. The only value
        # formatted in is the migration's own integer version.
        try:
            await connection.executescript(
                "BEGIN IMMEDIATE;\n"
                + migration.sql
                + "\nINSERT INTO schema_migrations (version, applied_at)"
                + f" VALUES ({int(migration.version)}, CAST(strftime('%s','now') AS INTEGER));"
                + "\nCOMMIT;"
            )
        except BaseException:
            if connection.in_transaction:
                await connection.execute("ROLLBACK")
            raise
