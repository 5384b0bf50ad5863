"""Receiving the gateway's signed webhooks in the app, as Python callbacks.

Mount :func:`status_webhook` on the app's own aiohttp server at its callback URL; each
verified event reaches ``on_status``. A bad or stale signature gets 401, and the gateway
retries (so does a callback that raises: the answer is then 500).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from cmaas.clientservice.errors import ClientServiceError
from cmaas.wire import StatusEvent, WireError
from cmaas.wire.signing import webhook_signature_matches

__all__ = ["BadWebhook", "status_webhook", "verified_events"]

MAX_SKEW_S = 300


class BadWebhook(ClientServiceError):
    """A webhook whose signature does not verify, is too old, or whose body is not events."""


def verified_events(
    hmac_key: bytes, header: str, body: bytes, *, now: float | None = None
) -> list[StatusEvent]:
    """The events of a webhook, once its ``X-CMAAS-Signature`` verifies and its time is
    within 300 s (a replayed old delivery is refused).

    Raises: BadWebhook.
    """
    stamp = webhook_signature_matches(hmac_key, header, body)
    if stamp is None:
        raise BadWebhook("the webhook's signature does not verify")
    if abs((time.time() if now is None else now) - stamp) > MAX_SKEW_S:
        raise BadWebhook("the webhook's timestamp is more than 300 s away")
    try:
        events = json.loads(body)["events"]
    except (ValueError, KeyError, TypeError) as error:
        raise BadWebhook("the webhook's body holds no events") from error
    if not isinstance(events, list):
        raise BadWebhook("the webhook's events are not a list")
    try:
        return [StatusEvent.from_json(event) for event in events]
    except WireError as error:
        raise BadWebhook(f"the webhook's events are malformed: {error}") from error


def status_webhook(
    hmac_key: bytes, on_status: Callable[[StatusEvent], Awaitable[None] | None]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the app's callback URL that feeds ``on_status``."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            events = verified_events(hmac_key, request.headers.get("X-CMAAS-Signature", ""), body)
        except BadWebhook as error:
            return web.json_response({"error": "bad_webhook", "detail": str(error)}, status=401)
        for event in events:
            result = on_status(event)
            if result is not None:
                await result
        return web.Response(status=204)

    return handle
