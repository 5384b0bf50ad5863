"""A small XMPP client for driving the gateway's ad-hoc commands over a real server.

Used by the integration tests and ``cmaas dev run``; it speaks XEP-0050 exactly as a
stock client (Gajim, Psi) does: execute, read the form, submit it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from slixmpp import JID, Presence

from cmaas.devservers._errors import DevServerError
from cmaas.xmpp.commands import CommandCaller, CommandReply, command_client

__all__ = ["AdhocClient", "CommandReply"]


class AdhocClient(CommandCaller):
    """A connected client account that runs the gateway's commands
    (:class:`~cmaas.xmpp.commands.CommandCaller`). Use as
    ``async with AdhocClient(...) as client:``."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        self.jid = JID(jid)
        # The test servers listen on loopback only, without TLS.
        self.xmpp = command_client(jid, password, plaintext=True)
        super().__init__(self.xmpp)
        self._host = host
        self._port = port
        self._ready = asyncio.Event()
        self._auth_failed = False
        self.presences: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("presence", self._on_presence)
        self.xmpp.add_event_handler("failed_all_auth", self._on_auth_failed)

    def _on_auth_failed(self, _event: object) -> None:
        self._auth_failed = True
        self._ready.set()

    async def _on_session_start(self, _event: object) -> None:
        self.xmpp.send_presence()
        await self.xmpp.get_roster()
        self._ready.set()

    def _on_presence(self, presence: Presence) -> None:
        self.presences.put_nowait((str(presence["from"]), presence["type"]))

    async def connect(self, within: float = 15.0) -> None:
        """Raises: DevServerError: No session within ``within`` seconds, or a wrong password."""
        self._ready.clear()
        self.xmpp.connect(self._host, self._port)
        try:
            await asyncio.wait_for(self._ready.wait(), within)
        except TimeoutError as exc:
            raise DevServerError(f"{self.jid} could not log in on port {self._port}") from exc
        if self._auth_failed:
            raise DevServerError(f"{self.jid}: wrong password")

    async def disconnect(self) -> None:
        await self.xmpp.disconnect(wait=1.0)

    async def __aenter__(self) -> AdhocClient:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()
