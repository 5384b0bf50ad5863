"""The app's side of the gateway's webhooks: verified events become callbacks; a forged,
stale or malformed delivery is refused with 401 and reaches no callback."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cmaas.api.door import DoorLimits
from cmaas.clientservice import status_webhook
from cmaas.clientservice.api import IDLE_CONNECTION_S, gateway_session
from cmaas.clientservice.client import OmemoReply
from cmaas.clientservice.daemon import ReplyRelay, StatusRelay
from cmaas.wire import StatusEvent
from cmaas.wire.signing import webhook_signature, webhook_signature_matches

KEY = b"k" * 32


async def test_verified_events_reach_the_callback_and_forgeries_do_not() -> None:
    received: list[StatusEvent] = []
    app = web.Application()
    app.add_routes([web.post("/hook", status_webhook(KEY, received.append))])
    event = {
        "event_id": 7,
        "message_id": "m1",
        "status": "delivered",
        "at_ms": 1,
        "device": "1",
        "detail": "",
    }
    body = json.dumps({"app_id": "shop", "events": [event]}).encode()
    now = int(time.time())
    async with TestClient(TestServer(app)) as client:
        cases = [
            (webhook_signature(KEY, now, body), body, 204),
            (webhook_signature(b"x" * 32, now, body), body, 401),
            (webhook_signature(KEY, now - 600, body), body, 401),
            (webhook_signature(KEY, now, body), body + b" ", 401),
            (webhook_signature(KEY, now, b"[]"), b"[]", 401),
            ("", body, 401),
        ]
        for header, payload, status in cases:
            response = await client.post(
                "/hook", data=payload, headers={"X-CMAAS-Signature": header}
            )
            assert response.status == status, (header, payload)
    assert received == [StatusEvent.from_json(event)]


async def test_the_daemon_relays_replies_signed_and_retries_until_a_2xx() -> None:
    bodies: list[bytes] = []
    answers = iter([500, 204])

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        assert webhook_signature_matches(KEY, request.headers["X-CMAAS-Signature"], body)
        bodies.append(body)
        return web.Response(status=next(answers))

    app = web.Application()
    app.add_routes([web.post("/replies", hook)])
    reply = OmemoReply("bob@example.org", 4711, "yes, that was me", 42, 1_796_061_583_097)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        relay = ReplyRelay(str(server.make_url("/replies")), KEY, session)
        async with asyncio.timeout(10):
            await relay(reply)
    # The first delivery was refused (500), so the same body came again.
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert json.loads(bodies[1]) == {
        "replies": [
            {
                "seq": 42,
                "from": "bob@example.org",
                "device_id": 4711,
                "text": "yes, that was me",
                "received_ms": 1_796_061_583_097,
            }
        ]
    }


async def test_the_daemon_relays_status_events_to_the_library_receiver() -> None:
    received: list[StatusEvent] = []
    app = web.Application()
    app.add_routes([web.post("/hook", status_webhook(KEY, received.append))])
    event = StatusEvent.from_json(
        {
            "event_id": 3,
            "message_id": "m",
            "status": "read",
            "at_ms": 5,
            "device": "7",
            "detail": "",
        }
    )
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):
            await StatusRelay(str(server.make_url("/hook")), KEY, session)(event)
    assert received == [event]


async def test_the_clients_session_lets_go_of_idle_connections_before_the_gateway() -> None:
    async with gateway_session() as session:
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        # What the session actually uses, not only the constant it was given.
        assert connector._keepalive_timeout == IDLE_CONNECTION_S
    assert DoorLimits().header_timeout_s > IDLE_CONNECTION_S
