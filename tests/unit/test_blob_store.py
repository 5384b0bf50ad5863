"""Blob metadata in the keystore (SQLite and PostgreSQL): quotas, sizes and expiry."""

from __future__ import annotations

import pytest

from cmaas.keystore import NewApp, QuotaExhausted, issue_credentials

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
