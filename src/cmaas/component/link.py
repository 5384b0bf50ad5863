"""Keeping the component link up: connect, and reconnect with capped exponential backoff.

slixmpp does not reconnect a component by itself, and its own retry loop backs off
to five minutes; an IM server restart should cost seconds, so the gateway drives
every attempt itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from typing import Any

from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.stanza import StreamError

__all__ = ["ComponentLink", "LinkState"]

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class ComponentLink:
    """Runs one component connection until told to stop."""

    def __init__(
        self,
        xmpp: ComponentXMPP,
        host: str,
        port: int,
        *,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_after: float = 10.0,
    ) -> None:
        self._xmpp = xmpp
        self._host = host
        self._port = port
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._stable_after = stable_after
        self.state = LinkState.STOPPED
        self.connects = 0
        self._outcome: asyncio.Future[str] | None = None
        self._reason = ""
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        xmpp.add_event_handler("stream_error", self._on_stream_error)

    def _settle(self, outcome: str) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(outcome)

    def _on_session_start(self, _event: object) -> None:
        self._settle("connected")

    def _on_disconnected(self, reason: object) -> None:
        self._reason = self._reason or str(reason or "connection closed")
        self._settle("disconnected")

    def _on_connection_failed(self, error: object) -> None:
        self._reason = str(error)
        self._settle("failed")

    def _on_stream_error(self, error: StreamError) -> None:
        # A wrong secret (<not-authorized/>) or a second connection to Prosody
        # (<conflict/>) ends here, before the stream closes.
        self._reason = f"stream error <{error['condition']}/> {error['text']}".strip()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and stay connected until ``stop`` is set, then close the stream."""
        delay = self._initial_delay
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self.state = LinkState.CONNECTING
                self._reason = ""
                outcome = await self._attempt(stopping)
                if stop.is_set():
                    break
                if outcome == "connected":
                    self.connects += 1
                    self.state = LinkState.CONNECTED
                    log.info(
                        "component link up: %s on %s:%d",
                        self._xmpp.boundjid.bare,
                        self._host,
                        self._port,
                    )
                    since = time.monotonic()
                    outcome = await self._until_lost(stopping)
                    if stop.is_set():
                        break
                    if time.monotonic() - since >= self._stable_after:
                        delay = self._initial_delay
                    log.warning(
                        "component link lost (%s); reconnecting in %.1f s",
                        self._reason or outcome,
                        delay,
                    )
                else:
                    self._xmpp.cancel_connection_attempt()
                    log.warning(
                        "component link to %s:%d failed (%s); retrying in %.1f s",
                        self._host,
                        self._port,
                        self._reason or outcome,
                        delay,
                    )
                self.state = LinkState.BACKING_OFF
                # Jitter keeps several gateways from reconnecting in lockstep.
                await _sleep_unless(stopping, delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, self._max_delay)
        finally:
            stopping.cancel()
            await self._close()

    async def _attempt(self, stopping: asyncio.Future[Any]) -> str:
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        self._xmpp.connect(self._host, self._port)
        await asyncio.wait([self._outcome, stopping], return_when=asyncio.FIRST_COMPLETED)
        return self._outcome.result() if self._outcome.done() else "stopped"

    async def _until_lost(self, stopping: asyncio.Future[Any]) -> str:
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        await asyncio.wait([self._outcome, stopping], return_when=asyncio.FIRST_COMPLETED)
        return self._outcome.result() if self._outcome.done() else "stopped"

    async def _close(self) -> None:
        was_connected = self.state is LinkState.CONNECTED
        self.state = LinkState.STOPPED
        self._xmpp.cancel_connection_attempt()
        if was_connected and self._xmpp.transport is not None:
            await self._xmpp.disconnect(wait=2.0)
        log.info("component link closed")


async def _sleep_unless(stopping: asyncio.Future[Any], seconds: float) -> None:
    await asyncio.wait({stopping}, timeout=seconds)
