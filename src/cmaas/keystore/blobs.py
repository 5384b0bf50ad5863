"""Metadata of encrypted file blobs: owner, size and expiry (the bytes are files)."""

from __future__ import annotations

import sqlite3

from cmaas.keystore._rows import check_blob_room
from cmaas.keystore._sql import GroupCommit, SharedConnection

__all__ = ["SqliteBlobStore"]


class SqliteBlobStore:
    def __init__(self, shared: SharedConnection, commits: GroupCommit) -> None:
        self._shared = shared
        self._commits = commits

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

        def work(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT coalesce(sum(size), 0), count(*) FROM blobs"
                " WHERE app_id = ? AND expires_ms > ?",
                (app_id, now_ms),
            ).fetchone()
            check_blob_room(int(row[0]), int(row[1]), size, quota, max_count)
            db.execute(
                "INSERT INTO blobs (blob_id, app_id, size, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (blob_id, app_id, size, now_ms, expires_ms),
            )

        await self._commits.run(work)

    async def size(self, blob_id: str, now_ms: int) -> int | None:
        """The blob's size, or ``None`` when it is unknown or expired."""
        async with self._shared.read() as db:
            cursor = await db.execute(
                "SELECT size FROM blobs WHERE blob_id = ? AND expires_ms > ?", (blob_id, now_ms)
            )
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def expire(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Forget expired blobs; returns their ids, so their files can be deleted."""

        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "DELETE FROM blobs WHERE blob_id IN (SELECT blob_id FROM blobs"
                " WHERE expires_ms <= ? LIMIT ?) RETURNING blob_id",
                (now_ms, limit),
            ).fetchall()
            return [str(row[0]) for row in rows]

        result: list[str] = await self._commits.run(work)
        return result
