"""Encrypted file blobs at the gateway: streamed to a staging file on upload, kept by the
keystore (as files, or in the database), served by capability URL, deleted at expiry.
The gateway never holds a file key: a blob is ciphertext to it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cmaas.delivery.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
)
from cmaas.delivery.ratelimit import RateLimiter, TokenBuckets
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.keystore import App, Plan, QuotaExhausted
from cmaas.keystore.blobs import remove_file
from cmaas.keystore.interface import BlobStore

__all__ = ["BLOB_ID_LENGTH", "BlobLimits", "BlobService", "FoundBlob", "StagedBlob"]

log = logging.getLogger(__name__)

BLOB_ID_LENGTH = 43  # secrets.token_urlsafe(32): 256 bits, the whole capability
_BLOB_ID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class BlobLimits:
    """Attributes:
    max_bytes: Largest blob accepted.
    quota_bytes: Bytes an app may hold in unexpired blobs.
    max_count: Unexpired blobs an app may hold (an empty blob costs no bytes).
    """

    max_bytes: int = 32 * 1024 * 1024
    quota_bytes: int = 1024 * 1024 * 1024
    max_count: int = 10_000


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """An upload written to a temporary file, not yet accepted."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FoundBlob:
    """A live blob: its size, and its bytes as they are read (see
    :meth:`~cmaas.keystore.BlobStore.read`)."""

    size: int
    chunks: AsyncGenerator[bytes, None]


class BlobService:
    """Args:
    plans: The app's rate plan by name; uploads are charged to it as messages are,
        in a bucket of their own. ``None``: uploads are not rate limited.
    """

    def __init__(
        self,
        store: BlobStore,
        limits: BlobLimits,
        plans: Callable[[str], Awaitable[Plan]] | None = None,
        buckets: RateLimiter | None = None,
    ) -> None:
        self._store = store
        self.limits = limits
        self._plans = plans
        self._buckets: RateLimiter = buckets or TokenBuckets()

    async def admit(self, app: App) -> None:
        """Charge one upload to the app's plan, before its body is read.

        Raises: RateLimited.
        """
        if self._plans is None:
            return
        plan = await self._plans(app.plan)
        granted, retry_after = await self._buckets.take(f"blob:{app.app_id}", plan, 1)
        if not granted:
            raise RateLimited(
                f"plan {plan.name!r} allows {plan.sustained_per_second:g} uploads/s",
                retry_after=retry_after,
            )

    async def stage(self, chunks: AsyncIterator[bytes]) -> StagedBlob:
        """Write an upload to a staging file, hashing it on the way (for the request
        signature, which is checked before the blob is accepted).

        Raises: PayloadTooLarge: Over the size limit; nothing is kept.
        """
        path = self._store.staging / f".upload-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        target = await asyncio.to_thread(_open_private, path)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise PayloadTooLarge(f"a blob may hold at most {self.limits.max_bytes} bytes")
                digest.update(chunk)
                await asyncio.to_thread(target.write, chunk)
            await asyncio.to_thread(_close_synced, target)
        except BaseException:
            target.close()
            self.discard(path)
            raise
        return StagedBlob(path, size, digest.hexdigest())

    def discard(self, path: Path) -> None:
        remove_file(path)

    async def accept(self, app_id: str, staged: StagedBlob, lifetime_s: int) -> tuple[str, int]:
        """Keep a staged upload under a fresh capability id.

        Returns: the blob id and its expiry (unix ms).
        Raises: InvalidRequest (lifetime), QuotaExceeded. The staged file is gone
            afterwards either way.
        """
        if not 0 < lifetime_s * 1000 <= MAX_LIFETIME_MS:
            self.discard(staged.path)
            raise InvalidRequest("expires_in must be 1 s to 30 days")
        now = int(time.time() * 1000)
        expires_ms = now + lifetime_s * 1000
        blob_id = secrets.token_urlsafe(32)
        try:
            await self._store.add(
                blob_id,
                app_id,
                staged.size,
                now,
                expires_ms,
                self.limits.quota_bytes,
                self.limits.max_count,
                content=staged.path,
            )
        except QuotaExhausted as error:
            raise QuotaExceeded(str(error), retry_after=60.0) from error
        return blob_id, expires_ms

    async def find(self, blob_id: str) -> FoundBlob:
        """A live blob, to stream out.

        Raises: NotFound: Unknown, expired, or not a blob id at all.
        """
        if not _BLOB_ID.fullmatch(blob_id):
            raise NotFound("no such blob")
        size = await self._store.size(blob_id, int(time.time() * 1000))
        if size is None:
            raise NotFound("no such blob, or it expired")
        return FoundBlob(size, self._store.read(blob_id, size))

    async def sweep(self, batch: int = 1000) -> int:
        """Delete every expired blob, ``batch`` at a time; returns how many."""
        now_ms = int(time.time() * 1000)
        deleted = 0
        while True:
            gone = await self._store.expire(now_ms, batch)
            deleted += len(gone)
            if not gone:  # a batch may stop short of its count, at its byte budget
                break
        if deleted:
            log.info("deleted %d expired blobs", deleted)
        return deleted


def _open_private(path: Path) -> BinaryIO:
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def _close_synced(target: BinaryIO) -> None:
    target.flush()
    os.fsync(target.fileno())
    target.close()
