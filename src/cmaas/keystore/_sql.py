"""The connection, lock and clock that every SQLite store of one keystore shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from cmaas.keystore._db import AioSqliteDb, Db, Runner, SqliteDb, Work, run_now

__all__ = [
    "WRITER_PRAGMAS",
    "GroupCommit",
    "SharedConnection",
    "SqliteThread",
    "group_commit_runner",
    "thread_runner",
]

WRITER_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    # FULL: a 202 promises durability even across power loss, not only crashes.
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 10000",
    # Deleted envelopes and secrets are overwritten, not left in free pages.
    "PRAGMA secure_delete = ON",
    # A transaction's savepoints (one per operation in a group commit) keep the pages
    # they change in a statement journal, which SQLite spills to a temporary file past
    # 64 KiB: a file created, written and deleted per transaction, about a tenth of
    # the CPU of a message's stored-dispatched-delivered lifecycle (bench item i), and
    # copies of envelope pages left in free disk blocks. In memory, it is bounded by
    # the pages one transaction changes.
    "PRAGMA temp_store = MEMORY",
)
"""The settings of every connection that writes to a gateway's SQLite database."""

T = TypeVar("T")


class SharedConnection:
    """One aiosqlite connection with its transaction helpers and clock.

    The app store and the device store of a keystore hold the same instance, so
    that their transactions are serialised by one lock on one connection.
    """

    def __init__(
        self,
        connection: aiosqlite.Connection,
        clock: Callable[[], float],
        reader: sqlite3.Connection | None = None,
    ) -> None:
        self.connection = connection
        self._clock = clock
        # One connection serves the whole process; the lock keeps one coroutine's
        # transaction from interleaving with another's statements.
        self._lock = asyncio.Lock()
        self._reader = reader
        self._read_lock = asyncio.Lock()

    def write_lock(self) -> asyncio.Lock:
        """The lock every transaction on this connection holds, e.g. to close it safely."""
        return self._lock

    clock_sql: str | None = None  # one process per file: its clock is the clock
    lock_rows = ""  # every write transaction holds the file's write lock

    def now(self) -> int:
        """The clock's time in whole unix seconds."""
        return int(self._clock())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Db]:
        """A write transaction that takes SQLite's write lock up front.

        ``BEGIN IMMEDIATE`` makes a concurrent writer (another process) wait on
        ``busy_timeout`` instead of failing halfway through with SQLITE_BUSY.
        """
        async with self._lock:
            try:
                # Inside the try: a task cancelled while its BEGIN waits for the lock
                # still has it run on aiosqlite's thread, and the transaction would hold
                # the file's write lock until the connection closed (a heartbeat
                # cancelled at shutdown failed the resignation after it).
                await self.connection.execute("BEGIN IMMEDIATE")
                yield AioSqliteDb(self.connection)
                # Inside it too: a COMMIT that fails (busy) leaves the transaction open.
                await self.connection.execute("COMMIT")
            except BaseException:
                # Queued behind the BEGIN; a BEGIN that failed left nothing to roll back.
                with contextlib.suppress(sqlite3.OperationalError):
                    await self.connection.execute("ROLLBACK")
                raise

    def lane(self, name: str = "instances") -> AbstractAsyncContextManager[Db]:
        """As :meth:`write`: one process has the file, so nothing needs to overtake."""
        return self.write()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Db]:
        """A read transaction, so that multi-statement reads see one snapshot.

        With a ``reader``, its statements run right here on the event loop's thread: an
        indexed read takes tens of microseconds, where a hop to aiosqlite's thread and
        back costs a turn of the loop per statement, which under a draining backlog is
        milliseconds (an OTP's admission reads a dozen times). In WAL mode a reader
        never waits for the writers.
        """
        if self._reader is None:
            async with self._lock:
                try:
                    await self.connection.execute("BEGIN")  # inside: as for write()
                    yield AioSqliteDb(self.connection)
                finally:
                    with contextlib.suppress(sqlite3.OperationalError):
                        await self.connection.execute("COMMIT")
            return
        async with self._read_lock:
            self._reader.execute("BEGIN")
            try:
                yield SqliteDb(self._reader)
            finally:
                self._reader.execute("COMMIT")


