"""Running the gateway's ad-hoc commands (XEP-0050) from a client, as Gajim or Psi do:
execute, read the form, submit it. Used by the reference device, ``cmaas dev run``
and the tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slixmpp import JID, ClientXMPP, Iq
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

__all__ = ["CommandCaller", "CommandReply", "FormValues", "command_client"]

_COMMANDS = "http://jabber.org/protocol/commands"
_FORM_TYPE = "urn:cmaas:cmd:1"

FormValues = Mapping[str, str | Sequence[str] | bool]


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
    items: list[dict[str, str]] | None = None
    """The rows of a reported table, when the result is one."""

    @property
    def error_notes(self) -> list[str]:
        return [text for kind, text in self.notes if kind == "error"]

    @classmethod
    def from_iq(cls, iq: Iq) -> CommandReply:
        command = iq["command"]
        values: dict[str, list[str]] = {}
        items: list[dict[str, str]] | None = None
        form = command.xml.find("{jabber:x:data}x")
        if form is not None:
            for field in form.iter("{jabber:x:data}field"):
                values.setdefault(field.get("var", ""), []).extend(
                    v.text or "" for v in field.findall("{jabber:x:data}value")
                )
            rows = form.findall("{jabber:x:data}item")
            if rows:
                items = [
                    {
                        field.get("var", ""): field.findtext("{jabber:x:data}value") or ""
                        for field in row.findall("{jabber:x:data}field")
                    }
                    for row in rows
                ]
        return cls(
            command["status"], command["sessionid"], list(command["notes"]), values, items=items
        )

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


def command_client(jid: str, password: str, *, plaintext: bool) -> ClientXMPP:
    """A client able to run commands (disco, data forms, XEP-0050) and answer pings.

    Args:
        plaintext: No TLS and PLAIN over the bare stream: only for servers on loopback.
    """
    xmpp = ClientXMPP(jid, password)
    # The account is the person's (or the bot's): whom it shares presence with is decided
    # in their own client, not here. Accepting every request made any app that asked a
    # contact, and a server that archives contacts' messages then archived every message.
    xmpp.auto_authorize = None
    xmpp.auto_subscribe = False
    if plaintext:
        xmpp.enable_starttls = False
        xmpp.enable_direct_tls = False
        xmpp.enable_plaintext = True
        xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    for plugin in ("xep_0030", "xep_0004", "xep_0050", "xep_0199"):
        xmpp.register_plugin(plugin)
    return xmpp


class CommandCaller:
    """Runs commands over a connected :class:`ClientXMPP` with xep_0030/0004/0050 loaded."""

    def __init__(self, xmpp: ClientXMPP, timeout: float = 15.0) -> None:
        self._xmpp = xmpp
        self._timeout = timeout

    async def command_nodes(self, to: str) -> list[str]:
        """The command nodes ``to`` lists for this account (disco#items)."""
        iq = await self._xmpp.plugin["xep_0030"].get_items(
            jid=JID(to), node=_COMMANDS, timeout=self._timeout
        )
        return [node for _jid, node, _name in iq["disco_items"]["items"]]

    async def execute(self, to: str, node: str) -> CommandReply:
        return await self._send(to, node, "execute", None, None)

    async def submit(
        self,
        to: str,
        node: str,
        session_id: str,
        values: FormValues,
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

    async def run(self, to: str, node: str, *steps: FormValues) -> CommandReply:
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
            iq = await self._xmpp.plugin["xep_0050"].send_command(
                to, node, action=action, sessionid=session_id, payload=form, timeout=self._timeout
            )
        except IqError as exc:
            return CommandReply.from_error(exc.iq)
        return CommandReply.from_iq(iq)
