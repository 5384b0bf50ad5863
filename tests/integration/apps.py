"""Test apps of the delivery engine: registered through ``cmaas admin``, talking to the
gateway process over real HTTP with signed requests, sealing with the envelope library,
and receiving signed webhooks on an HTTP server of their own."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cmaas.clientservice import AppCredentials, ClientConfig, GatewayApi
from cmaas.clientservice.sealing import seal_submission
from cmaas.clock import now_ms
from cmaas.devservers import free_port
from cmaas.envelope import (
    Content,
    PrivateKey,
    TextContent,
    b64url,
    generate_private_key,
    point_bytes,
)
from cmaas.lifecycle import (
    Priority,
)
from cmaas.wire import (
    Accepted,
    KeyLookup,
    MessageView,
    StatusEvent,
    Submission,
    SubmissionResult,
)
from cmaas.wire.signing import webhook_signature_matches

from .gateway_process import GatewayProcess


def admin(gateway: GatewayProcess, *args: str) -> dict[str, Any]:
    """``cmaas admin --json ...`` against the gateway's database; fails the test on error."""
    done = gateway.admin_cli("--json", *args)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


class RegisteredApp:
    """One registered app with its signing key, as the client service will hold them."""

    def __init__(
        self, gateway: GatewayProcess, app_id: str, credentials: AppCredentials, session: Any
    ) -> None:
        self.gateway = gateway
        self.app_id = app_id
        self.app_jid = f"{app_id}@{gateway.server.component_domain}"
        self.credentials = credentials
        self.api = GatewayApi(f"http://127.0.0.1:{gateway.http_port}", credentials, session)
        self.key: PrivateKey = generate_private_key()
        self._sent = 0

    async def register_key(self) -> str:
        return await self.api.register_signing_key(b64url(point_bytes(self.key.public_key())))

    def new_id(self) -> str:
        self._sent += 1
        return f"m{self._sent}-{os.urandom(4).hex()}"

    def seal(
        self,
        lookup: KeyLookup,
        content: Content,
        *,
        message_id: str,
        to: str | None = None,
        priority: Priority = Priority.HIGH,
        lifetime_ms: int = 600_000,
    ) -> Submission:
        """A submission sealed to every device of a ``GET /v1/keys`` answer, to ``to``
        (the looked-up JID by default); a negative lifetime makes an envelope that is
        already expired."""
        now = now_ms()
        return seal_submission(
            lookup,
            to or lookup.jid,
            content,
            message_id=message_id,
            app_jid=self.app_jid,
            app_key=self.key,
            priority=priority,
            created_ms=now - max(0, -lifetime_ms) - 1_000,
            expires_ms=now + lifetime_ms,
        )

    async def send(
        self,
        to: str,
        content: Content,
        *,
        priority: Priority = Priority.HIGH,
        lifetime_ms: int = 600_000,
        message_id: str | None = None,
        lookup: KeyLookup | None = None,
    ) -> Accepted:
        """Look up (unless given a lookup to reuse), seal and submit one message;
        returns the gateway's answer."""
        message_id = message_id or self.new_id()
        lookup = lookup or await self.api.lookup(to)
        return await self.api.submit(
            self.seal(
                lookup,
                content,
                message_id=message_id,
                to=to,
                priority=priority,
                lifetime_ms=lifetime_ms,
            )
        )

    async def wait_status(
        self, message_id: str, wanted: Callable[[MessageView], bool], within: float = 20.0
    ) -> MessageView:
        """Poll ``GET /v1/messages/{id}`` until ``wanted`` holds; fails after ``within``."""
        deadline = time.monotonic() + within
        view: MessageView | None = None
        while time.monotonic() < deadline:
            view = await self.api.status(message_id)
            if wanted(view):
                return view
            await asyncio.sleep(0.1)
        raise AssertionError(f"message {message_id} never got there: {view}")


