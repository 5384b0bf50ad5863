"""The bytes of blobs in PostgreSQL, which every gateway instance sharing the database
reads: rows of :data:`~cmaas.keystore.blobs.BLOB_CHUNK_BYTES`, written in the metadata's
transaction and deleted with it (the rows cascade)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import psycopg
from psycopg.rows import DictRow

from cmaas.keystore._db import Transactions, Work
from cmaas.keystore.blobs import BLOB_CHUNK_BYTES, remove_file
from cmaas.keystore.errors import BlobMissing
from cmaas.keystore.postgres._connection import PostgresDb, connect, take_write_lock

__all__ = ["PostgresBlobChunks"]


class PostgresBlobChunks:
    """:class:`~cmaas.keystore.blobs.BlobContent` in the ``blob_chunks`` table.

    An upload is written on a connection of its own, and its chunks before the database's
    write lock is taken: the lock, which every write of every instance waits for, is
    held only for the metadata's few statements, never while 32 MiB travel. Downloads
    read one chunk per read transaction: a slow client holds no connection or snapshot.
    Uploads are staged in a private temporary directory of this process.
    """

    def __init__(self, url: str, transactions: Transactions) -> None:
        self._url = url
        self._tx = transactions
        self._connection: psycopg.AsyncConnection[DictRow] | None = None
        self._lock = asyncio.Lock()
        self._staging: Path | None = None

    @property
    def staging(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="cmaas-uploads-"))
        return self._staging

    async def keep(self, blob_id: str, staged: Path, record: Work[None]) -> None:
        try:
            source = await asyncio.to_thread(staged.open, "rb")
            with source:
                async with self._lock:
                    if self._connection is None or self._connection.broken:
                        self._connection = await connect(self._url)
                    connection = self._connection
                    async with connection.transaction():
                        seq = 0
                        while chunk := await asyncio.to_thread(source.read, BLOB_CHUNK_BYTES):
                            # The blob's row comes at the end: the foreign key is deferred.
                            await connection.execute(
                                "INSERT INTO blob_chunks (blob_id, seq, data) VALUES (%s, %s, %s)",
                                (blob_id, seq, chunk),
                            )
                            seq += 1
                        await take_write_lock(connection)
                        await record(PostgresDb(connection))
        finally:
            remove_file(staged)

    async def read(self, blob_id: str, size: int) -> AsyncGenerator[bytes, None]:
        left, seq = size, 0
        while left > 0:
            async with self._tx.read() as db:
                row = await db.one(
                    "SELECT data FROM blob_chunks WHERE blob_id = ? AND seq = ?", (blob_id, seq)
                )
            if row is None:
                raise BlobMissing(f"blob {blob_id[:8]}… lost its bytes after {size - left}")
            chunk = bytes(row["data"])
            left -= len(chunk)
            seq += 1
            yield chunk

    async def drop(self, blob_ids: Sequence[str]) -> None:
        """Nothing left to do: the chunks went with the rows of ``blobs``."""

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None
        if self._staging is not None:
            await asyncio.to_thread(shutil.rmtree, self._staging, True)
            self._staging = None
