"""The client service's legacy-OMEMO device: real state files in tmp_path, several devices
talking through an in-memory relay that stands in for the gateway's PEP relay."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from cmaas.clientservice.api import ApiError
from cmaas.clientservice.client import KeyChange
from cmaas.clientservice.errors import DeviceKeyChanged, GatewayUnavailable
from cmaas.clientservice.omemo import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
    NewDevice,
    OmemoKeyChanged,
    OmemoMalformed,
    OmemoSender,
    OmemoStateError,
    OmemoTransportError,
)
from cmaas.clientservice.omemo.directory import GatewayDirectory
from cmaas.clientservice.omemo.memory import MemoryDirectory
from cmaas.clientservice.omemo.sender import LEGACY_STATE_FILE, PINS_FILE, STATE_FILE
from cmaas.clientservice.omemo.storage import SqliteStorage
from cmaas.clientservice.omemo.text import omemo_body
from cmaas.envelope import OtpContent, TextContent, fingerprint
from cmaas.wire import (
    KeyTransportRequest,
    OmemoBundle,
    OmemoDevices,
    OmemoUnreadable,
    RecipientBundle,
    RecipientOmemo,
    UnreadableReason,
    WireError,
)
from cmaas.xmpp.omemo import bundle_element, bundle_from_xml, device_ids
from tests.omemo_bundles import bundle_json
from tests.omemo_elements import AXOLOTL

from .envelope_fixtures import FILE

APP = "app@cmaas.example"
BOB = "bob@example.org"
MALLORY = "mallory@example.org"


@pytest.fixture
def relay() -> MemoryDirectory:
    return MemoryDirectory()


@asynccontextmanager
async def device(
    relay: MemoryDirectory,
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


async def test_first_message_and_follow_ups_decrypt(relay: MemoryDirectory, tmp_path: Path) -> None:
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


async def test_a_second_instance_is_a_distinct_device(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
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


async def test_state_survives_a_restart(relay: MemoryDirectory, tmp_path: Path) -> None:
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


async def test_a_state_kept_as_json_by_earlier_versions_is_imported_once(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
    async with device(relay, tmp_path / "bob", BOB) as bob:
        async with device(relay, tmp_path / "app", APP) as app:
            app_id, app_key = await app.own_device()
            await bob.decrypt(APP, (await app.encrypt(BOB, b"before")).xml)
        with sqlite3.connect(tmp_path / "app" / STATE_FILE) as db:
            values = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM omemo_state")}
        moved = tmp_path / "moved"
        moved.mkdir(mode=0o700)
        legacy = moved / LEGACY_STATE_FILE
        legacy.write_text(json.dumps(values))
        legacy.chmod(0o600)
        (moved / PINS_FILE).write_bytes((tmp_path / "app" / PINS_FILE).read_bytes())
        (moved / PINS_FILE).chmod(0o600)
        async with device(relay, moved, APP) as imported:
            assert await imported.own_device() == (app_id, app_key)
            after = await imported.encrypt(BOB, b"after the import")
            assert (await bob.decrypt(APP, after.xml)).plaintext == b"after the import"
        # One copy of the keys: the JSON file is gone once imported.
        assert not legacy.exists()


async def test_an_operation_commits_once_even_when_it_raises(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "state.sqlite3")

    async def failing() -> None:
        async with storage.operation():
            await storage.store("/a", 1)
            await storage.store("/b", [2])
            assert (await storage.load_primitive("/a", int)).from_just() == 1
            raise RuntimeError("python-omemo failed after writing")

    with pytest.raises(RuntimeError):
        await failing()
    reopened = SqliteStorage(tmp_path / "state.sqlite3")
    assert (await reopened.load_primitive("/a", int)).from_just() == 1
    assert (await reopened.load_list("/b", int)).from_just() == [2]
    async with reopened.operation():
        await reopened.delete("/a")
        with pytest.raises(OmemoStateError, match="do not nest"):
            async with reopened.operation():
                pass
    assert (await reopened.load_primitive("/a", int)).is_nothing
    storage.close()
    reopened.close()


async def test_a_changed_identity_key_is_refused_and_reported(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
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


async def test_a_new_device_of_a_known_recipient_is_reported(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
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


async def test_state_files_are_private(relay: MemoryDirectory, tmp_path: Path) -> None:
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


async def test_network_xml_with_a_doctype_is_refused(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
    async with (
        device(relay, tmp_path / "app", APP) as app,
        device(relay, tmp_path / "bob", BOB) as bob,
    ):
        sealed = await app.encrypt(BOB, b"hello")
        with pytest.raises(OmemoMalformed):
            await bob.decrypt(APP, '<!DOCTYPE x [<!ENTITY a "b">]>' + sealed.xml)
        assert (await bob.decrypt(APP, sealed.xml)).plaintext == b"hello"


async def test_plaintexts_stay_out_of_the_logs(
    relay: MemoryDirectory, tmp_path: Path, caplog: pytest.LogCaptureFixture
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


class FailingKeyTransports(MemoryDirectory):
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


# The device on one state directory at a time


async def test_a_second_process_on_the_same_state_is_refused_until_the_first_closes(
    relay: MemoryDirectory, tmp_path: Path
) -> None:
    first = OmemoSender(tmp_path / "app", APP, relay)
    await first.start()
    try:
        second = OmemoSender(tmp_path / "app", APP, relay)
        with pytest.raises(OmemoStateError, match="another process uses the OMEMO device"):
            await second.start()
        first_id, _ = await first.own_device()
    finally:
        await first.close()
    async with device(relay, tmp_path / "app", APP) as again:
        assert (await again.own_device())[0] == first_id


# The relay through the gateway


class GatewayOmemoApi:
    """The gateway's OMEMO endpoints in memory, as the client's transport reaches them:
    the app's devices (listed from the bundles published) and the key transports sent;
    ``failure`` stands for a gateway that refuses or cannot be reached."""

    def __init__(self) -> None:
        self.devices: dict[int, OmemoBundle] = {}
        self.published: list[int] = []
        self.key_transports: list[KeyTransportRequest] = []
        self.failure: Exception | None = None

    def _answer(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def omemo_devices(self) -> OmemoDevices:
        self._answer()
        return OmemoDevices(tuple(self.devices.values()))

    async def publish_omemo_device(self, bundle: OmemoBundle) -> None:
        self._answer()
        self.devices[bundle.device_id] = bundle
        self.published.append(bundle.device_id)

    async def retire_omemo_device(self, device_id: int) -> None:
        self._answer()
        if self.devices.pop(device_id, None) is None:
            raise ApiError(404, "not_found", f"no OMEMO device {device_id}", None)

    async def send_key_transport(self, request: KeyTransportRequest) -> None:
        self._answer()
        self.key_transports.append(request)


def bundle_xml(bundle: OmemoBundle) -> str:
    return ET.tostring(bundle_element(bundle).xml, encoding="unicode")


async def test_the_apps_own_devices_come_from_the_gateway() -> None:
    api = GatewayOmemoApi()
    mine = OmemoBundle.from_json(bundle_json(), device_id=5)
    api.devices = {5: mine, 8: OmemoBundle.from_json(bundle_json(), device_id=8)}
    directory = GatewayDirectory(api, APP)
    listed = await directory.fetch_device_list(APP)
    assert listed is not None and listed.jid == APP
    assert device_ids(listed.xml) == [5, 8]
    found = await directory.fetch_bundle(APP, 5)
    assert found is not None and bundle_from_xml(5, found.xml) == mine
    assert await directory.fetch_bundle(APP, 6) is None


async def test_recipients_items_are_what_the_key_lookup_offered() -> None:
    directory = GatewayDirectory(GatewayOmemoApi(), APP)
    assert await directory.fetch_device_list(BOB) is None  # never looked up
    listed = f'<list xmlns="{AXOLOTL}"><device id="3"/></list>'
    directory.offer(BOB, RecipientOmemo(listed, (RecipientBundle(3, "<bundle/>"),)))
    assert await directory.fetch_device_list(BOB) == DeviceListItem(BOB, listed)
    assert await directory.fetch_bundle(BOB, 3) == BundleItem(BOB, 3, "<bundle/>")
    assert await directory.fetch_bundle(BOB, 4) is None
    refused = OmemoUnreadable(UnreadableReason.FORBIDDEN, "bob must accept the app first")
    directory.offer(MALLORY, RecipientOmemo(unreadable=refused))
    with pytest.raises(OmemoTransportError, match="bob must accept the app first"):
        await directory.fetch_device_list(MALLORY)


async def test_publishing_sends_the_bundle_the_xml_holds() -> None:
    api = GatewayOmemoApi()
    directory = GatewayDirectory(api, APP)
    bundle = OmemoBundle.from_json(bundle_json(), device_id=5)
    await directory.publish_bundle(BundleItem(APP, 5, bundle_xml(bundle)))
    assert api.devices == {5: bundle}
    with pytest.raises(OmemoTransportError, match="this device's own bundle"):
        await directory.publish_bundle(BundleItem(APP, 6, f"<bundle xmlns='{AXOLOTL}'/>"))
    await directory.retract_bundle(APP, 5)
    assert api.devices == {}
    transport = KeyTransport(BOB, "<encrypted/>")
    await directory.send_key_transport(transport)
    assert api.key_transports == [KeyTransportRequest(BOB, "<encrypted/>")]


@pytest.mark.parametrize(
    "failure",
    [
        ApiError(503, "im_server_unavailable", "down", 5),
        GatewayUnavailable("unreachable"),
        WireError("off the contract"),
        aiohttp.ClientConnectionError("refused"),
        TimeoutError(),
    ],
)
async def test_a_gateway_failure_is_a_transport_error(failure: Exception) -> None:
    api = GatewayOmemoApi()
    api.failure = failure
    directory = GatewayDirectory(api, APP)
    bundle = OmemoBundle.from_json(bundle_json(), device_id=5)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: directory.fetch_device_list(APP),
        lambda: directory.fetch_bundle(APP, 5),
        lambda: directory.publish_bundle(BundleItem(APP, 5, bundle_xml(bundle))),
        lambda: directory.retract_bundle(APP, 5),
        lambda: directory.send_key_transport(KeyTransport(BOB, "<encrypted/>")),
    ]
    for call in calls:
        with pytest.raises(OmemoTransportError, match=type(failure).__name__):
            await call()


async def test_the_device_publishes_itself_again_when_the_gateway_lacks_it(
    tmp_path: Path,
) -> None:
    api = GatewayOmemoApi()
    async with OmemoSender(tmp_path / "app", APP, GatewayDirectory(api, APP)) as sender:
        device_id, _ = await sender.own_device()
        assert list(api.devices) == [device_id]
        published = len(api.published)
        await sender.ensure_published()  # listed: nothing to do
        assert len(api.published) == published
        api.devices.clear()  # an operator retired it
        await sender.ensure_published()
        assert list(api.devices) == [device_id]
        assert len(api.published) == published + 1


# The body an OMEMO client shows

CREATED_MS = 1_800_000_000_000  # 2027-01-15 08:00 UTC


def test_an_otp_states_its_code_purpose_and_validity_in_utc() -> None:
    body = omemo_body(OtpContent("482913", "login"), CREATED_MS, CREATED_MS + 600_000)
    assert body == (
        "Your login code: 482913\n"
        "It is valid for 10 minutes, until 08:10 UTC. Never share it with anyone."
    )
    one = omemo_body(OtpContent("482913", "login"), CREATED_MS, CREATED_MS + 60_000)
    assert "valid for 1 minute, until 08:01 UTC" in one
    days = omemo_body(OtpContent("AB12", "signup"), CREATED_MS, CREATED_MS + 2 * 86_400_000)
    assert "Your signup code: AB12" in days and "valid until 2027-01-17 08:00 UTC" in days


def test_a_text_passes_through_and_a_file_is_not_for_omemo() -> None:
    assert omemo_body(TextContent("Parcel at 10:00"), CREATED_MS, CREATED_MS + 1) == (
        "Parcel at 10:00"
    )
    with pytest.raises(ValueError, match="CMaaS devices only"):
        omemo_body(FILE, CREATED_MS, CREATED_MS + 600_000)
