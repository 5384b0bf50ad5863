"""The delivery engine end to end on real Prosody and ejabberd: an app looks up keys
and submits sealed messages over signed HTTP, the gateway process stores and
dispatches them, reference devices open them, and the statuses come back as signed
webhooks, long-poll events, XMPP notices and the message's own history."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from slixmpp import Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.clientservice import ApiError
from cmaas.devservers import XmppServer
from cmaas.envelope import OtpContent, TextContent

from .apps import WebhookReceiver, admin, http_session, metrics_text, register_app, statuses
from .conftest import connect
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

STATUS_NS = "urn:cmaas:status:1"


async def test_sealed_otp_delivered_and_read_with_every_callback(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice_jid = f"alice@{xmpp_server.domain}"
    bot_jid = f"bot@{xmpp_server.domain}"
    await asyncio.to_thread(admin, gateway, "directory-set", "alice@mail.example", alice_jid)
    hook = WebhookReceiver()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hook.running())
        session = await stack.enter_async_context(http_session())
        app = await register_app(
            gateway, session, "bank", "--callback-url", hook.url, "--jid", bot_jid
        )
        hook.hmac_key = app.credentials.hmac_key
        bot = await connect(xmpp_server, "bot")
        stack.push_async_callback(bot.disconnect)
        notices: asyncio.Queue[dict[str, str]] = asyncio.Queue()

        def on_message(message: Message) -> None:
            status = message.xml.find(f"{{{STATUS_NS}}}status")
            if status is not None and message["from"].bare == app.app_jid:
                notices.put_nowait(dict(status.attrib))

        bot.xmpp.register_handler(
            Callback(
                "status notices",
                MatchXPath(f"{{jabber:client}}message/{{{STATUS_NS}}}status"),
                on_message,  # type: ignore[arg-type]
            )
        )
        phone = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "phone"))
        laptop = await stack.enter_async_context(
            new_device(xmpp_server, tmp_path, "alice", "laptop")
        )
        await phone.publish("phone")
        await laptop.publish("laptop")

        lookup = await app.api.lookup("alice@mail.example")
        assert lookup.jid == alice_jid
        assert len(lookup.devices) == 2
        message_id = app.new_id()
        request = app.seal(
            lookup, OtpContent("482913", "login"), message_id=message_id, to="alice@mail.example"
        )
        answer = await app.api.submit(request)
        assert (answer.status, answer.recipient_jid) == ("accepted", alice_jid)
        assert answer.duplicate is False

        for device in (phone, laptop):
            async with asyncio.timeout(15):
                received = await device.next_message()
            assert (received.message_id, received.content) == (
                message_id,
                OtpContent("482913", "login"),
            )
        phone.mark_read(message_id)
        assert phone.keyring is not None and laptop.keyring is not None
        phone_id, laptop_id = str(phone.keyring.device_id), str(laptop.keyring.device_id)

        view = await app.wait_status(
            message_id, lambda v: v.status == "read" and len(v.devices) == 2
        )
        assert set(view.devices) == {phone_id, laptop_id}
        assert view.devices[phone_id].read_ms is not None
        assert view.devices[laptop_id].read_ms is None
        history = [(e.status, e.device) for e in view.history]
        assert history[:2] == [("accepted", ""), ("dispatched", "")]
        assert sorted(history[2:]) == sorted(
            [("delivered", phone_id), ("delivered", laptop_id), ("read", phone_id)]
        )

        # A retry of the same request gets the same message; another body is a conflict.
        again = await app.api.submit(request)
        assert (again.message_id, again.duplicate) == (message_id, True)
        resealed = app.seal(
            lookup, OtpContent("000000", "login"), message_id=message_id, to="alice@mail.example"
        )
        with pytest.raises(ApiError) as conflict:
            await app.api.submit(resealed)
        assert (conflict.value.status, conflict.value.code) == (409, "message_id_conflict")

        # Signed webhooks, long-poll and XMPP notices all carry the same five events.
        expected = ["accepted", "dispatched", "delivered", "delivered", "read"]
        await hook.wait_for(lambda events: len(statuses(events, message_id)) == 5)
        assert sorted(statuses(hook.events, message_id)) == sorted(expected)
        assert hook.bad_signatures == 0
        polled = await app.api.events(after=0)
        assert sorted(statuses(polled.events, message_id)) == sorted(expected)
        assert polled.next == polled.events[-1].event_id
        assert (await app.api.events(after=polled.next)).events == ()
        told: list[dict[str, str]] = []
        async with asyncio.timeout(15):
            while len(told) < 5:
                told.append(await notices.get())
        assert sorted(n["status"] for n in told) == sorted(expected)
        assert {n["message"] for n in told} == {message_id}

    metrics = await metrics_text(gateway)
    assert 'cmaas_submissions_total{outcome="accepted"} 1.0' in metrics
    assert 'cmaas_submissions_total{outcome="duplicate"} 1.0' in metrics
    assert 'cmaas_status_events_total{status="read"} 1.0' in metrics
    assert "cmaas_component_link_up 1.0" in metrics


async def test_long_poll_wakes_on_the_next_event(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        app = await register_app(gateway, session, "poller")
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "p"))
        await device.publish()
        start = await app.api.events()
        waiting = asyncio.create_task(app.api.events(after=start.next, wait=30))
        # Time for the request to reach the gateway, so that it waits rather than finds
        # the event already there. That it did not answer early needs no check here: its
        # answer must hold the event of a message sent after this.
        await asyncio.sleep(0.5)
        sent = await app.send(f"alice@{xmpp_server.domain}", TextContent("hello"))
        async with asyncio.timeout(10):
            woken = await waiting
        assert [e.message_id for e in woken.events][:1] == [sent.message_id]


def _ok(view: dict[str, Any]) -> bool:
    return bool(view)