class SqliteThread:
    """A plain ``sqlite3`` connection that lives on one worker thread of its own.

    A whole transaction runs there in one hop from the event loop. aiosqlite pays a
    thread round trip of about 100 µs per statement; a key lookup of ten statements
    paid ten, where this pays one (docs/benchmarks.md, item g). SQLite's own locking
    (``BEGIN IMMEDIATE`` with the busy timeout) serialises it with the keystore's
    aiosqlite connection.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cmaas-sqlite", initializer=self._open
        )

    def _open(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        for pragma in WRITER_PRAGMAS:
            connection.execute(pragma)
        self._local.connection = connection

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection: sqlite3.Connection = self._local.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside one ``BEGIN IMMEDIATE`` transaction on the worker thread.

        ``work`` must be plain synchronous code; it is rolled back if it raises.

        Raises: whatever ``work`` raises, and ``sqlite3.Error``.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work)

    def _close(self) -> None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


_Work = Callable[[sqlite3.Connection], Any]


class GroupCommit:
    """Runs the write operations of many coroutines in shared transactions.

    While one transaction commits, the operations that arrive wait and then commit
    together in the next, so a burst pays one fsync instead of one per operation and
    a lone operation pays no added delay. Each operation runs in its own savepoint:
    one that raises is rolled back alone and its caller gets the exception.

    Urgent operations (an OTP's submission, a request's nonce) go into the next
    transaction ahead of the others, and a transaction that holds urgent ones holds no
    other. A transaction of other operations in progress when an urgent one arrives
    commits what it has done so far and leaves the rest for after it: an OTP waits for
    one operation and a commit, never for a queue of receipt updates or the rest of a
    large transaction (256 receipt updates take tens of milliseconds on a busy machine).
    """

    def __init__(self, thread: SqliteThread, max_batch: int = 256) -> None:
        self._thread = thread
        self._max_batch = max_batch
        self._pending: list[tuple[_Work, asyncio.Future[Any]]] = []
        self._urgent: list[tuple[_Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        """Run ``work`` in the next shared transaction and return what it returned.

        The operation commits even if the caller is cancelled while it waits.

        Raises: whatever ``work`` raises (its changes are rolled back), and
            ``sqlite3.Error`` when the whole transaction fails.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._pending).append((work, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="cmaas group commit")
        return await future

    async def _flush(self) -> None:
        while self._urgent or self._pending:
            queue = self._urgent or self._pending
            batch = queue[: self._max_batch]
            del queue[: self._max_batch]
            works = [work for work, _ in batch]
            # Read on the database's thread between operations; a list's truth is one
            # atomic read under the GIL, and a late answer only costs one operation.
            urgent_waiting = None if queue is self._urgent else self._urgent.__len__
            try:
                run_all = functools.partial(
                    _each_in_savepoint, works=works, yield_to=urgent_waiting
                )
                outcomes = await self._thread.write(run_all)
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            # What an urgent operation cut short goes first once the urgent ones are done.
            self._pending[:0] = batch[len(outcomes) :]
            for (_, future), (ok, value) in zip(batch, outcomes, strict=False):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def close(self) -> None:
        """Wait until every operation handed in so far has committed."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


def group_commit_runner(commits: GroupCommit) -> Runner:
    """A :class:`~cmaas.keystore._db.Runner` whose bodies share the group's commits."""

    async def run(work: Work[T], /, *, urgent: bool = False) -> T:
        return await commits.run(functools.partial(run_now, work), urgent=urgent)

    return run


def thread_runner(thread: SqliteThread) -> Runner:
    """A :class:`~cmaas.keystore._db.Runner` whose bodies each take one hop to the
    worker thread, in a transaction of their own."""

    async def run(work: Work[T], /, *, urgent: bool = False) -> T:
        return await thread.write(functools.partial(run_now, work))

    return run


def _each_in_savepoint(
    db: sqlite3.Connection, works: list[_Work], yield_to: Callable[[], int] | None = None
) -> list[tuple[bool, Any]]:
    """Run ``works`` in order, each in a savepoint of its own, and return each one's
    outcome; stop early, after at least one, once ``yield_to()`` is true (the outcomes
    then cover the works done, the first ones)."""
    outcomes: list[tuple[bool, Any]] = []
    for work in works:
        if outcomes and yield_to is not None and yield_to():
            break
        db.execute("SAVEPOINT operation")
        try:
            value = work(db)
        except Exception as error:
            db.execute("ROLLBACK TO operation")
            db.execute("RELEASE operation")
            outcomes.append((False, error))
        else:
            db.execute("RELEASE operation")
            outcomes.append((True, value))
    return outcomes
