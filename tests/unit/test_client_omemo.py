"""The client service's legacy-OMEMO device: real state files in tmp_path, several devices
talking through an in-memory relay that stands in for the gateway's PEP relay."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cmaas.clientservice.client import KeyChange
from cmaas.clientservice.errors import DeviceKeyChanged
from cmaas.clientservice.omemo import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
    NewDevice,
    OmemoKeyChanged,
    OmemoMalformed,
    OmemoSender,
    OmemoTransportError,
)
from cmaas.clientservice.omemo.sender import PINS_FILE, STATE_FILE
from cmaas.envelope import fingerprint

APP = "app@cmaas.example"
BOB = "bob@example.org"
MALLORY = "mallory@example.org"


class Relay:
    """What the gateway will relay: PEP device lists and bundles, and key transports."""

    def __init__(self) -> None:
        self.device_lists: dict[str, str] = {}
        self.bundles: dict[tuple[str, int], str] = {}
        self.sent: list[KeyTransport] = []

    async def fetch_device_list(self, jid: str) -> DeviceListItem | None:
        xml = self.device_lists.get(jid)
        return None if xml is None else DeviceListItem(jid, xml)

    async def fetch_bundle(self, jid: str, device_id: int) -> BundleItem | None:
        xml = self.bundles.get((jid, device_id))
        return None if xml is None else BundleItem(jid, device_id, xml)

    async def publish_device_list(self, item: DeviceListItem) -> None:
        self.device_lists[item.jid] = item.xml

    async def publish_bundle(self, item: BundleItem) -> None:
        self.bundles[(item.jid, item.device_id)] = item.xml

    async def retract_bundle(self, jid: str, device_id: int) -> None:
        self.bundles.pop((jid, device_id), None)

    async def send_key_transport(self, message: KeyTransport) -> None:
        self.sent.append(message)

    def take(self, to: str) -> list[str]:
        mine = [m.xml for m in self.sent if m.to == to]
        self.sent = [m for m in self.sent if m.to != to]
        return mine


@pytest.fixture
def relay() -> Relay:
    return Relay()


@asynccontextmanager
async def device(
    relay: Relay,
    state_dir: Path,
    jid: str,
    *,
    key_changes: list[KeyChange] | None = None,
    new_devices: list[NewDevice] | None = None,
) -> AsyncIterator[OmemoSender]:
    sender = OmemoSender(
        state_dir,
        jid,
        relay,
        on_key_change=None if key_changes is None else key_changes.append,
        on_new_device=None if new_devices is None else new_devices.append,
    )
    async with sender:
        yield sender


async def test_first_message_and_follow_ups_decrypt(relay: Relay, tmp_path: Path) -> None:
    async with (
        device(relay, tmp_path / "app", APP) as app,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        bob_id, _ = await bob.own_device()
        first = await app.encrypt(BOB, b"your code is 123456")
        assert first.device_ids == {bob_id}
        assert 'prekey="true"' in first.xml
        opened = await bob.decrypt(APP, first.xml)
        assert opened.plaintext == b"your code is 123456"
        assert (opened.jid, opened.device_id) == (APP, (await app.own_device())[0])

        # Bob's device completes the handshake with a key transport; it advances the app's ratchet.
        (ack,) = relay.take(APP)
        assert (await app.decrypt(BOB, ack)).plaintext is None

        for n in range(3):
            follow_up = await app.encrypt(BOB, f"follow-up {n}".encode())
            assert "prekey" not in follow_up.xml
            assert (await bob.decrypt(APP, follow_up.xml)).plaintext == f"follow-up {n}".encode()


async def test_a_second_instance_is_a_distinct_device(relay: Relay, tmp_path: Path) -> None:
    async with (
        device(relay, tmp_path / "app-1", APP) as first,
        device(relay, tmp_path / "app-2", APP) as second,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        first_id, first_key = await first.own_device()
        second_id, second_key = await second.own_device()
        assert first_id != second_id
        assert first_key != second_key
        listed = relay.device_lists[APP]
        assert f'id="{first_id}"' in listed
        assert f'id="{second_id}"' in listed

        message = await second.encrypt(BOB, b"from the second instance")
        opened = await bob.decrypt(APP, message.xml)
        assert (opened.plaintext, opened.device_id) == (b"from the second instance", second_id)
    assert (tmp_path / "app-1" / STATE_FILE).read_bytes() != (
        tmp_path / "app-2" / STATE_FILE
    ).read_bytes()


async def test_state_survives_a_restart(relay: Relay, tmp_path: Path) -> None:
    async with device(relay, tmp_path / "bob", BOB) as bob:
        async with device(relay, tmp_path / "app", APP) as app:
            app_id, app_key = await app.own_device()
            await bob.decrypt(APP, (await app.encrypt(BOB, b"before")).xml)
            (ack,) = relay.take(APP)
            await app.decrypt(BOB, ack)
        async with device(relay, tmp_path / "app", APP) as restarted:
            assert await restarted.own_device() == (app_id, app_key)
            after = await restarted.encrypt(BOB, b"after the restart")
            # The same ratchet goes on: no new key exchange after the restart.
            assert "prekey" not in after.xml
            assert (await bob.decrypt(APP, after.xml)).plaintext == b"after the restart"


async def test_a_changed_identity_key_is_refused_and_reported(relay: Relay, tmp_path: Path) -> None:
    key_changes: list[KeyChange] = []
    async with device(relay, tmp_path / "bob", BOB) as bob:
        bob_id, _ = await bob.own_device()
        async with device(relay, tmp_path / "app", APP, key_changes=key_changes) as app:
            await app.encrypt(BOB, b"pins bob's key")
        genuine = relay.bundles[(BOB, bob_id)]
        async with device(relay, tmp_path / "mallory", MALLORY) as mallory:
            mallory_id, _ = await mallory.own_device()
        relay.bundles[(BOB, bob_id)] = relay.bundles[(MALLORY, mallory_id)]
        # The app's OMEMO state is lost, its pins kept: it must fetch bob's bundle again.
        (tmp_path / "app" / STATE_FILE).unlink()
        async with device(relay, tmp_path / "app", APP, key_changes=key_changes) as app:
            with pytest.raises(OmemoKeyChanged) as refused:
                await app.encrypt(BOB, b"must not reach mallory")
            assert isinstance(refused.value, DeviceKeyChanged)
            assert refused.value.device_ids == [bob_id]
            assert key_changes == [KeyChange(BOB, bob_id)]

            # The same path seals again once bob's genuine bundle is back.
            relay.bundles[(BOB, bob_id)] = genuine
            sealed = await app.encrypt(BOB, b"to bob again")
            assert sealed.device_ids == {bob_id}
            assert (await bob.decrypt(APP, sealed.xml)).plaintext == b"to bob again"


async def test_a_new_device_of_a_known_recipient_is_reported(relay: Relay, tmp_path: Path) -> None:
    new_devices: list[NewDevice] = []
    async with (
        device(relay, tmp_path / "app", APP, new_devices=new_devices) as app,
        device(relay, tmp_path / "bob-phone", BOB) as phone,
    ):
        phone_id, _ = await phone.own_device()
        assert (await app.encrypt(BOB, b"first contact")).device_ids == {phone_id}
        assert new_devices == []  # a first-seen recipient is pinned, not reported
        async with device(relay, tmp_path / "bob-laptop", BOB) as laptop:
            laptop_id, laptop_key = await laptop.own_device()
            sealed = await app.encrypt(BOB, b"to both")
            assert sealed.device_ids == {phone_id, laptop_id}
            assert new_devices == [NewDevice(BOB, laptop_id, fingerprint(laptop_key))]
            assert (await laptop.decrypt(APP, sealed.xml)).plaintext == b"to both"


async def test_state_files_are_private(relay: Relay, tmp_path: Path) -> None:
    async with (
        device(relay, tmp_path / "state", APP) as app,
        device(relay, tmp_path / "bob", BOB),
    ):
        await app.encrypt(BOB, b"pins and a session")
    state_dir = tmp_path / "state"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in (STATE_FILE, PINS_FILE):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
    assert [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")] == []


async def test_network_xml_with_a_doctype_is_refused(relay: Relay, tmp_path: Path) -> None:
    async with (
        device(relay, tmp_path / "app", APP) as app,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        sealed = await app.encrypt(BOB, b"hello")
        with pytest.raises(OmemoMalformed):
            await bob.decrypt(APP, '<!DOCTYPE x [<!ENTITY a "b">]>' + sealed.xml)
        assert (await bob.decrypt(APP, sealed.xml)).plaintext == b"hello"


async def test_plaintexts_stay_out_of_the_logs(
    relay: Relay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        device(relay, tmp_path / "app", APP) as app,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        sealed = await app.encrypt(BOB, b"marker-7f3a secret body")
        assert (await bob.decrypt(APP, sealed.xml)).plaintext == b"marker-7f3a secret body"
    # python-omemo did log (its INFO lines are captured), but not its DEBUG lines with plaintexts.
    assert any(r.name.startswith("omemo.core") for r in caplog.records)
    assert "marker-7f3a" not in caplog.text


class FailingKeyTransports(Relay):
    async def send_key_transport(self, message: KeyTransport) -> None:
        raise OmemoTransportError("the gateway is unreachable")


async def test_a_lost_key_transport_does_not_lose_the_message(tmp_path: Path) -> None:
    relay = FailingKeyTransports()
    async with (
        device(relay, tmp_path / "app", APP) as app,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        first = await app.encrypt(BOB, b"first")
        # Bob's device cannot answer the key exchange, yet it reads the message...
        assert (await bob.decrypt(APP, first.xml)).plaintext == b"first"
        # ...and the app's next message, still a prekey message, reads too.
        second = await app.encrypt(BOB, b"second")
        assert 'prekey="true"' in second.xml
        assert (await bob.decrypt(APP, second.xml)).plaintext == b"second"
