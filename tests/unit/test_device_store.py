"""Device keys in the keystore, against real databases: SQLite files and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from cmaas.keystore import (
    DeviceNotFound,
    DevicePublication,
    DeviceRecord,
    DeviceRevoked,
    DeviceStore,
    IdentityKeyMismatch,
    Keystore,
    MasterKeyring,
    PrekeyIdConflict,
    PrekeyPoolFull,
    SignedPrekeyRollback,
    SqliteKeystore,
    StoredPrekey,
    TooManyDevices,
)
from cmaas.keystore.migrations import MIGRATIONS

from .conftest import AnyKeystore, Database, FakeClock

ALICE = "alice@cmaas.test"
LIMITS = {"max_devices": 3, "max_prekeys": 50}


def prekey(key_id: int) -> StoredPrekey:
    # The keystore stores what the caller validated; random bytes stand in for keys.
    return StoredPrekey(key_id, b"\x04" + os.urandom(64), os.urandom(70))


def publication(
    device_id: int = 1,
    *,
    identity_key: bytes = b"identity-1",
    spk_id: int = 1000,
    opk_ids: range | tuple[int, ...] = range(1, 11),
    label: str | None = "phone",
    jid: str = ALICE,
) -> DevicePublication:
    return DevicePublication(
        jid=jid,
        device_id=device_id,
        identity_key=identity_key,
        suites=("p256-aesgcm", "x25519-chacha"),
        signed_prekey=prekey(spk_id),
        one_time_prekeys=tuple(prekey(i) for i in opk_ids),
        label=label,
    )


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


@pytest.fixture
def devices(keystore: AnyKeystore) -> DeviceStore:
    return keystore.devices


def test_keystores_satisfy_the_protocols(keystore: AnyKeystore) -> None:
    typed: Keystore = keystore
    store: DeviceStore = typed.devices
    assert store is keystore.devices


async def test_publish_new_device(devices: DeviceStore, clock: FakeClock) -> None:
    pub = publication()
    record = await devices.publish(pub, **LIMITS)
    now = int(clock.now)
    assert record == DeviceRecord(
        jid=ALICE,
        device_id=1,
        identity_key=b"identity-1",
        suites=("p256-aesgcm", "x25519-chacha"),
        signed_prekey=pub.signed_prekey,
        label="phone",
        created_at=now,
        updated_at=now,
        revoked_at=None,
        prekeys_left=10,
    )
    assert await devices.get(ALICE, 1) == record


async def test_refresh_rotates_spk_adds_prekeys_and_keeps_label(
    devices: DeviceStore, clock: FakeClock
) -> None:
    first = await devices.publish(publication(), **LIMITS)
    clock.now += 100
    rotated = publication(spk_id=1001, opk_ids=range(11, 16), label=None)
    record = await devices.publish(rotated, **LIMITS)
    assert record.signed_prekey == rotated.signed_prekey
    assert record.signed_prekey != first.signed_prekey
    assert record.prekeys_left == 15
    assert record.label == "phone"
    assert (record.created_at, record.updated_at) == (first.created_at, first.created_at + 100)
    relabelled = await devices.publish(
        publication(spk_id=1002, opk_ids=(), label="tablet"), **LIMITS
    )
    assert (relabelled.label, relabelled.prekeys_left) == ("tablet", 15)


async def assert_unchanged(devices: DeviceStore, before: list[DeviceRecord]) -> None:
    assert list(await devices.list(ALICE)) == before


async def test_revoked_id_is_never_reused(devices: DeviceStore) -> None:
    await devices.publish(publication(), **LIMITS)
    await devices.revoke(ALICE, 1)
    before = list(await devices.list(ALICE))
    with pytest.raises(DeviceRevoked):
        await devices.publish(publication(opk_ids=range(100, 105)), **LIMITS)
    await assert_unchanged(devices, before)


async def test_identity_key_mismatch(devices: DeviceStore) -> None:
    await devices.publish(publication(), **LIMITS)
    before = list(await devices.list(ALICE))
    with pytest.raises(IdentityKeyMismatch):
        await devices.publish(
            publication(identity_key=b"identity-2", spk_id=1001, opk_ids=range(20, 25)), **LIMITS
        )
    await assert_unchanged(devices, before)


async def test_too_many_devices_counts_active_devices_only(devices: DeviceStore) -> None:
    for device_id in (1, 2, 3):
        await devices.publish(publication(device_id), **LIMITS)
    before = list(await devices.list(ALICE))
    with pytest.raises(TooManyDevices):
        await devices.publish(publication(4), **LIMITS)
    await assert_unchanged(devices, before)
    # A refresh of a known device is not a new device.
    await devices.publish(publication(3, spk_id=1001, opk_ids=()), **LIMITS)
    await devices.revoke(ALICE, 1)
    assert (await devices.publish(publication(4), **LIMITS)).device_id == 4
    # Another JID has its own limit.
    await devices.publish(publication(1, jid="bob@cmaas.test"), **LIMITS)


async def test_prekey_pool_full_names_the_numbers(devices: DeviceStore) -> None:
    await devices.publish(publication(opk_ids=range(1, 41)), **LIMITS)
    before = list(await devices.list(ALICE))
    with pytest.raises(PrekeyPoolFull, match=r"40 .*11 .*50"):
        await devices.publish(publication(spk_id=1001, opk_ids=range(41, 52)), **LIMITS)
    await assert_unchanged(devices, before)
    record = await devices.publish(publication(spk_id=1001, opk_ids=range(41, 51)), **LIMITS)
    assert record.prekeys_left == 50


@pytest.mark.parametrize(
    ("spk_id", "opk_ids"),
    [
        pytest.param(1001, (5, 20), id="already-in-pool"),
        pytest.param(1001, (20, 21, 20), id="duplicated"),
        pytest.param(1001, (20, 1001), id="equals-new-spk"),
        pytest.param(7, (20,), id="new-spk-equals-pooled-opk"),
    ],
)
async def test_prekey_id_conflicts(
    devices: DeviceStore, spk_id: int, opk_ids: tuple[int, ...]
) -> None:
    await devices.publish(publication(), **LIMITS)
    before = list(await devices.list(ALICE))
    with pytest.raises(PrekeyIdConflict):
        await devices.publish(publication(spk_id=spk_id, opk_ids=opk_ids), **LIMITS)
    await assert_unchanged(devices, before)


async def test_conflict_on_a_new_device_stores_nothing(devices: DeviceStore) -> None:
    with pytest.raises(PrekeyIdConflict):
        await devices.publish(publication(opk_ids=(1, 1)), **LIMITS)
    assert await devices.list(ALICE) == []


@pytest.mark.parametrize(
    "pub",
    [
        pytest.param(publication(0), id="device-id-zero"),
        pytest.param(publication(spk_id=2**31), id="spk-id-too-large"),
        pytest.param(publication(opk_ids=(-1,)), id="negative-opk-id"),
    ],
)
async def test_ids_out_of_range_are_refused(devices: DeviceStore, pub: DevicePublication) -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        await devices.publish(pub, **LIMITS)


async def test_list_get_and_revoke(devices: DeviceStore, clock: FakeClock) -> None:
    await devices.publish(publication(7), **LIMITS)
    clock.now += 1
    await devices.publish(publication(3), **LIMITS)
    clock.now += 1
    await devices.publish(publication(5), **LIMITS)
    assert [d.device_id for d in await devices.list(ALICE)] == [7, 3, 5]
    assert await devices.list("nobody@cmaas.test") == []

    clock.now += 1
    revoked = await devices.revoke(ALICE, 3)
    assert (revoked.revoked_at, revoked.prekeys_left) == (int(clock.now), 0)
    assert await devices.get(ALICE, 3) == revoked
    assert [(d.device_id, d.revoked_at is None) for d in await devices.list(ALICE)] == [
        (7, True),
        (3, False),
        (5, True),
    ]
    with pytest.raises(DeviceRevoked):
        await devices.revoke(ALICE, 3)
    with pytest.raises(DeviceNotFound):
        await devices.revoke(ALICE, 4)
    with pytest.raises(DeviceNotFound):
        await devices.get(ALICE, 4)
    with pytest.raises(DeviceNotFound):
        await devices.get("bob@cmaas.test", 7)


async def test_take_gives_the_lowest_prekey_of_each_active_device(
    devices: DeviceStore, clock: FakeClock
) -> None:
    one = await devices.publish(publication(1, opk_ids=(9, 4, 6)), **LIMITS)
    clock.now += 1
    await devices.publish(publication(2, opk_ids=()), **LIMITS)
    clock.now += 1
    await devices.publish(publication(3, opk_ids=(1,)), **LIMITS)
    await devices.revoke(ALICE, 3)

    take = await devices.take(ALICE, low_water=0)
    assert [d.device_id for d in take.devices] == [1, 2]
    first, second = take.devices
    assert first.one_time_prekey is not None and first.one_time_prekey.key_id == 4
    assert (first.prekeys_left, first.identity_key) == (2, b"identity-1")
    assert first.signed_prekey == one.signed_prekey
    assert (second.one_time_prekey, second.prekeys_left) == (None, 0)

    taken = [(await devices.take(ALICE, low_water=0)).devices[0] for _ in range(3)]
    assert [k.one_time_prekey.key_id if k.one_time_prekey else None for k in taken] == [
        6,
        9,
        None,
    ]
    assert (await devices.get(ALICE, 1)).prekeys_left == 0
    assert (await devices.take("nobody@cmaas.test", low_water=5)).devices == ()


async def test_running_low_is_reported_once_until_a_refill(devices: DeviceStore) -> None:
    await devices.publish(publication(1, opk_ids=range(1, 6)), **LIMITS)
    await devices.publish(publication(2, opk_ids=range(1, 21)), **LIMITS)

    lows = [
        [k.device_id for k in (await devices.take(ALICE, low_water=3)).running_low]
        for _ in range(5)
    ]
    # Device 1's pool goes 4, 3, 2 (below 3: reported), 1, 0; device 2 stays high.
    assert lows == [[], [], [1], [], []]

    await devices.publish(publication(1, spk_id=1001, opk_ids=range(100, 102)), **LIMITS)
    take = await devices.take(ALICE, low_water=3)
    assert [k.device_id for k in take.running_low] == [1]
    assert take.running_low[0] == take.devices[0]
    assert (await devices.take(ALICE, low_water=3)).running_low == ()

    # A publish without one-time prekeys is no refill.
    await devices.publish(publication(1, spk_id=1002, opk_ids=()), **LIMITS)
    assert (await devices.take(ALICE, low_water=3)).running_low == ()


async def test_concurrent_takes_never_hand_out_a_prekey_twice(
    database: Database, master_key: bytes, keystore: AnyKeystore
) -> None:
    await keystore.devices.publish(publication(opk_ids=range(1, 31)), **LIMITS)
    # Separate connections behave like separate gateway processes on the same database.
    others = [await database.open(MasterKeyring(master_key)) for _ in range(2)]
    try:
        stores = [keystore, *others]
        takes = await asyncio.gather(
            *(stores[i % 3].devices.take(ALICE, low_water=5) for i in range(40))
        )
    finally:
        for other in others:
            await other.close()
    handed = [t.devices[0].one_time_prekey for t in takes]
    key_ids = [k.key_id for k in handed if k is not None]
    assert len(key_ids) == 30
    assert sorted(key_ids) == list(range(1, 31))
    assert sum(len(t.running_low) for t in takes) == 1
    assert (await keystore.devices.get(ALICE, 1)).prekeys_left == 0


async def test_migrations_upgrade_a_version_1_database(db_path: Path, master_key: bytes) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at INTEGER NOT NULL)"
        )
        raw.executescript(MIGRATIONS[0].sql)
        raw.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        raw.execute(
            "INSERT INTO devices VALUES (?, 1, x'01', 'p256-aesgcm', 7, x'04', x'30', NULL,"
            " 10, 10, NULL)",
            (ALICE,),
        )
        raw.execute("INSERT INTO one_time_prekeys VALUES (?, 1, 1, x'04', x'30')", (ALICE,))
    raw.close()

    store = await SqliteKeystore.open(db_path, MasterKeyring(master_key))
    try:
        record = await store.devices.get(ALICE, 1)
        assert (record.signed_prekey.key_id, record.prekeys_left) == (7, 1)
        take = await store.devices.take(ALICE, low_water=5)
        assert [k.device_id for k in take.running_low] == [1]
    finally:
        await store.close()
    with sqlite3.connect(db_path) as raw:
        versions = [row[0] for row in raw.execute("SELECT version FROM schema_migrations")]
        columns = [row[1] for row in raw.execute("PRAGMA table_info(devices)")]
        taken = raw.execute("SELECT jid, device_id, key_id FROM taken_prekeys").fetchall()
    raw.close()
    assert versions == [m.version for m in MIGRATIONS]
    assert "low_notified_at" in columns
    assert taken == [(ALICE, 1, 1)]


async def test_a_retried_publish_is_idempotent_and_never_brings_back_a_taken_key(
    keystore: AnyKeystore,
) -> None:
    """A device that lost the answer to its publish sends the same keys again."""
    first = publication(1, opk_ids=(1, 2, 3))
    await keystore.devices.publish(first, **LIMITS)
    taken = await keystore.devices.take(ALICE, low_water=0)
    handed_out = taken.devices[0].one_time_prekey
    assert handed_out is not None
    record = await keystore.devices.publish(first, **LIMITS)  # the retry
    assert record.prekeys_left == 2  # the handed-out key did not come back
    rest = [
        (await keystore.devices.take(ALICE, low_water=0)).devices[0].one_time_prekey
        for _ in range(3)
    ]
    assert [k.key_id if k else None for k in rest] == [2, 3, None]
    assert handed_out.key_id not in [k.key_id for k in rest if k]


async def test_a_signed_prekey_cannot_be_rolled_back(devices: DeviceStore) -> None:
    """An old bundle published again must not put a retired signed prekey back."""
    first = publication(spk_id=1000, opk_ids=())
    await devices.publish(first, **LIMITS)
    fifth = publication(spk_id=1005, opk_ids=())
    await devices.publish(fifth, **LIMITS)
    before = list(await devices.list(ALICE))
    with pytest.raises(SignedPrekeyRollback, match="1000 is older than 1005"):
        await devices.publish(first, **LIMITS)
    other_key_same_id = publication(spk_id=1005, opk_ids=())
    with pytest.raises(SignedPrekeyRollback, match="another key"):
        await devices.publish(other_key_same_id, **LIMITS)
    await assert_unchanged(devices, before)
    # The same signed prekey again is a retried publish; a newer one is a rotation.
    await devices.publish(fifth, **LIMITS)
    assert (await devices.get(ALICE, 1)).signed_prekey == fifth.signed_prekey
    await devices.publish(publication(spk_id=1006, opk_ids=()), **LIMITS)
    assert (await devices.get(ALICE, 1)).signed_prekey.key_id == 1006


async def test_only_the_most_recently_revoked_devices_are_kept(
    devices: DeviceStore, clock: FakeClock
) -> None:
    for device_id in range(1, 6):
        await devices.publish(publication(device_id, opk_ids=()), **LIMITS)
        clock.now += 1
        await devices.revoke(ALICE, device_id, keep_revoked=2)
    assert [(d.device_id, d.revoked_at is not None) for d in await devices.list(ALICE)] == [
        (4, True),
        (5, True),
    ]
    with pytest.raises(DeviceRevoked):
        await devices.publish(publication(5, opk_ids=()), **LIMITS)
    # Revoked in the same second as others, the device just revoked is still kept.
    await devices.publish(publication(6, opk_ids=()), **LIMITS)
    await devices.revoke(ALICE, 6, keep_revoked=1)
    assert [d.device_id for d in await devices.list(ALICE)] == [6]
