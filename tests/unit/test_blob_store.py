"""Blobs in the keystore (SQLite and PostgreSQL): quotas, sizes and expiry, and their
bytes (files with SQLite, chunks in the database with PostgreSQL) kept with the record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cmaas.keystore import BlobMissing, NewApp, QuotaExhausted, issue_credentials
from cmaas.keystore.blobs import BLOB_CHUNK_BYTES

from .conftest import AnyKeystore

NOW = 1_800_000_000_000


@pytest.fixture
async def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    for app_id in ("shop", "other"):
        await any_keystore.create_app(
            NewApp(app_id, app_id, "default"), issue_credentials(f"cid-{app_id}")
        )
    return any_keystore


async def test_the_byte_quota_counts_unexpired_blobs_of_the_app_only(
    keystore: AnyKeystore,
) -> None:
    blobs = keystore.blobs
    await blobs.add("a" * 40, "shop", 600, NOW, NOW + 1000, quota=1000)
    await blobs.add("o" * 40, "other", 900, NOW, NOW + 1000, quota=1000)
    with pytest.raises(QuotaExhausted, match="600 bytes of blobs; 401 more"):
        await blobs.add("b" * 40, "shop", 401, NOW, NOW + 1000, quota=1000)
    await blobs.add("b" * 40, "shop", 400, NOW, NOW + 1000, quota=1000)
    # Once the first two expire, their bytes count no more.
    await blobs.add("c" * 40, "shop", 1000, NOW + 1000, NOW + 2000, quota=1000)
    assert await blobs.size("c" * 40, NOW + 1000) == 1000
    assert await blobs.size("a" * 40, NOW + 1000) is None
    assert await blobs.size("a" * 40, NOW) == 600
    assert await blobs.size("unknown", NOW) is None


async def test_the_count_limit_and_expiry(keystore: AnyKeystore) -> None:
    blobs = keystore.blobs
    for n in range(3):
        await blobs.add(f"blob-{n}", "shop", 0, NOW, NOW + 10 * (n + 1), quota=10, max_count=3)
    with pytest.raises(QuotaExhausted, match="3 blobs"):
        await blobs.add("blob-3", "shop", 0, NOW, NOW + 100, quota=10, max_count=3)
    assert sorted(await blobs.expire(NOW + 20)) == ["blob-0", "blob-1"]
    assert await blobs.expire(NOW + 20) == []
    await blobs.add("blob-3", "shop", 0, NOW, NOW + 100, quota=10, max_count=3)
    assert await blobs.expire(NOW + 1000, limit=1) in (["blob-2"], ["blob-3"])
    assert len(await blobs.expire(NOW + 1000)) == 1


def _staged(keystore: AnyKeystore, data: bytes) -> Path:
    path = keystore.blobs.staging / f".upload-{len(data)}"
    path.write_bytes(data)
    return path


async def _read(keystore: AnyKeystore, blob_id: str) -> bytes:
    size = await keystore.blobs.size(blob_id, NOW)
    assert size is not None
    return b"".join([chunk async for chunk in keystore.blobs.read(blob_id, size)])


async def test_content_is_kept_with_its_record_and_read_back_in_chunks(
    keystore: AnyKeystore,
) -> None:
    blobs = keystore.blobs
    data = os.urandom(2 * BLOB_CHUNK_BYTES + 123)
    staged = _staged(keystore, data)
    await blobs.add("big-1", "shop", len(data), NOW, NOW + 1000, quota=10**9, content=staged)
    assert not staged.exists()
    chunks = [chunk async for chunk in blobs.read("big-1", len(data))]
    assert [len(chunk) for chunk in chunks] == [BLOB_CHUNK_BYTES, BLOB_CHUNK_BYTES, 123]
    assert b"".join(chunks) == data
    empty = _staged(keystore, b"")
    await blobs.add("empty-1", "shop", 0, NOW, NOW + 1000, quota=10**9, content=empty)
    assert await _read(keystore, "empty-1") == b""


async def test_content_over_quota_is_not_kept(keystore: AnyKeystore) -> None:
    blobs = keystore.blobs
    staged = _staged(keystore, b"x" * 600)
    with pytest.raises(QuotaExhausted):
        await blobs.add("over", "shop", 600, NOW, NOW + 1000, quota=500, content=staged)
    assert not staged.exists()
    assert await blobs.size("over", NOW) is None
    with pytest.raises(BlobMissing):
        await anext(aiter(blobs.read("over", 600)))
    # Nothing of it stays behind to count against the quota either.
    await blobs.add(
        "fits", "shop", 500, NOW, NOW + 1000, quota=500, content=_staged(keystore, b"y" * 500)
    )
    assert await _read(keystore, "fits") == b"y" * 500


async def test_expiry_deletes_the_content_with_the_record(keystore: AnyKeystore) -> None:
    blobs = keystore.blobs
    data = os.urandom(BLOB_CHUNK_BYTES + 1)
    await blobs.add(
        "gone", "shop", len(data), NOW, NOW + 10, quota=10**9, content=_staged(keystore, data)
    )
    await blobs.add(
        "kept", "shop", 3, NOW, NOW + 1000, quota=10**9, content=_staged(keystore, b"abc")
    )
    assert await blobs.expire(NOW + 10) == ["gone"]
    with pytest.raises(BlobMissing):
        await anext(aiter(blobs.read("gone", len(data))))
    assert await _read(keystore, "kept") == b"abc"


async def test_expiry_deletes_a_bounded_number_of_bytes_per_call(keystore: AnyKeystore) -> None:
    blobs = keystore.blobs
    huge = _staged(keystore, b"h" * 100)
    await blobs.add("huge", "shop", 100, NOW, NOW, quota=10**9, content=huge)
    for n in range(3):
        content = _staged(keystore, bytes([n]) * 40)
        await blobs.add(f"due-{n}", "shop", 40, NOW, NOW + 1 + n, quota=10**9, content=content)
    # Oldest first; a blob bigger than the budget of 50 goes alone.
    assert await blobs.expire(NOW + 10, max_bytes=50) == ["huge"]
    # 40 + 40 pass the budget: the third waits for the next call.
    assert sorted(await blobs.expire(NOW + 10, max_bytes=50)) == ["due-0", "due-1"]
    assert await blobs.expire(NOW + 10, max_bytes=50) == ["due-2"]
    assert await blobs.expire(NOW + 10, max_bytes=50) == []
