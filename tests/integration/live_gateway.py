"""The gateway run inside the test's event loop, so a test can act as the sender.

A test seals with the envelope library and writes the message through the gateway's
own component link; the receipts and markers that come back are the component's
feedback, which the test subscribes to beside the status tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from cmaas.admin import AdminService, IssuedApp, RegisterAppRequest
from cmaas.assembly import Gateway, open_gateway
from cmaas.delivery.tracker import Feedback, FeedbackKind
from cmaas.devservers import XmppServer
from cmaas.settings import load_settings

from .gateway_process import GatewayProcess


class FeedbackLog:
    """Collects the gateway's feedback events for one test."""

    def __init__(self, gateway: Gateway) -> None:
        self.queues: dict[FeedbackKind, asyncio.Queue[Feedback]] = {
            kind: asyncio.Queue() for kind in FeedbackKind
        }
        gateway.xmpp.feedback.subscribe(self)

    async def report(self, feedback: Feedback) -> None:
        self.queues[feedback.kind].put_nowait(feedback)

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        for feedback in feedbacks:
            await self.report(feedback)

    async def next(self, kind: FeedbackKind, within: float = 15.0) -> Feedback:
        async with asyncio.timeout(within):
            return await self.queues[kind].get()


@contextlib.asynccontextmanager
async def live_gateway(
    server: XmppServer, workdir: Path, *, app_id: str = "bank"
) -> AsyncIterator[tuple[Gateway, FeedbackLog]]:
    """A connected in-process gateway with one registered app, ``app_id``."""
    async with live_gateway_with_app(server, workdir, app_id=app_id) as (gateway, feedback, _):
        yield gateway, feedback


@contextlib.asynccontextmanager
async def live_gateway_with_app(
    server: XmppServer, workdir: Path, *, app_id: str = "bank", networks: Sequence[str] = ()
) -> AsyncIterator[tuple[Gateway, FeedbackLog, IssuedApp]]:
    """As :func:`live_gateway`, with the app's issued credentials; an app given
    ``networks`` may call the HTTP API from them (through the client service)."""
    env = GatewayProcess(server, workdir, admins=f"admin@{server.domain}").env
    settings = load_settings(env, env_file=None)
    stop = asyncio.Event()
    async with open_gateway(settings) as gateway:
        issued = await AdminService(gateway.keystore).register_app(
            RegisterAppRequest(
                app_id=app_id,
                display_name="Example Bank",
                plan="default",
                networks=list(networks),
                callback_url="",
                jids=[],
            )
        )
        feedback = FeedbackLog(gateway)
        connected = asyncio.Event()
        gateway.xmpp.add_event_handler("session_start", lambda _: connected.set())
        link = asyncio.create_task(gateway.run_links(stop))
        try:
            async with asyncio.timeout(20):
                await connected.wait()
            yield gateway, feedback, issued
        finally:
            stop.set()
            await link
