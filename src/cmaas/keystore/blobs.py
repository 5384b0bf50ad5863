"""Metadata of encrypted file blobs: owner, size and expiry (the bytes are files)."""

from __future__ import annotations

from cmaas.keystore._db import Db, Runner, Transactions
from cmaas.keystore._rows import check_blob_room

__all__ = ["SqlBlobStore"]


class SqlBlobStore:
    """:class:`~cmaas.keystore.BlobStore` on the tables of a keystore, either backend."""

    def __init__(self, transactions: Transactions, write: Runner) -> None:
        self._tx = transactions
        self._write = write

    async def add(
        self,
        blob_id: str,
        app_id: str,
        size: int,
        now_ms: int,
        expires_ms: int,
        quota: int,
        max_count: int | None = None,
    ) -> None:
        """Record a blob, within the app's quota of bytes held in unexpired blobs and,
        when given, of their number.

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

        await self._write(work)

    async def size(self, blob_id: str, now_ms: int) -> int | None:
        """The blob's size, or ``None`` when it is unknown or expired."""
        async with self._tx.read() as db:
            row = await db.one(
                "SELECT size FROM blobs WHERE blob_id = ? AND expires_ms > ?", (blob_id, now_ms)
            )
        return None if row is None else int(row["size"])

    async def expire(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Forget expired blobs; returns their ids, so their files can be deleted."""

        async def work(db: Db) -> list[str]:
            rows = await db.all(
                "DELETE FROM blobs WHERE blob_id IN (SELECT blob_id FROM blobs"
                " WHERE expires_ms <= ? LIMIT ?) RETURNING blob_id",
                (now_ms, limit),
            )
            return [str(row["blob_id"]) for row in rows]

        return await self._write(work)
