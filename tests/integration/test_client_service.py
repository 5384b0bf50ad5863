"""The client service's library on real Prosody and ejabberd: plaintext in, sealed at the
source, statuses back as callbacks; a changed device key refused; the gateway away for a
while and nothing lost or sent twice."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sqlite3
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from cmaas.clientservice import (
    DeviceKeyChanged,
    GatewayApi,
    GatewayClient,
    KeyChange,
    NewDevice,
    SyncGatewayClient,
    XmppTransport,
)
from cmaas.device.client import DeviceClient
from cmaas.devservers import XmppServer, cmaas_executable
from cmaas.envelope import (
    DeviceKeyring,
    FileContent,
    OtpContent,
    TextContent,
    fingerprint,
    sign_prekey,
)
from cmaas.envelope.blob import TamperedBlob
from cmaas.lifecycle import Priority
from cmaas.wire import Accepted

from .apps import admin, client_config_for
from .conftest import PASSWORD
from .devices import device_config, new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


async def test_plaintext_in_statuses_back(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    await asyncio.to_thread(admin, gateway, "directory-set", "+919876543210", alice)
    config = await client_config_for(gateway, tmp_path / "client")
    async with AsyncExitStack() as stack:
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "p"))
        await device.publish()
        client = await stack.enter_async_context(GatewayClient(config))
        assert client.app_jid == f"shop@{xmpp_server.component_domain}"
        assert (tmp_path / "client" / "app-signing-key.pem").stat().st_mode & 0o777 == 0o600

        seen: list[tuple[str, str]] = []
        stop = asyncio.Event()
        following = asyncio.create_task(
            client.follow(lambda e: seen.append((e.message_id, e.status)), stop)
        )
        sent = await client.send("+919876543210", otp="314159", priority=Priority.HIGH, ttl_s=120)
        async with asyncio.timeout(15):
            received = await device.next_message()
        assert received.content == OtpContent("314159", "login")
        device.mark_read(received.message_id)
        # A second message within the key cache seals to the signed prekey, and opens.
        again = await client.send("+919876543210", text="your parcel is on its way")
        async with asyncio.timeout(15):
            assert (await device.next_message()).content == TextContent("your parcel is on its way")
        async with asyncio.timeout(20):
            while (sent.message_id, "read") not in seen or (
                again.message_id,
                "delivered",
            ) not in seen:
                await asyncio.sleep(0.1)
        stop.set()
        await following
        first = [status for message_id, status in seen if message_id == sent.message_id]
        assert first == ["accepted", "dispatched", "delivered", "read"]

        # The cursor is kept: a new stream starts after the last event handled, so its
        # first event is the next message's rather than a replay of the old ones.
        later = await client.send("+919876543210", text="one more")
        stream = client.statuses(wait_s=5)
        async with asyncio.timeout(15):
            first_event = await anext(stream)
        await stream.aclose()
        assert (first_event.message_id, first_event.status) == (
            later.message_id,
            "accepted",
        )


async def test_a_changed_device_key_is_refused_and_reported(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client", key_cache_s=0)
    reported: list[KeyChange] = []
    async with AsyncExitStack() as stack:
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "c"))
        await device.publish()
        client = await stack.enter_async_context(
            GatewayClient(config, on_key_change=reported.append)
        )
        await client.send(alice, text="first, pins the device's key")
        assert device.keyring is not None
        device_id = device.keyring.device_id

        # A gateway that substitutes keys: same device id, another identity, valid
        # signatures under it.
        impostor = DeviceKeyring.generate(alice, now_ms=int(time.time() * 1000))
        spk = sign_prekey(
            impostor.identity,
            alice,
            device_id,
            "spk",
            7,
            impostor.signed_prekey.private.public_key(),
        )
        with sqlite3.connect(gateway.database) as raw:
            raw.execute(
                "UPDATE devices SET identity_key = ?, spk_id = ?, spk_public = ?,"
                " spk_signature = ? WHERE jid = ? AND device_id = ?",
                (
                    impostor.bundle().identity_key,
                    spk.key_id,
                    spk.public_key,
                    spk.signature,
                    alice,
                    device_id,
                ),
            )
            raw.execute("DELETE FROM one_time_prekeys WHERE jid = ?", (alice,))
        with pytest.raises(DeviceKeyChanged) as refused:
            await client.send(alice, text="must not be sealed to the impostor")
        assert refused.value.device_ids == [device_id]
        assert reported == [KeyChange(alice, device_id)]


async def test_a_new_device_of_a_known_recipient_is_reported(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client", key_cache_s=0)
    new: list[NewDevice] = []
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "n1"))
        await first.publish()
        client = await stack.enter_async_context(GatewayClient(config, on_new_device=new.append))
        await client.send(alice, text="first contact pins the device, silently")
        assert new == []
        second = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "n2"))
        await second.publish()
        sent = await client.send(alice, text="sealed to the new device too, and reported")
        assert second.keyring is not None
        assert [(d.jid, d.device_id) for d in new] == [(alice, second.keyring.device_id)]
        assert new[0].fingerprint == fingerprint(second.keyring.bundle().identity_key)
        async with asyncio.timeout(15):
            assert (await second.next_message()).message_id == sent.message_id


async def test_the_gateway_away_for_a_while_loses_nothing(
    xmpp_server: XmppServer,
    gateway: GatewayProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cmaas.clientservice.client")
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client", retry_for_s=60)
    async with AsyncExitStack() as stack:
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "g"))
        await device.publish()
        client = await stack.enter_async_context(GatewayClient(config))
        await client.send(alice, text="warm the key cache")
        async with asyncio.timeout(15):
            await device.next_message()

        assert gateway.stop() == 0
        sending = asyncio.create_task(client.send(alice, text="sent while the gateway was away"))
        # The send has met the gateway's absence and keeps trying (had it given up,
        # awaiting it below would raise).
        async with asyncio.timeout(30):
            while not any("retrying" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)
        await asyncio.to_thread(gateway.start)
        async with asyncio.timeout(60):
            answer = await sending
        assert answer.status == "accepted"
        async with asyncio.timeout(15):
            received = await device.next_message()
        assert received.message_id == answer.message_id
        # And only once: a second copy would come before a later message on the same path.
        later = await client.send(alice, text="sent after the gateway came back")
        async with asyncio.timeout(15):
            assert (await device.next_message()).message_id == later.message_id


async def test_a_known_registration_costs_no_round_trip_and_a_stale_one_heals(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client", retry_for_s=2)
    async with new_device(xmpp_server, tmp_path, "alice", "r") as device:
        await device.publish()
        async with GatewayClient(config) as first:
            app_jid = first.app_jid
        assert (tmp_path / "client" / "registration.json").stat().st_mode & 0o777 == 0o600

        # A later start asks the gateway nothing: it starts even while the gateway is away
        # (a start that asked would give up after retry_for_s with GatewayUnavailable).
        assert gateway.stop() == 0
        async with GatewayClient(config) as second:
            assert second.app_jid == app_jid
        await asyncio.to_thread(gateway.start)

        # The gateway forgot the key (retired meanwhile): the refused submission registers
        # it again and goes through, once.
        fingerprint = json.loads((tmp_path / "client" / "registration.json").read_bytes())[
            "signing_key"
        ]
        async with GatewayClient(replace(config, retry_for_s=30)) as third:
            assert isinstance(third.api, GatewayApi)
            await third.api.request("DELETE", f"/v1/signing-keys/{fingerprint}")
            sent = await third.send(alice, text="after the key was retired")
        assert sent.status == "accepted"
        async with asyncio.timeout(15):
            assert (await device.next_message()).message_id == sent.message_id


async def test_cli_send_shows_every_status(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
        "CMAAS_CLIENT_URL": config.url,
        "CMAAS_CLIENT_ID": config.credentials.client_id,
        "CMAAS_CLIENT_SECRET": config.credentials.client_secret,
        "CMAAS_CLIENT_HMAC_KEY": base64.b64encode(config.credentials.hmac_key).decode(),
        "CMAAS_CLIENT_DIR": str(config.state_dir),
    }
    async with new_device(xmpp_server, tmp_path, "alice", "cli") as device:
        await device.publish()
        process = await asyncio.create_subprocess_exec(
            cmaas_executable(),
            "--env-file",
            os.devnull,
            "client",
            "send",
            "--to",
            alice,
            "--otp",
            "271828",
            "--ttl",
            "120",
            "--wait",
            "30",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            received = await device.next_message()
        assert received.content == OtpContent("271828", "login")
        device.mark_read(received.message_id)
        async with asyncio.timeout(40):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line["status"] for line in lines] == ["accepted", "dispatched", "delivered", "read"]
    assert {line["message_id"] for line in lines} == {received.message_id}


async def test_multicast_to_three_one_unknown_and_the_blocking_client(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice, bot = f"alice@{xmpp_server.domain}", f"bot@{xmpp_server.domain}"
    await asyncio.to_thread(admin, gateway, "directory-set", "alice@mail.example", alice)
    config = await client_config_for(gateway, tmp_path / "client")
    async with AsyncExitStack() as stack:
        phone = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "m"))
        bots = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "bot", "m"))
        await phone.publish()
        await bots.publish()
        client = await stack.enter_async_context(GatewayClient(config))
        results = await client.send_many(
            ["alice@mail.example", "nobody@mail.example", bot], text="service window tonight"
        )
        assert [r.result.status_code for r in results] == [202, 404, 202]
        assert [r.to for r in results] == ["alice@mail.example", "nobody@mail.example", bot]
        assert "unknown recipient" in results[1].result.detail
        for device in (phone, bots):
            async with asyncio.timeout(15):
                assert (await device.next_message()).content == TextContent(
                    "service window tonight"
                )

        # The same from code that is not async, beside the running client: one state
        # directory is one OMEMO device, held by the client already.
        def blocking() -> Accepted:
            with SyncGatewayClient(replace(config, omemo=False)) as sync:
                return sync.send(alice, otp="999000")

        answer = await asyncio.to_thread(blocking)
        assert answer.status == "accepted"
        async with asyncio.timeout(15):
            assert (await phone.next_message()).content == OtpContent("999000", "login")


async def test_files_travel_encrypted_and_a_tampered_blob_is_refused(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client")
    blob_dir = gateway.database.with_name(gateway.database.name + ".blobs")
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(GatewayClient(config))
        async with new_device(xmpp_server, tmp_path, "alice", "f") as device:
            await device.publish()
            for size in (1024, 10 * 1024 * 1024):
                data = os.urandom(size)
                source = tmp_path / f"statement-{size}.pdf"
                source.write_bytes(data)
                await client.send_file(alice, source, media_type="application/pdf")
                async with asyncio.timeout(60):
                    received = await device.next_message()
                assert isinstance(received.content, FileContent)
                assert (received.content.name, received.content.size) == (source.name, size)
                assert received.saved_file is not None
                assert received.saved_file.read_bytes() == data
                # The gateway holds ciphertext only.
                stored = [p.read_bytes() for p in blob_dir.iterdir()]
                assert all(data[:64] not in blob for blob in stored)

        # Sent while the device is offline; the blob is altered at the gateway meanwhile.
        source = tmp_path / "contract.pdf"
        source.write_bytes(os.urandom(200_000))
        await client.send_file(alice, source, media_type="application/pdf")
        newest = max(blob_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        blob = bytearray(newest.read_bytes())
        blob[5000] ^= 0x01
        newest.write_bytes(bytes(blob))
        config_dir = tmp_path / "alice-f"
        async with DeviceClient(device_config(xmpp_server, config_dir, "alice", "f")) as awake:
            async with asyncio.timeout(30):
                refused = await awake.refused.get()
            assert isinstance(refused.error, TamperedBlob)
            assert not list((config_dir / "files").glob("*contract*"))


async def test_a_bot_sends_over_xmpp_and_follows_the_notices(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice, bot = f"alice@{xmpp_server.domain}", f"bot@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "bot", "botshop", "--jid", bot)
    transport = XmppTransport(
        f"{bot}/sender",
        PASSWORD,
        xmpp_server.component_domain,
        config.credentials,
        host=xmpp_server.host,
        port=xmpp_server.c2s_port,
        plaintext=True,
    )
    async with AsyncExitStack() as stack:
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "x"))
        await device.publish()
        await stack.enter_async_context(transport)
        client = await stack.enter_async_context(GatewayClient(config, transport=transport))
        assert client.app_jid == f"botshop@{xmpp_server.component_domain}"
        seen: list[tuple[str, str]] = []
        stop = asyncio.Event()
        following = asyncio.create_task(
            client.follow(lambda e: seen.append((e.message_id, e.status)), stop)
        )
        sent = await client.send(alice, otp="112358", priority=Priority.HIGH)
        async with asyncio.timeout(15):
            received = await device.next_message()
        assert received.content == OtpContent("112358", "login")
        device.mark_read(received.message_id)
        async with asyncio.timeout(20):
            while (sent.message_id, "read") not in seen:
                await asyncio.sleep(0.1)
        stop.set()
        await following
        assert [s for m, s in seen if m == sent.message_id] == [
            "accepted",
            "dispatched",
            "delivered",
            "read",
        ]
        view = await client.status(sent.message_id)
        assert view.status == "read"
