"""The outbox on real Prosody and ejabberd: priorities over a backlog, offline devices,
expiry, bounces, a gateway killed mid-queue, and a webhook endpoint that is down."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from cmaas.device.client import DeviceClient
from cmaas.devservers import XmppServer
from cmaas.envelope import DeviceKeyring, Expired, TextContent
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import SqliteKeystore
from cmaas.lifecycle import (
    Priority,
)
from cmaas.wire import Accepted, StatusEvent

from .apps import (
    RegisteredApp,
    WebhookReceiver,
    accepted,
    http_session,
    register_app,
    roomy_plan,
    seal_flood,
    statuses,
)
from .devices import collect_shown, device_config, new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


async def _all_events(app: RegisteredApp) -> list[StatusEvent]:
    events: list[StatusEvent] = []
    after = 0
    while True:
        page = await app.api.events(after=after)
        if not page.events:
            return events
        events += page.events
        after = page.next


async def _all_delivered(app: RegisteredApp, message_ids: list[str]) -> None:
    for message_id in message_ids:
        await app.wait_status(message_id, lambda v: v.status == "delivered", within=60)


async def _wait_stopped(gateway: GatewayProcess, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while gateway.health().get("component_link") == "connected":
        assert time.monotonic() < deadline, "the gateway never noticed the server stop"
        await asyncio.sleep(0.1)


async def test_high_priority_overtakes_a_bulk_backlog(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    await roomy_plan(gateway)
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "q"))
        await device.publish()
        app = await register_app(gateway, session, "mixed")
        lookups = [await app.api.lookup(alice) for _ in range(201)]

        # The IM server goes away, so the bulk backlog piles up in the outbox.
        xmpp_server.stop()
        await _wait_stopped(gateway)
        bulk_ids = [app.new_id() for _ in range(200)]
        results = await app.api.submit_batch(
            [
                app.seal(
                    lookup, TextContent("newsletter"), message_id=message_id, priority=Priority.BULK
                )
                for message_id, lookup in zip(bulk_ids, lookups, strict=False)
            ]
        )
        assert accepted(results), results
        otp = await app.send(alice, TextContent("OTP 123456"), lookup=lookups[-1])
        assert gateway.health()["outbox"] == {"high": 1, "normal": 0, "bulk": 200}

        xmpp_server.start()
        gateway.wait_healthy()
        await app.wait_status(bulk_ids[-1], lambda v: v.status in ("delivered", "read"), 60)
        dispatched = [e.message_id for e in await _all_events(app) if e.status == "dispatched"]
        assert dispatched[0] == otp.message_id
        assert sorted(dispatched[1:]) == sorted(bulk_ids)


async def test_offline_device_receives_later_and_the_status_follows(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        app = await register_app(gateway, session, "patient")
        async with new_device(xmpp_server, tmp_path, "alice", "sleepy") as device:
            await device.publish()
        awake_bot = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "bot", "on"))
        await awake_bot.publish()
        sent = await app.send(alice, TextContent("read me when you wake"))
        view = await app.wait_status(sent.message_id, lambda v: v.status == "dispatched")
        # A later message over the same component link: the server has dealt with the
        # first one before it routes this one, so once this one is delivered, anything
        # that could have marked the first delivered would have come back before.
        later = await app.send(f"bot@{xmpp_server.domain}", TextContent("I am awake"))
        await app.wait_status(later.message_id, lambda v: v.status == "delivered")
        assert (await app.api.status(sent.message_id)).status == "dispatched"

        async with DeviceClient(
            device_config(xmpp_server, tmp_path / "alice-sleepy", "alice", "sleepy")
        ) as awake:
            async with asyncio.timeout(15):
                received = await awake.next_message()
            assert received.message_id == sent.message_id
            view = await app.wait_status(sent.message_id, lambda v: v.status == "delivered")
        assert [e.status for e in view.history] == ["accepted", "dispatched", "delivered"]


async def test_expired_messages_are_never_shown(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    async with http_session() as session:
        app = await register_app(gateway, session, "hurried")
        async with new_device(xmpp_server, tmp_path, "alice", "late") as device:
            await device.publish()

        # Already expired when submitted: never dispatched.
        stale = await app.send(alice, TextContent("too late"), lifetime_ms=-1_000)
        view = await app.wait_status(stale.message_id, lambda v: v.status == "expired")
        assert [e.status for e in view.history] == ["accepted", "expired"]

        # Dispatched to an offline device, then expired before it came back.
        brief = await app.send(alice, TextContent("OTP 111111"), lifetime_ms=2_000)
        view = await app.wait_status(brief.message_id, lambda v: v.status == "expired", within=15)
        assert [e.status for e in view.history] == ["accepted", "dispatched", "expired"]
        config = device_config(xmpp_server, tmp_path / "alice-late", "alice", "late")
        async with DeviceClient(config) as awake:
            async with asyncio.timeout(15):
                refused = await awake.refused.get()
            assert refused.message_id == brief.message_id
            assert isinstance(refused.error, Expired)
            assert awake.seen.sender_of(brief.message_id) is None
        assert (await app.api.status(brief.message_id)).status == "expired"


async def test_a_bounce_fails_the_message_with_its_condition(
    xmpp_server: XmppServer, gateway: GatewayProcess, stored: SqliteKeystore
) -> None:
    # Keys published for an account the IM server does not have (deleted since, say).
    ghost = f"ghost@{xmpp_server.domain}"
    keyring = DeviceKeyring.generate(ghost, now_ms=int(time.time() * 1000))
    await KeyDirectory(stored).publish(ghost, keyring.bundle().to_bytes().decode())
    async with http_session() as session:
        app = await register_app(gateway, session, "bouncer")
        sent = await app.send(ghost, TextContent("anyone there?"))
        view = await app.wait_status(sent.message_id, lambda v: v.status == "failed")
    assert view.detail.startswith(f"bounced by {ghost}: service-unavailable")
    assert [e.status for e in view.history] == ["accepted", "dispatched", "failed"]


async def test_gateway_killed_mid_flood_loses_nothing(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    """kill -9 while a 10,000-message flood is half submitted and draining; the app
    resubmits the batch whose answer it lost, as any client would after a crash."""
    alice = f"alice@{xmpp_server.domain}"
    await roomy_plan(gateway, rate=50_000)
    count = 10_000
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "k"))
        await device.publish()
        app = await register_app(gateway, session, "crashy")
        sealed = await seal_flood(app, alice, count, Priority.NORMAL)
        ids = [message.message_id for message in sealed]
        shown: list[str] = []
        collecting = collect_shown(device, shown)
        try:
            batches = [sealed[start : start + 500] for start in range(0, count, 500)]
            for number, batch in enumerate(batches):
                if number == len(batches) // 2:
                    # The kill lands while this batch is being stored or answered.
                    submitting = asyncio.create_task(app.api.submit_batch(batch))
                    await asyncio.sleep(0.05)
                    workers = gateway.children()
                    assert workers, "the gateway runs an admission worker"
                    await asyncio.to_thread(gateway.kill)
                    # No clean-up ran, yet its workers end with it: their input closed.
                    async with asyncio.timeout(10):
                        while any(gateway.running(pid) for pid in workers):
                            await asyncio.sleep(0.05)
                    try:
                        results = await submitting
                    except aiohttp.ClientError:
                        await asyncio.to_thread(gateway.start)
                        results = await app.api.submit_batch(batch)
                        # Those stored before the kill come back as duplicates, with the
                        # status they have reached since: the restarted gateway may have
                        # dispatched them already.
                        results = [
                            r for r in results if not (isinstance(r, Accepted) and r.duplicate)
                        ]
                    else:
                        await asyncio.to_thread(gateway.start)
                else:
                    results = await app.api.submit_batch(batch)
                assert accepted(results), results
            async with asyncio.timeout(180):
                while len(set(shown)) < count:
                    await asyncio.sleep(0.2)
            # A later message from the same app to the same device, and of the lowest
            # priority: a duplicate still queued or on its way (a resend after the
            # restart) is written before it and arrives before it.
            last = await app.send(alice, TextContent("last"), priority=Priority.BULK)
            async with asyncio.timeout(60):
                while last.message_id not in shown:
                    await asyncio.sleep(0.2)
        finally:
            collecting.cancel()
        assert shown[-1] == last.message_id
        assert sorted(shown[:-1]) == sorted(ids), "each message shown exactly once"
        await _all_delivered(app, ids[-5:])


async def _submit_flood(app: RegisteredApp, to: str, count: int, priority: Priority) -> list[str]:
    """Seal ``count`` messages and submit them in batches of 500; returns their ids."""
    sealed = await seal_flood(app, to, count, priority)
    for start in range(0, count, 500):
        results = await app.api.submit_batch(sealed[start : start + 500])
        assert accepted(results), results
    return [message.message_id for message in sealed]


async def test_webhook_endpoint_down_then_up(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    hook = WebhookReceiver()
    hook.down = True
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hook.running())
        session = await stack.enter_async_context(http_session())
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "w"))
        await device.publish()
        app = await register_app(gateway, session, "hooked", "--callback-url", hook.url)
        hook.hmac_key = app.credentials.hmac_key
        sent = [(await app.send(alice, TextContent(f"#{n}"))).message_id for n in range(3)]
        for message_id in sent:
            await app.wait_status(message_id, lambda v: v.status == "delivered")
        async with asyncio.timeout(20):
            while hook.refused < 3:
                await asyncio.sleep(0.1)
        assert hook.events == []
        hook.down = False
        await hook.wait_for(
            lambda events: all(len(statuses(events, m)) == 3 for m in sent), within=30
        )
        for message_id in sent:
            assert statuses(hook.events, message_id) == ["accepted", "dispatched", "delivered"]
        assert hook.bad_signatures == 0


async def test_im_server_restarted_mid_flood_loses_nothing(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    await roomy_plan(gateway)
    count = 1500
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "r"))
        await device.publish()
        app = await register_app(gateway, session, "flood")
        ids = await _submit_flood(app, alice, count, Priority.BULK)

        shown: set[str] = set()
        duplicates = 0

        async def collect(until: int, within: float) -> None:
            nonlocal duplicates
            async with asyncio.timeout(within):
                while len(shown) < until:
                    message_id = (await device.next_message()).message_id
                    duplicates += message_id in shown
                    shown.add(message_id)

        await collect(100, 30)  # the flood is under way
        await asyncio.to_thread(xmpp_server.restart)
        await asyncio.to_thread(gateway.wait_healthy, 60)
        await collect(count, 120)
        assert shown == set(ids)
        assert duplicates == 0, "the device shows each message once"
        await _all_delivered(app, ids[-3:])