async def register_credentials(
    gateway: GatewayProcess, app_id: str, name: str, *args: str
) -> AppCredentials:
    """Register ``app_id`` with the admin CLI (extra ``app-register`` flags in ``args``)."""
    issued = await asyncio.to_thread(
        admin,
        gateway,
        "app-register",
        app_id,
        "--name",
        name,
        # An app without allowed networks is XMPP-only; the tests call from loopback.
        "--network",
        "127.0.0.0/8",
        *args,
    )
    return AppCredentials.from_issued(issued)


async def register_app(
    gateway: GatewayProcess, session: Any, app_id: str, *args: str
) -> RegisteredApp:
    """Register ``app_id`` (extra ``app-register`` flags in ``args``) and its signing key."""
    credentials = await register_credentials(gateway, app_id, f"App {app_id}", *args)
    app = RegisteredApp(gateway, app_id, credentials, session)
    await app.register_key()
    return app


class WebhookReceiver:
    """The app's webhook endpoint: checks every signature, keeps the events, and can
    be made to fail (``down``) to test the gateway's retries."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cmaas/events"
        self.hmac_key = b""
        self.down = False
        self.events: list[StatusEvent] = []
        self.refused = 0
        self.bad_signatures = 0
        self._arrived = asyncio.Condition()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.down:
            self.refused += 1
            return web.Response(status=503)
        stamp = webhook_signature_matches(
            self.hmac_key, request.headers.get("X-CMAAS-Signature", ""), body
        )
        if stamp is None or abs(stamp - time.time()) > 300:
            self.bad_signatures += 1
            return web.Response(status=401)
        async with self._arrived:
            self.events.extend(StatusEvent.from_json(e) for e in json.loads(body)["events"])
            self._arrived.notify_all()
        return web.Response(status=204)

    async def wait_for(
        self, wanted: Callable[[list[StatusEvent]], bool], within: float = 30.0
    ) -> list[StatusEvent]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: wanted(self.events))
        return self.events

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WebhookReceiver]:
        app = web.Application()
        app.add_routes([web.post("/cmaas/events", self._hook)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            yield self
        finally:
            await runner.cleanup()


def accepted(results: Sequence[SubmissionResult]) -> bool:
    """Whether the gateway stored every one of a batch's messages."""
    return all(isinstance(r, Accepted) and r.status == "accepted" for r in results)


def statuses(events: Sequence[StatusEvent], message_id: str) -> list[str]:
    return [event.status.value for event in events if event.message_id == message_id]


@asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def metrics_text(gateway: GatewayProcess) -> str:
    """The gateway's ``GET /metrics``, as Prometheus scrapes it."""
    async with http_session() as session:
        url = f"http://127.0.0.1:{gateway.http_port}/metrics"
        async with session.get(url) as response:
            assert response.status == 200
            return await response.text()


async def client_config_for(
    gateway: GatewayProcess,
    state: Path,
    app_id: str = "shop",
    *register_args: str,
    **options: Any,
) -> ClientConfig:
    """Register ``app_id`` (loopback allowed; more ``app-register`` flags in
    ``register_args``) and a client service config for it."""
    credentials = await register_credentials(gateway, app_id, "Shop", *register_args)
    return ClientConfig(f"http://127.0.0.1:{gateway.http_port}", credentials, state, **options)


async def roomy_plan(gateway: GatewayProcess, rate: int = 2000) -> None:
    """Tests that submit hundreds of messages should not meet the default plan's limits."""
    await asyncio.to_thread(
        admin, gateway, "plan-set", "default", "--rate", str(rate), "--burst", str(rate)
    )


async def seal_flood(
    app: RegisteredApp, to: str, count: int, priority: Priority
) -> list[Submission]:
    """``count`` messages sealed to the recipient's signed prekeys (one lookup serves all)."""
    lookup = await app.api.lookup(to)
    # Sealed to the signed prekey, as once the one-time pool is used up.
    spk_only = KeyLookup(
        lookup.jid, tuple(dataclasses.replace(d, one_time_prekeys=()) for d in lookup.devices)
    )
    ids = [app.new_id() for _ in range(count)]
    return [
        app.seal(spk_only, TextContent(f"#{n}"), message_id=message_id, to=to, priority=priority)
        for n, message_id in enumerate(ids)
    ]
