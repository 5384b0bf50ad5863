"""Sealed messages end to end on real Prosody and ejabberd: devices publish through
the gateway's commands, a test sender seals with the envelope library and writes
through the gateway's component, the reference device opens the message, and its
receipt and displayed marker come back to the component."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from cmaas.assembly import Gateway
from cmaas.clock import now_ms
from cmaas.delivery.tracker import FeedbackKind
from cmaas.device.client import DeviceClient
from cmaas.device.keyfile import KeyFile
from cmaas.devservers import XmppServer, cmaas_executable
from cmaas.envelope import (
    AppKeyChanged,
    DeviceKeyring,
    Expired,
    ForeignApp,
    OtpContent,
    TextContent,
    WrongDevice,
    fingerprint,
    generate_private_key,
    point_bytes,
    seal,
)
from cmaas.keydirectory import DeviceLimits
from cmaas.xmpp.link import LinkState
from cmaas.xmpp.stanzas import register_stanzas

from .conftest import PASSWORD, connect
from .devices import device_config, new_device
from .direct_sender import DirectSender
from .live_gateway import FeedbackLog, live_gateway

APP = "bank"


@pytest.fixture
async def live(
    xmpp_server: XmppServer, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, FeedbackLog]]:
    async with live_gateway(xmpp_server, tmp_path / "gateway", app_id=APP) as running:
        yield running


async def test_sealed_message_reaches_every_device_and_reports_back(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, feedback = live
    sender = DirectSender(gateway, APP)
    async with AsyncExitStack() as stack:
        phone = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "phone"))
        laptop = await stack.enter_async_context(
            new_device(xmpp_server, tmp_path, "alice", "laptop")
        )
        await phone.publish("phone")
        await laptop.publish("laptop")

        message_id = await sender.send(f"alice@{xmpp_server.domain}", OtpContent("482913", "login"))

        for device in (phone, laptop):
            async with asyncio.timeout(15):
                received = await device.next_message()
            assert received.message_id == message_id
            assert received.content == OtpContent("482913", "login")
            assert received.app_jid == sender.app_jid
            assert received.app_name == "Example Bank"
            assert received.newly_pinned
        delivered = {(await feedback.next(FeedbackKind.DELIVERED)).resource for _ in "ab"}
        assert delivered == {"phone", "laptop"}

        phone.mark_read(message_id)
        displayed = await feedback.next(FeedbackKind.DISPLAYED)
        assert (displayed.message_id, displayed.resource) == (message_id, "phone")
        assert str(displayed.app_jid) == sender.app_jid

        # Each device's one-time prekey was taken once and its private half is gone.
        rows = {row["device_id"]: row for row in await phone.devices()}
        assert phone.keyring is not None and laptop.keyring is not None
        for keyring in (phone.keyring, laptop.keyring):
            assert rows[str(keyring.device_id)]["prekeys_left"] == "19"
            assert len(keyring.one_time_prekeys) == 19


async def test_publishing_for_another_account_is_refused(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog]
) -> None:
    gateway, _ = live
    bob_keys = DeviceKeyring.generate(f"bob@{xmpp_server.domain}", now_ms=now_ms())
    alice = await connect(xmpp_server, "alice")
    try:
        reply = await alice.run(
            xmpp_server.component_domain,
            "urn:cmaas:cmd:device-publish",
            {"bundle": bob_keys.bundle().to_bytes().decode()},
        )
    finally:
        await alice.disconnect()
    assert reply.status == "executing"
    assert any("not alice@" in note for note in reply.error_notes), reply.notes
    for user in ("alice", "bob"):
        assert await gateway.directory.devices(f"{user}@{xmpp_server.domain}") == []


async def test_revoked_device_gets_no_more_messages(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, feedback = live
    sender = DirectSender(gateway, APP)
    async with AsyncExitStack() as stack:
        kept = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "kept"))
        lost = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "lost"))
        await kept.publish()
        await lost.publish()
        assert lost.keyring is not None
        await kept.revoke(lost.keyring.device_id)

        message_id = await sender.send(
            f"alice@{xmpp_server.domain}", TextContent("Your statement is ready")
        )
        async with asyncio.timeout(15):
            received = await kept.next_message()
            refused = await lost.refused.get()
        assert received.message_id == message_id
        assert refused.message_id == message_id
        assert isinstance(refused.error, WrongDevice)
        assert lost._inbox.empty()
        assert (await feedback.next(FeedbackKind.DELIVERED)).resource == "kept"
        statuses = {row["device_id"]: row["status"] for row in await kept.devices()}
        assert statuses[str(lost.keyring.device_id)].startswith("revoked")


async def test_device_refills_one_time_prekeys_when_the_gateway_asks(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, _ = live
    limits = gateway.directory.limits
    assert limits == DeviceLimits()
    owner = f"alice@{xmpp_server.domain}"
    async with new_device(
        xmpp_server, tmp_path, "alice", "phone", one_time_prekeys=limits.low_water + 1
    ) as device:
        await device.publish()
        assert device.keyring is not None
        device_id = device.keyring.device_id
        for _ in range(2):  # the second take leaves the pool below the low-water mark
            await gateway.directory.lookup(owner)
        async with asyncio.timeout(15):
            while (await gateway.keystore.devices.get(owner, device_id)).prekeys_left < 90:
                await asyncio.sleep(0.1)
        record = await gateway.keystore.devices.get(owner, device_id)
        assert record.prekeys_left == limits.max_prekeys
        # The two handed out stay on the device until messages sealed to them arrive.
        assert len(device.keyring.one_time_prekeys) == limits.max_prekeys + 2


async def test_device_shows_duplicates_once_and_refuses_expired_and_changed_keys(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, feedback = live
    sender = DirectSender(gateway, APP)
    async with new_device(xmpp_server, tmp_path, "alice", "phone") as device:
        await device.publish()
        first = await sender.send(
            f"alice@{xmpp_server.domain}", TextContent("first"), auto_delete_s=1
        )
        async with asyncio.timeout(15):
            shown = await device.next_message()
        assert (shown.message_id, shown.newly_pinned) == (first, True)
        assert shown.delete_at_ms is not None
        await feedback.next(FeedbackKind.DELIVERED)

        # The same stanza again: acknowledged again, shown no second time.
        sender.resend(f"alice@{xmpp_server.domain}", first)
        assert (await feedback.next(FeedbackKind.DELIVERED)).message_id == first
        async with asyncio.timeout(5):
            assert await device.deleted.get() == first  # auto-delete after 1 s

        expired = await sender.send(
            f"alice@{xmpp_server.domain}", TextContent("too late"), lifetime_ms=-1
        )
        async with asyncio.timeout(15):
            refusal = await device.refused.get()
        assert (refusal.message_id, type(refusal.error)) == (expired, Expired)

        impostor = DirectSender(gateway, APP)  # same app JID, another key
        forged = await impostor.send(f"alice@{xmpp_server.domain}", TextContent("send your PIN"))
        async with asyncio.timeout(15):
            refusal = await device.refused.get()
        assert (refusal.message_id, type(refusal.error)) == (forged, AppKeyChanged)
        assert device._inbox.empty()

        # The new key is kept as an offer; once the user accepts its fingerprint (checked
        # with the app), the app's messages open again.
        offers = dict(device.pins.offers())
        offered = offers[impostor.app_jid]
        assert offered.fingerprint == fingerprint(point_bytes(impostor.app_key.public_key()))
        device.pins.accept(impostor.app_jid, offered.fingerprint, now_ms())
        after = await impostor.send(f"alice@{xmpp_server.domain}", TextContent("new key"))
        async with asyncio.timeout(15):
            shown = await device.next_message()
        assert (shown.message_id, shown.newly_pinned) == (after, False)


@pytest.fixture
def device_env(xmpp_server: XmppServer, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
        "CMAAS_DEVICE_JID": f"alice@{xmpp_server.domain}",
        "CMAAS_DEVICE_PASSWORD": PASSWORD,
        "CMAAS_DEVICE_GATEWAY": xmpp_server.component_domain,
        "CMAAS_DEVICE_DIR": str(tmp_path / "cli-device"),
        "CMAAS_DEVICE_HOST": xmpp_server.host,
        "CMAAS_DEVICE_PORT": str(xmpp_server.c2s_port),
        "CMAAS_DEVICE_PLAINTEXT": "1",
        "CMAAS_DEVICE_PASSPHRASE": "a long passphrase for the key file",
    }


async def cli(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        cmaas_executable(),
        "--env-file",
        os.devnull,
        "device",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, f"cmaas device {' '.join(args)}: {err.decode()}"
    return out.decode()


async def test_device_cli_receives_and_reads(
    xmpp_server: XmppServer,
    live: tuple[Gateway, FeedbackLog],
    device_env: dict[str, str],
) -> None:
    gateway, feedback = live
    created = await cli(device_env, "init", "--one-time-prekeys", "5")
    assert "identity key fingerprint" in created
    key_file = Path(device_env["CMAAS_DEVICE_DIR"]) / "keyring.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"scrypt" in key_file.read_bytes()  # encrypted under the passphrase
    await cli(device_env, "publish", "--label", "cli")
    assert "cli" in await cli(device_env, "devices")

    listener = await asyncio.create_subprocess_exec(
        cmaas_executable(),
        "--env-file",
        os.devnull,
        "device",
        "listen",
        "--json",
        "--read",
        "--count",
        "1",
        "--timeout",
        "45",
        env=device_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert listener.stderr is not None
    async with asyncio.timeout(30):
        assert b"listening" in await listener.stderr.readline()
    message_id = await DirectSender(gateway, APP).send(
        f"alice@{xmpp_server.domain}", TextContent("Hello from the bank")
    )
    async with asyncio.timeout(45):
        out, err = await listener.communicate()
    assert listener.returncode == 0, err.decode()
    assert len(out.decode().strip().splitlines()) == 1, out.decode()
    shown = json.loads(out.decode().strip())
    assert shown["id"] == message_id
    assert shown["text"] == "Hello from the bank"
    assert shown["app_name"] == "Example Bank"
    assert (await feedback.next(FeedbackKind.DISPLAYED)).message_id == message_id
    # Marking it read again later, from another run of the CLI.
    assert "marked" in await cli(device_env, "read", message_id)
    assert (await feedback.next(FeedbackKind.DISPLAYED)).message_id == message_id


async def test_signed_prekey_rotates_on_schedule_and_older_messages_still_open(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, _ = live
    owner = f"alice@{xmpp_server.domain}"
    config = replace(
        device_config(xmpp_server, tmp_path / "rotating", "alice", "phone"),
        signed_prekey_max_age_s=1,
        maintenance_interval_s=0.2,
    )
    KeyFile(config.keyring_path).create(
        DeviceKeyring.generate(owner, now_ms=now_ms(), one_time_prekeys=0), None
    )
    sender = DirectSender(gateway, APP)
    async with DeviceClient(config) as device:
        await device.publish()
        assert device.keyring is not None
        first_spk = device.keyring.signed_prekey.key_id
        # Sealed to the signed prekey (the pool is empty) before the rotation...
        sealed_early = seal(
            TextContent("sealed before the rotation"),
            message_id="early-1",
            app_jid=sender.app_jid,
            recipient_jid=owner,
            bundles=await gateway.directory.lookup(owner),
            app_key=sender.app_key,
            created_ms=now_ms(),
            expires_ms=now_ms() + 600_000,
        )
        assert sealed_early.keys[0].key_id == first_spk
        async with asyncio.timeout(15):
            while (
                await gateway.keystore.devices.get(owner, device.keyring.device_id)
            ).signed_prekey.key_id == first_spk:
                await asyncio.sleep(0.1)
        assert device.keyring.signed_prekey.key_id != first_spk
        # ...and delivered after it: the retired key still opens it.
        gateway.xmpp.send_sealed(APP, owner, "early-1", sealed_early.to_bytes().decode())
        async with asyncio.timeout(15):
            opened = await device.next_message()
        assert opened.content == TextContent("sealed before the rotation")


async def test_envelope_from_an_account_posing_as_an_app_is_refused(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    """Anyone can open an account and seal validly for alice's published keys; only the
    gateway can send as its apps, so the device refuses the rest (``ForeignApp``)."""
    gateway, _ = live
    owner = f"alice@{xmpp_server.domain}"
    impostor_jid = f"bot@{xmpp_server.domain}"
    async with new_device(xmpp_server, tmp_path, "alice", "phone") as device:
        await device.publish()
        envelope = seal(
            TextContent("Your Bank: confirm your PIN"),
            message_id="pose-1",
            app_jid=impostor_jid,
            recipient_jid=owner,
            bundles=await gateway.directory.lookup(owner),
            app_key=generate_private_key(),
            created_ms=now_ms(),
            expires_ms=now_ms() + 60_000,
        )
        impostor = await connect(xmpp_server, "bot")
        try:
            register_stanzas()
            message = impostor.xmpp.make_message(mto=owner, mtype="chat", mbody="hi")
            message["id"] = "pose-1"
            message["cmaas_envelope"]["json"] = envelope.to_bytes().decode()
            message.send()
            async with asyncio.timeout(15):
                refusal = await device.refused.get()
        finally:
            await impostor.disconnect()
        assert (refusal.message_id, type(refusal.error)) == ("pose-1", ForeignApp)
        assert device.pins.get(impostor_jid) is None
        assert device._inbox.empty()


async def test_device_and_gateway_come_back_after_the_im_server_restarts(
    xmpp_server: XmppServer, live: tuple[Gateway, FeedbackLog], tmp_path: Path
) -> None:
    gateway, feedback = live
    async with new_device(xmpp_server, tmp_path, "alice", "phone") as device:
        await device.publish()
        assert device.link is not None and gateway.link.connects == 1
        await asyncio.to_thread(xmpp_server.restart)
        async with asyncio.timeout(60):
            while device.link.connects < 2 or gateway.link.connects < 2:
                await asyncio.sleep(0.1)
            while device.link.state is not LinkState.CONNECTED:
                await asyncio.sleep(0.1)
        message_id = await DirectSender(gateway, APP).send(
            f"alice@{xmpp_server.domain}", TextContent("after the restart")
        )
        async with asyncio.timeout(15):
            shown = await device.next_message()
        assert shown.message_id == message_id
        assert (await feedback.next(FeedbackKind.DELIVERED)).message_id == message_id
