"""Encrypted file blobs: their metadata (owner, size, expiry) in the keystore's tables, and
their bytes wherever the backend keeps them (:class:`BlobContent`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from cmaas.keystore._db import Db, Runner, Transactions, Work
from cmaas.keystore._rows import check_blob_room
from cmaas.keystore.errors import BlobMissing

__all__ = [
    "BLOB_CHUNK_BYTES",
    "EXPIRE_BYTES",
    "BlobContent",
    "BlobFiles",
    "SqlBlobStore",
    "read_chunks",
    "remove_file",
]

BLOB_CHUNK_BYTES = 256 * 1024
"""How much of a blob is read, written or held in memory at a time."""

EXPIRE_BYTES = 64 * 1024 * 1024
"""Bytes of expired blobs deleted in one transaction, give or take the last blob."""


class BlobContent(Protocol):
    """Where the bytes of blobs are kept: files in a directory (SQLite), or rows of the
    database (PostgreSQL, which every instance reads)."""

    @property
    def staging(self) -> Path:
        """The directory where uploads are written before they are kept."""
        ...

    async def keep(self, blob_id: str, staged: Path, record: Work[None]) -> None:
        """Keep the staged file's bytes as ``blob_id``, and run ``record`` (which writes
        the metadata row) such that both stay or neither does. The staged file is gone
        afterwards either way.

        Raises: whatever ``record`` raises; nothing is kept then.
        """
        ...

    def read(self, blob_id: str, size: int) -> AsyncGenerator[bytes, None]:
        """The blob's ``size`` bytes, a chunk at a time.

        Raises: BlobMissing: The bytes are gone (the blob expired meanwhile).
        """
        ...

    async def drop(self, blob_ids: Sequence[str]) -> None:
        """Delete the bytes of blobs whose metadata the expiry has just deleted."""
        ...


class BlobFiles:
    """:class:`BlobContent` as one file per blob, named by its id, in ``directory``:
    SQLite's, where one gateway process has the database.

    Args:
        write: Runs the metadata's write transactions.
    """

    def __init__(self, directory: Path, write: Runner) -> None:
        self._directory = directory
        self._write = write

    @property
    def staging(self) -> Path:
        # The same directory: a staged upload is kept by renaming it.
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._directory

    async def keep(self, blob_id: str, staged: Path, record: Work[None]) -> None:
        try:
            await self._write(record)
        except BaseException:
            remove_file(staged)
            raise
        os.replace(staged, self._directory / blob_id)

    async def read(self, blob_id: str, size: int) -> AsyncGenerator[bytes, None]:
        try:
            # Opened here, not in a worker thread: a download cancelled during the open
            # would leave the file the thread opened to the garbage collector.
            source = (self._directory / blob_id).open("rb")
        except FileNotFoundError as error:
            raise BlobMissing(f"blob {blob_id[:8]}… has no file") from error
        try:
            async for chunk in read_chunks(source, size):
                yield chunk
        finally:
            source.close()

    async def drop(self, blob_ids: Sequence[str]) -> None:
        for blob_id in blob_ids:
            remove_file(self._directory / blob_id)


class SqlBlobStore:
    """:class:`~cmaas.keystore.BlobStore` on the tables of a keystore, either backend,
    with the bytes in ``content``."""

    def __init__(self, transactions: Transactions, write: Runner, content: BlobContent) -> None:
        self._tx = transactions
        self._write = write
        self._content = content

    @property
    def staging(self) -> Path:
        """The directory where uploads are written before :meth:`add` keeps them."""
        return self._content.staging

    async def add(
        self,
        blob_id: str,
        app_id: str,
        size: int,
        now_ms: int,
        expires_ms: int,
        quota: int,
        max_count: int | None = None,
        *,
        content: Path | None = None,
    ) -> None:
        """Record a blob, within the app's quota of bytes held in unexpired blobs and,
        when given, of their number; with ``content``, a staged file of ``size`` bytes,
        keep its bytes too, atomically with the record (the file is gone afterwards).

        Raises: QuotaExhausted.
        """

        async def work(db: Db) -> None:
            row = await db.one(
                "SELECT coalesce(sum(size), 0) AS held, count(*) AS n FROM blobs"
                " WHERE app_id = ? AND expires_ms > ?",
                (app_id, now_ms),
            )
            assert row is not None  # an aggregate gives one row
            check_blob_room(int(row["held"]), int(row["n"]), size, quota, max_count)
            await db.run(
                "INSERT INTO blobs (blob_id, app_id, size, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (blob_id, app_id, size, now_ms, expires_ms),
            )

        if content is None:
            await self._write(work)
        else:
            await self._content.keep(blob_id, content, work)

    async def size(self, blob_id: str, now_ms: int) -> int | None:
        """The blob's size, or ``None`` when it is unknown or expired."""
        async with self._tx.read() as db:
            row = await db.one(
                "SELECT size FROM blobs WHERE blob_id = ? AND expires_ms > ?", (blob_id, now_ms)
            )
        return None if row is None else int(row["size"])

    def read(self, blob_id: str, size: int) -> AsyncGenerator[bytes, None]:
        """The bytes of a blob :meth:`size` found, a chunk at a time.

        Raises: BlobMissing: They are gone (the blob expired meanwhile).
        """
        return self._content.read(blob_id, size)

    async def expire(
        self, now_ms: int, limit: int = 1000, max_bytes: int = EXPIRE_BYTES
    ) -> list[str]:
        """Forget expired blobs and delete their bytes, oldest first: at most ``limit``
        blobs, and none begun once ``max_bytes`` are deleted (so at least one, however
        big). Returns their ids; call again until none are left."""

        async def work(db: Db) -> list[str]:
            # The byte budget bounds the transaction, which holds the database's write
            # lock: with PostgreSQL, it deletes the blobs' chunks too.
            rows = await db.all(
                "DELETE FROM blobs WHERE blob_id IN (SELECT blob_id FROM"
                " (SELECT blob_id, sum(size) OVER (ORDER BY expires_ms, blob_id) - size"
                " AS before FROM blobs WHERE expires_ms <= ?"
                " ORDER BY expires_ms, blob_id LIMIT ?) AS due WHERE before < ?)"
                " RETURNING blob_id",
                (now_ms, limit, max(max_bytes, 1)),
            )
            return [str(row["blob_id"]) for row in rows]

        gone = await self._write(work)
        await self._content.drop(gone)
        return gone


async def read_chunks(source: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of ``source``, :data:`BLOB_CHUNK_BYTES` at a time, read off the
    event loop.

    Raises: BlobMissing: The file is shorter than ``size``.
    """
    left = size
    while left > 0:
        chunk = await asyncio.to_thread(source.read, min(left, BLOB_CHUNK_BYTES))
        if not chunk:
            raise BlobMissing(f"a blob's file ended {left} bytes short")
        left -= len(chunk)
        yield chunk


def remove_file(path: Path) -> None:
    """Delete a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
