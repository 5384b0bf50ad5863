"""The app's side of the gateway's webhooks: verified events become callbacks; a forged,
stale or malformed delivery is refused with 401 and reaches no callback."""

from __future__ import annotations

import json
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cmaas.clientservice import status_webhook
from cmaas.wire import StatusEvent
from cmaas.wire.signing import webhook_signature

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
