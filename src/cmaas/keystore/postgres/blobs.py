"""Metadata of encrypted file blobs on PostgreSQL: owner, size and expiry."""

from __future__ import annotations

from cmaas.keystore._rows import check_blob_room
from cmaas.keystore.postgres._connection import Connections

__all__ = ["PostgresBlobStore"]


class PostgresBlobStore:
    """The SQLite blob store's semantics (:mod:`cmaas.keystore.blobs`) on PostgreSQL."""

    def __init__(self, connections: Connections) -> None:
        self._db = connections

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
        """Record a blob, within the app's quotas of bytes and of blobs.

        Raises: QuotaExhausted.
        """
        async with self._db.write() as db:
            cursor = await db.execute(
                "SELECT coalesce(sum(size), 0)::bigint AS held, count(*) AS n FROM blobs"
                " WHERE app_id = %s AND expires_ms > %s",
                (app_id, now_ms),
            )
            row = await cursor.fetchone()
            assert row is not None  # an aggregate gives one row
            check_blob_room(int(row["held"]), int(row["n"]), size, quota, max_count)
            await db.execute(
                "INSERT INTO blobs (blob_id, app_id, size, created_ms, expires_ms)"
                " VALUES (%s, %s, %s, %s, %s)",
                (blob_id, app_id, size, now_ms, expires_ms),
            )

    async def size(self, blob_id: str, now_ms: int) -> int | None:
        """The blob's size, or ``None`` when it is unknown or expired."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT size FROM blobs WHERE blob_id = %s AND expires_ms > %s",
                (blob_id, now_ms),
            )
            row = await cursor.fetchone()
        return None if row is None else int(row["size"])

    async def expire(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Forget expired blobs; returns their ids, so their files can be deleted."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM blobs WHERE blob_id IN (SELECT blob_id FROM blobs"
                " WHERE expires_ms <= %s LIMIT %s) RETURNING blob_id",
                (now_ms, limit),
            )
            return [str(row["blob_id"]) for row in await cursor.fetchall()]
