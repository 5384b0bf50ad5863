"""Apps' own OMEMO devices in the keystore (SQLite and PostgreSQL), and their bundles on
the wire."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from cmaas.keystore import (
    DeviceNotFound,
    IdentityKeyMismatch,
    MasterKeyring,
    NewApp,
    PrekeyPoolFull,
    TooManyDevices,
    issue_credentials,
)
from cmaas.wire import OmemoBundle, OmemoDevices, WireError
from cmaas.xmpp.omemo import bundle_element, bundle_from_xml
from tests.omemo_bundles import bundle_json, public_key

from .conftest import AnyKeystore, Database, FakeClock


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


async def add_app(keystore: AnyKeystore, app_id: str) -> None:
    await keystore.create_app(
        NewApp(app_id=app_id, display_name=app_id, plan="default"),
        issue_credentials(f"cid-{app_id}"),
    )


def bundle(device_id: int, prekeys: int = 2, **changes: object) -> OmemoBundle:
    return OmemoBundle.from_json({**bundle_json(prekeys), **changes}, device_id=device_id)


async def test_publish_list_get_and_retire(keystore: AnyKeystore, clock: FakeClock) -> None:
    await add_app(keystore, "otp")
    await add_app(keystore, "other")
    first, second = bundle(9), bundle(3)
    assert await keystore.omemo.publish("otp", first, max_devices=4, max_prekeys=10)
    clock.now += 1
    assert await keystore.omemo.publish("otp", second, max_devices=4, max_prekeys=10)
    assert await keystore.omemo.device_ids("otp") == [9, 3]
    assert await keystore.omemo.bundles("otp") == [first, second]
    assert await keystore.omemo.bundle("otp", 3) == second
    assert await keystore.omemo.device_ids("other") == []
    with pytest.raises(DeviceNotFound):
        await keystore.omemo.bundle("other", 3)
    await keystore.omemo.retire("otp", 9)
    assert await keystore.omemo.device_ids("otp") == [3]
    with pytest.raises(DeviceNotFound):
        await keystore.omemo.retire("otp", 9)


async def test_republishing_replaces_the_bundle_whole(keystore: AnyKeystore) -> None:
    await add_app(keystore, "otp")
    old = bundle(5, prekeys=3)
    await keystore.omemo.publish("otp", old, max_devices=1, max_prekeys=10)
    new = bundle(5, prekeys=1, identity_key=old.to_json()["identity_key"], signed_prekey_id=2)
    assert not await keystore.omemo.publish("otp", new, max_devices=1, max_prekeys=10)
    assert await keystore.omemo.bundles("otp") == [new]


async def test_limits_and_identity_are_enforced(keystore: AnyKeystore) -> None:
    await add_app(keystore, "otp")
    await keystore.omemo.publish("otp", bundle(1), max_devices=2, max_prekeys=2)
    await keystore.omemo.publish("otp", bundle(2), max_devices=2, max_prekeys=2)
    with pytest.raises(TooManyDevices, match="has 2 OMEMO devices; the limit is 2"):
        await keystore.omemo.publish("otp", bundle(3), max_devices=2, max_prekeys=2)
    with pytest.raises(PrekeyPoolFull, match="3 prekeys; the limit is 2"):
        await keystore.omemo.publish("otp", bundle(1, prekeys=3), max_devices=2, max_prekeys=2)
    with pytest.raises(IdentityKeyMismatch):
        await keystore.omemo.publish("otp", bundle(1), max_devices=2, max_prekeys=2)
    # A refresh of a known device is not a new one: the limit does not stop it.
    kept = (await keystore.omemo.bundles("otp"))[1]
    again = bundle(2, identity_key=kept.to_json()["identity_key"])
    assert not await keystore.omemo.publish("otp", again, max_devices=2, max_prekeys=2)


async def test_devices_outlive_a_restart_and_go_with_their_app(
    database: Database, master_key: bytes
) -> None:
    first = await database.open(MasterKeyring(master_key))
    await add_app(first, "otp")
    published = bundle(77)
    await first.omemo.publish("otp", published, max_devices=1, max_prekeys=10)
    await first.close()
    reopened = await database.open(MasterKeyring(master_key))
    try:
        assert await reopened.omemo.bundles("otp") == [published]
        assert database.execute("SELECT count(*) FROM app_omemo_prekeys") == [(2,)]
        database.execute("DELETE FROM apps WHERE app_id = 'otp'")
        assert await reopened.omemo.bundles("otp") == []
        assert database.execute("SELECT count(*) FROM app_omemo_prekeys") == [(0,)]
    finally:
        await reopened.close()


def test_wire_round_trip() -> None:
    value = bundle(2147483647, prekeys=5)
    assert OmemoBundle.from_json(value.to_json()) == value
    assert OmemoDevices.from_json(OmemoDevices((value,)).to_json()) == OmemoDevices((value,))


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"identity_key": "not base64!"}, "bundle.identity_key is not base64"),
        ({"identity_key": base64.b64encode(b"\x05" * 32).decode()}, "must be 33 bytes"),
        ({"identity_key": base64.b64encode(b"\x06" * 33).decode()}, "type byte 0x05"),
        ({"signed_prekey": "A" * 5000}, "bundle.signed_prekey is too long"),
        ({"signed_prekey_signature": public_key()}, "must be 64 bytes"),
        ({"signed_prekey_id": 0}, "bundle.signed_prekey_id must be between 1"),
        ({"signed_prekey_id": 2**31}, "bundle.signed_prekey_id must be between 1"),
        ({"signed_prekey_id": True}, "must be a whole number"),
        ({"prekeys": []}, "must hold 1 to 1000"),
        ({"prekeys": [{"id": 1, "key": public_key()}] * 2}, "gives a prekey id twice"),
        ({"prekeys": [{"id": -1, "key": public_key()}]}, r"prekeys\[0\].id must be between"),
        ({"prekeys": [{"id": 1, "key": public_key(), "x": 1}]}, r"prekeys\[0\] must be"),
        ({"extra": 1}, "unknown fields: extra"),
        ({"device_id": 8}, "is not the path's 7"),
    ],
)
def test_hostile_bundles_are_refused(changes: dict[str, object], refusal: str) -> None:
    with pytest.raises(WireError, match=refusal):
        OmemoBundle.from_json({**bundle_json(2), **changes}, device_id=7)
    # The same body without the change is accepted: the refusal is the change's.
    assert OmemoBundle.from_json(bundle_json(2), device_id=7).device_id == 7


def test_too_many_prekeys_and_ids_out_of_range() -> None:
    with pytest.raises(WireError, match="must hold 1 to 1000"):
        OmemoBundle.from_json(bundle_json(1001), device_id=1)
    for device_id in (0, 2**31):
        with pytest.raises(WireError, match=r"bundle\.device_id must be between 1"):
            OmemoBundle.from_json(bundle_json(1), device_id=device_id)
    with pytest.raises(WireError, match=r"bundle\.device_id must be a whole number"):
        OmemoBundle.from_json(bundle_json(1))


async def test_inbound_elements_are_bounded_per_app_read_in_order_and_purged(
    keystore: AnyKeystore,
) -> None:
    await add_app(keystore, "otp")
    await add_app(keystore, "other")
    store = keystore.omemo
    seqs: list[int] = []
    for n in range(3):
        seq = await store.add_inbound(
            "otp", "bob@x.test", f"<e{n}/>".encode(), 1000 + n, max_items=3, max_per_sender=3
        )
        assert seq is not None
        seqs.append(seq)
    assert seqs == sorted(seqs)
    assert (
        await store.add_inbound("otp", "bob@x.test", b"<e3/>", 1003, max_items=3, max_per_sender=3)
        is None
    )
    # The bound is the app's own: another app still takes elements.
    other = await store.add_inbound(
        "other", "eve@x.test", b"<o/>", 1000, max_items=3, max_per_sender=3
    )
    assert other is not None

    every = await store.inbound_after("otp", 0, 10)
    assert [(i.seq, i.sender, i.xml, i.received_ms) for i in every] == [
        (seqs[0], "bob@x.test", "<e0/>", 1000),
        (seqs[1], "bob@x.test", "<e1/>", 1001),
        (seqs[2], "bob@x.test", "<e2/>", 1002),
    ]
    assert [i.xml for i in await store.inbound_after("otp", seqs[0], 1)] == ["<e1/>"]
    assert await store.inbound_after("otp", seqs[2], 10) == []

    assert await store.purge_inbound(1002) == 3  # e0, e1, and the other app's
    assert [i.xml for i in await store.inbound_after("otp", 0, 10)] == ["<e2/>"]
    assert await store.inbound_after("other", 0, 10) == []
    # Room again once purged.
    assert (
        await store.add_inbound("otp", "bob@x.test", b"<e4/>", 1004, max_items=3, max_per_sender=3)
        is not None
    )


async def test_one_sender_takes_at_most_its_share_of_the_apps_places(
    keystore: AnyKeystore,
) -> None:
    await add_app(keystore, "otp")
    store = keystore.omemo
    bounds = {"max_items": 3, "max_per_sender": 2}
    assert await store.add_inbound("otp", "mallory@x.test", b"<m0/>", 1000, **bounds)
    assert await store.add_inbound("otp", "mallory@x.test", b"<m1/>", 1001, **bounds)
    assert await store.add_inbound("otp", "mallory@x.test", b"<m2/>", 1002, **bounds) is None
    # Others still get through, up to the app's own bound.
    assert await store.add_inbound("otp", "bob@x.test", b"<b0/>", 1003, **bounds)
    assert await store.add_inbound("otp", "carol@x.test", b"<c0/>", 1004, **bounds) is None
    assert [i.sender for i in await store.inbound_after("otp", 0, 10)] == [
        "mallory@x.test",
        "mallory@x.test",
        "bob@x.test",
    ]


def _bundle_xml(value: OmemoBundle) -> str:
    return ET.tostring(bundle_element(value).xml, encoding="unicode")


def test_a_bundle_element_reads_back_as_the_bundle() -> None:
    for prekeys in (1, 3):
        published = bundle(11, prekeys=prekeys)
        assert bundle_from_xml(11, _bundle_xml(published)) == published


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (lambda xml: xml.replace("bundle", "list"), "not a legacy OMEMO <bundle/>"),
        (
            lambda xml: re.sub("<(ns0:)?identityKey>[^<]*</(ns0:)?identityKey>", "", xml),
            "has no identityKey",
        ),
        (lambda xml: re.sub('signedPreKeyId="1"', 'signedPreKeyId="x"', xml), "signedPreKeyId"),
        (lambda xml: re.sub('preKeyId="2"', 'preKeyId="-2"', xml), "preKeyId"),
        (lambda xml: '<!DOCTYPE b [<!ENTITY a "b">]>' + xml, "DOCTYPE"),
        (lambda xml: xml[:-3], "not well-formed"),
    ],
)
def test_a_malformed_bundle_element_is_refused(edit: Callable[[str], str], refusal: str) -> None:
    with pytest.raises(WireError, match=refusal):
        bundle_from_xml(11, edit(_bundle_xml(bundle(11, prekeys=2))))
