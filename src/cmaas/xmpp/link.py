"""Keeping an XMPP stream up: connect, and reconnect with capped exponential backoff.

slixmpp does not reconnect a component by itself, and its own retry loop backs off to
five minutes; an IM server restart should cost seconds, so the gateway's component link
and the reference device's client session both drive every attempt themselves.

A component connection refused with ``<conflict/>`` means that another instance holds
the component (Prosody allows one connection per component host): the link stands by,
retrying at a fixed, short interval without backing off, so that it takes over within
seconds of the active instance's end.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Sequence
from typing import Protocol

from slixmpp.basexmpp import BaseXMPP
from slixmpp.stanza import StreamError

__all__ = ["LinkListener", "LinkState", "XmppLink", "wait_first"]

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    STANDBY = "standby"
    """Another instance holds the component; this one retries every ``standby_retry``."""
    STOPPED = "stopped"


class LinkListener(Protocol):
    """Told, in the stream's own handlers, when the session starts and when it ends."""

    def link_up(self) -> None: ...

    def link_down(self) -> None: ...


class XmppLink:
    """Runs one XMPP connection (a component's or a client's) until told to stop.

    Attributes:
        state: Where the link is now, for ``/healthz``.
        connects: How many times the handshake succeeded since start.
    """

    def __init__(
        self,
        xmpp: BaseXMPP,
        host: str,
        port: int,
        *,
        name: str = "component link",
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_after: float = 10.0,
        standby_retry: float = 2.0,
        listeners: Sequence[LinkListener] = (),
    ) -> None:
        self._xmpp = xmpp
        self._name = name
        self._host = host
        self._port = port
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._stable_after = stable_after
        self._standby_retry = standby_retry
        self.state = LinkState.STOPPED
        self.connects = 0
        # Events rather than futures: a disconnect that lands between the handshake and
        # the supervisor's next look must not be missed.
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._reason = ""
        self._listeners = list(listeners)
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("disconnected", self._on_down)
        xmpp.add_event_handler("connection_failed", self._on_down)
        xmpp.add_event_handler("stream_error", self._on_stream_error)

    def listen(self, listener: LinkListener) -> None:
        """Tell ``listener`` too, after those before it."""
        self._listeners.append(listener)

    @property
    def up(self) -> bool:
        return self.state is LinkState.CONNECTED

    def _on_session_start(self, _event: object) -> None:
        self._up.set()
        for listener in self._listeners:
            listener.link_up()

    def _on_disconnected(self, _event: object) -> None:
        for listener in self._listeners:
            listener.link_down()

    def _on_down(self, reason: object) -> None:
        self._reason = self._reason or str(reason or "connection closed")
        self._down.set()

    def _on_stream_error(self, error: StreamError) -> None:
        # A wrong secret (<not-authorized/>) or a second connection to Prosody
        # (<conflict/>) ends here, before the stream closes.
        self._reason = f"stream error <{error['condition']}/> {error['text']}".strip()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and stay connected until ``stop`` is set, then close the stream."""
        delay = self._initial_delay
        try:
            while not stop.is_set():
                if self.state is not LinkState.STANDBY:
                    self.state = LinkState.CONNECTING
                self._up.clear()
                self._down.clear()
                self._reason = ""
                self._xmpp.connect(self._host, self._port)
                await wait_first(stop, self._up, self._down)
                if stop.is_set():
                    break
                if self._up.is_set():
                    self.connects += 1
                    self.state = LinkState.CONNECTED
                    log.info(
                        "%s up: %s on %s:%d",
                        self._name,
                        self._xmpp.boundjid.bare,
                        self._host,
                        self._port,
                    )
                    since = time.monotonic()
                    await wait_first(stop, self._down)
                    if stop.is_set():
                        break
                    if time.monotonic() - since >= self._stable_after:
                        delay = self._initial_delay
                    log.warning(
                        "%s lost (%s); reconnecting in %.1f s", self._name, self._reason, delay
                    )
                elif "<conflict/>" in self._reason:
                    self._xmpp.cancel_connection_attempt()
                    if self.state is not LinkState.STANDBY:
                        log.info(
                            "%s: another instance holds the component (%s); standing by,"
                            " trying again every %.1f s",
                            self._name,
                            self._reason,
                            self._standby_retry,
                        )
                    self.state = LinkState.STANDBY
                    delay = self._initial_delay
                    await wait_first(stop, seconds=self._standby_retry)
                    continue
                else:
                    self._xmpp.cancel_connection_attempt()
                    log.warning(
                        "%s to %s:%d failed (%s); retrying in %.1f s",
                        self._name,
                        self._host,
                        self._port,
                        self._reason,
                        delay,
                    )
                self.state = LinkState.BACKING_OFF
                # Jitter keeps several gateways from reconnecting in lockstep.
                await wait_first(stop, seconds=delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, self._max_delay)
        finally:
            await self._close()

    async def _close(self) -> None:
        self.state = LinkState.STOPPED
        self._xmpp.cancel_connection_attempt()
        if self._xmpp.transport is not None:
            await self._xmpp.disconnect(wait=2.0)
        log.info("%s closed", self._name)


async def wait_first(*events: asyncio.Event, seconds: float | None = None) -> None:
    """Wait until any of ``events`` is set, or ``seconds`` pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
