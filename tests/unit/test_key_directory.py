"""The gateway's key directory: every bundle verified before storage, refusals typed,
lookups hand out each one-time prekey once and notify a device running low once."""

from __future__ import annotations

import asyncio

import pytest

from cmaas.envelope import DeviceBundle, DeviceKeyring, b64url
from cmaas.errors import InputRejected
from cmaas.keydirectory import DeviceLimits, KeyDirectory
from cmaas.keystore import DeviceKeys, SqliteKeystore

ALICE = "alice@cmaas.test"


def keyring(opks: int = 5, jid: str = ALICE) -> DeviceKeyring:
    return DeviceKeyring.generate(jid, now_ms=1_700_000_000_000, one_time_prekeys=opks)


def bundle_text(ring: DeviceKeyring) -> str:
    return ring.bundle().to_bytes().decode()


async def test_publish_then_lookup_hands_out_each_prekey_once(keystore: SqliteKeystore) -> None:
    directory = KeyDirectory(keystore)
    ring = keyring(opks=3)
    await directory.publish(ALICE, bundle_text(ring), "phone")
    looked_up = await asyncio.gather(*(directory.lookup(ALICE) for _ in range(5)))
    handed = [b[0].one_time_prekeys[0].key_id for b in looked_up if b[0].one_time_prekeys]
    assert sorted(handed) == sorted(ring.one_time_prekeys)
    assert sum(not b[0].one_time_prekeys for b in looked_up) == 2  # signed prekey fallback
    for bundles in looked_up:
        DeviceBundle.from_json(bundles[0].to_json(), expected_jid=ALICE).verify()


@pytest.mark.parametrize(
    ("problem", "mutate"),
    [
        ("for another account", lambda b: {**b, "jid": "bob@cmaas.test"}),
        ("bad signature", lambda b: {**b, "identity_key": b64url(b"\x04" + bytes(64))}),
        ("not JSON", lambda b: "{"),
        ("unknown field", lambda b: {**b, "owner": ALICE}),
    ],
)
async def test_bad_bundles_are_refused_under_the_bundle_field(
    keystore: SqliteKeystore, problem: str, mutate: object
) -> None:
    import json

    original = keyring().bundle().to_json()
    changed = mutate(original)  # type: ignore[operator]
    text = changed if isinstance(changed, str) else json.dumps(changed)
    with pytest.raises(InputRejected) as refused:
        await KeyDirectory(keystore).publish(ALICE, text)
    assert set(refused.value.problems) == {"bundle"}, problem
    assert await keystore.devices.list(ALICE) == []


async def test_store_refusals_become_input_errors(keystore: SqliteKeystore) -> None:
    directory = KeyDirectory(keystore, limits=DeviceLimits(max_devices=1, max_prekeys=5))
    ring = keyring(opks=5)
    await directory.publish(ALICE, bundle_text(ring))
    ring.mark_published(set(ring.one_time_prekeys))
    with pytest.raises(InputRejected, match="TooManyDevices"):
        await directory.publish(ALICE, bundle_text(keyring(opks=0)))
    ring.add_one_time_prekeys(1)
    with pytest.raises(InputRejected, match="PrekeyPoolFull"):
        await directory.publish(ALICE, ring.bundle(unpublished_only=True).to_bytes().decode())
    await directory.revoke(ALICE, ring.device_id)
    with pytest.raises(InputRejected, match="DeviceRevoked"):
        await directory.publish(ALICE, bundle_text(ring))


async def test_label_is_bounded(keystore: SqliteKeystore) -> None:
    with pytest.raises(InputRejected) as refused:
        await KeyDirectory(keystore).publish(ALICE, bundle_text(keyring()), "x" * 65)
    assert set(refused.value.problems) == {"label"}


async def test_running_low_notifies_once(keystore: SqliteKeystore) -> None:
    told: list[tuple[int, int]] = []

    async def notify(device: DeviceKeys, limits: DeviceLimits) -> None:
        told.append((device.device_id, device.prekeys_left))

    directory = KeyDirectory(keystore, notify, DeviceLimits(low_water=3))
    ring = keyring(opks=5)
    await directory.publish(ALICE, bundle_text(ring))
    for _ in range(5):
        await directory.lookup(ALICE)
    assert told == [(ring.device_id, 2)]
