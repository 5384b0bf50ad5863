"""A small XMPP client for driving the gateway's ad-hoc commands over a real server.

Used by the integration tests and ``cmaas dev run``; it speaks XEP-0050 exactly as a
stock client (Gajim, Psi) does: execute, read the form, submit it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from slixmpp import JID, ClientXMPP, Iq, Presence
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from cmaas.devservers._common import DevServerError

__all__ = ["AdhocClient", "CommandReply"]

_COMMANDS = "http://jabber.org/protocol/commands"
_FORM_TYPE = "urn:cmaas:cmd:1"


@dataclass(frozen=True, slots=True)
class CommandReply:
    """One answer of the gateway to a command step, or the XMPP error it returned."""

    status: str
    session_id: str
    notes: list[tuple[str, str]]
    values: dict[str, list[str]]
    error: str | None = None
    """The error condition, when the step was refused with an XMPP error."""
    app_error: str | None = None
    """The XEP-0050 application condition, e.g. ``bad-sessionid``."""

    @classmethod
    def from_iq(cls, iq: Iq) -> CommandReply:
        command = iq["command"]
        values: dict[str, list[str]] = {}
        form = command.xml.find("{jabber:x:data}x")
        if form is not None:
            for field in form.iter("{jabber:x:data}field"):
                values.setdefault(field.get("var", ""), []).extend(
                    v.text or "" for v in field.findall("{jabber:x:data}value")
                )
        return cls(command["status"], command["sessionid"], list(command["notes"]), values)

    @classmethod
    def from_error(cls, iq: Iq) -> CommandReply:
        app = next(
            (
                child.tag.split("}")[1]
                for child in iq["error"].xml
                if child.tag.startswith(f"{{{_COMMANDS}}}")
            ),
            None,
        )
        return cls("error", "", [], {}, iq["error"]["condition"], app)


class AdhocClient:
    """A connected client account. Use as ``async with AdhocClient(...) as client:``."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        self.jid = JID(jid)
        self.xmpp = ClientXMPP(jid, password)
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        for plugin in ("xep_0030", "xep_0004", "xep_0050", "xep_0199"):
            self.xmpp.register_plugin(plugin)
        # The test servers listen on loopback only, without TLS.
        self.xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
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

    async def command_nodes(self, to: str) -> list[str]:
        """The command nodes ``to`` lists for this account (disco#items)."""
        iq = await self.xmpp.plugin["xep_0030"].get_items(jid=JID(to), node=_COMMANDS, timeout=10)
        return [node for _jid, node, _name in iq["disco_items"]["items"]]

    async def execute(self, to: str, node: str) -> CommandReply:
        return await self._send(to, node, "execute", None, None)

    async def submit(
        self,
        to: str,
        node: str,
        session_id: str,
        values: Mapping[str, str | Sequence[str] | bool],
        action: str = "complete",
    ) -> CommandReply:
        form = Form()
        form["type"] = "submit"
        form.add_field(var="FORM_TYPE", value=_FORM_TYPE)
        for var, value in values.items():
            form.add_field(var=var, value=list(value) if isinstance(value, list | tuple) else value)
        return await self._send(to, node, action, session_id, form)

    async def cancel(self, to: str, node: str, session_id: str) -> CommandReply:
        return await self._send(to, node, "cancel", session_id, None)

    async def run(
        self, to: str, node: str, *steps: Mapping[str, str | Sequence[str] | bool]
    ) -> CommandReply:
        """Execute ``node`` and submit one form per step; the last reply is returned."""
        reply = await self.execute(to, node)
        for index, values in enumerate(steps):
            if reply.status != "executing":
                break
            action = "complete" if index == len(steps) - 1 else "next"
            reply = await self.submit(to, node, reply.session_id, values, action)
        return reply

    async def _send(
        self, to: str, node: str, action: str, session_id: str | None, form: Form | None
    ) -> CommandReply:
        try:
            iq = await self.xmpp.plugin["xep_0050"].send_command(
                to, node, action=action, sessionid=session_id, payload=form, timeout=15
            )
        except IqError as exc:
            return CommandReply.from_error(exc.iq)
        return CommandReply.from_iq(iq)
