"""The gateway's key directory: every bundle verified before storage, refusals typed,
lookups hand out each one-time prekey once and notify a device running low once."""

from __future__ import annotations

import asyncio

import pytest

from cmaas.admin import AdminService, RegisterAppRequest
from cmaas.delivery.events import EventHub
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import SubmissionService
from cmaas.envelope import DeviceBundle, DeviceKeyring, b64url
from cmaas.errors import InputRejected
from cmaas.keydirectory import DeviceLimits, KeyDirectory
from cmaas.keystore import DeviceKeys, SqliteKeystore

from .conftest import FakeClock

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


async def test_an_app_takes_only_its_share_of_a_devices_one_time_prekeys(
    keystore: SqliteKeystore, service: AdminService, clock: FakeClock
) -> None:
    """An unrelated app looking a user up again and again must not drain the pool that
    the user's own apps need for forward secrecy."""
    for app_id in ("rogue", "bank"):
        await service.register_app(RegisterAppRequest(app_id, app_id))
    limits = DeviceLimits(prekeys_per_app=3, prekey_window_s=3600)
    directory = KeyDirectory(keystore, limits=limits)
    ring = keyring(opks=20)
    await directory.publish(ALICE, bundle_text(ring))
    drained = [await directory.lookup(ALICE, for_app="rogue") for _ in range(15)]
    assert [len(b[0].one_time_prekeys) for b in drained] == [1] * 3 + [0] * 12
    for bundles in drained:  # past its share, a valid bundle with the signed prekey alone
        DeviceBundle.from_json(bundles[0].to_json(), expected_jid=ALICE).verify()
    assert (await keystore.devices.get(ALICE, ring.device_id)).prekeys_left == 17
    assert (await directory.lookup(ALICE, for_app="bank"))[0].one_time_prekeys
    clock.now += 3600  # a new window
    assert (await directory.lookup(ALICE, for_app="rogue"))[0].one_time_prekeys


async def test_lookups_past_an_apps_share_tell_the_device_nothing(
    keystore: SqliteKeystore, service: AdminService
) -> None:
    """A drained device that refills must not be drained and told again, and again."""
    told: list[int] = []

    async def notify(device: DeviceKeys, limits: DeviceLimits) -> None:
        told.append(device.prekeys_left)

    await service.register_app(RegisterAppRequest("rogue", "Rogue"))
    directory = KeyDirectory(keystore, notify, DeviceLimits(low_water=3, prekeys_per_app=2))
    ring = keyring(opks=4)
    await directory.publish(ALICE, bundle_text(ring))
    for _ in range(10):
        await directory.lookup(ALICE, for_app="rogue")
    assert told == [2]
    ring.mark_published(set(ring.one_time_prekeys))
    ring.add_one_time_prekeys(5)  # the device answers the notice
    await directory.publish(ALICE, ring.bundle(unpublished_only=True).to_bytes().decode())
    for _ in range(10):
        await directory.lookup(ALICE, for_app="rogue")
    assert told == [2]
    assert (await keystore.devices.get(ALICE, ring.device_id)).prekeys_left == 7


async def test_an_old_bundle_cannot_roll_the_signed_prekey_back(
    keystore: SqliteKeystore,
) -> None:
    directory = KeyDirectory(keystore)
    ring = keyring(opks=0)
    old = bundle_text(ring)
    await directory.publish(ALICE, old)
    ring.rotate_signed_prekey(now_ms=1_700_000_000_000 + 8 * 86_400_000)
    await directory.publish(ALICE, bundle_text(ring))
    with pytest.raises(InputRejected, match="SignedPrekeyRollback"):
        await directory.publish(ALICE, old)
    lookup = await directory.lookup(ALICE)
    assert lookup[0].signed_prekey == ring.bundle().signed_prekey


async def test_revoked_devices_are_kept_up_to_the_limit(keystore: SqliteKeystore) -> None:
    directory = KeyDirectory(keystore, limits=DeviceLimits(revoked_kept=2))
    for _ in range(4):
        record = await directory.publish(ALICE, bundle_text(keyring(opks=0)))
        await directory.revoke(ALICE, record.device_id)
    assert len(await directory.devices(ALICE)) == 2


async def test_the_apps_key_lookup_is_counted_against_that_app(
    keystore: SqliteKeystore, service: AdminService
) -> None:
    """``GET /v1/keys`` and the ad-hoc keys-lookup both go through ``Messaging.lookup``."""
    await service.register_app(RegisterAppRequest("rogue", "Rogue"))
    directory = KeyDirectory(keystore, limits=DeviceLimits(prekeys_per_app=2))
    resolver = RecipientResolver(keystore, frozenset({"cmaas.test"}))
    submissions = SubmissionService(
        keystore, resolver, lambda entries: None, dict, component_domain="gateway.cmaas.test"
    )
    messaging = Messaging(
        keystore,
        directory,
        resolver,
        submissions,
        EventHub(keystore),
        component_domain="gateway.cmaas.test",
    )
    await directory.publish(ALICE, bundle_text(keyring(opks=10)))
    app = await keystore.get_app("rogue")
    found = [await messaging.lookup(app, ALICE) for _ in range(5)]
    assert [len(f.devices[0].one_time_prekeys) for f in found] == [1, 1, 0, 0, 0]
