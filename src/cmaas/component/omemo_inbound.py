"""Legacy-OMEMO elements that people's clients send to app JIDs: replies, and the key
transports that complete or advance a session. Each is handed, unopened, to the app's
inbox for its client service; the handler only translates."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slixmpp import Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.xmlstream import tostring
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.component.contacts import AppContacts
from cmaas.wire import WireError
from cmaas.wire.omemo_message import LEGACY_OMEMO_NAMESPACE

__all__ = ["OmemoInboundHandler", "OmemoReceiver"]

log = logging.getLogger(__name__)

OmemoReceiver = Callable[[str, str, str], Awaitable[bool]]
"""``(app_id, sender bare JID, <encrypted/> XML)`` → whether it was kept."""


class OmemoInboundHandler:
    """Hands ``<encrypted/>`` elements addressed to active app JIDs to a receiver, and
    bounces those it cannot take, so the sender's client can tell."""

    def __init__(self, xmpp: BaseXMPP, contacts: AppContacts) -> None:
        self._xmpp = xmpp
        self._contacts = contacts
        self._receiver: OmemoReceiver | None = None

    def subscribe(self, receiver: OmemoReceiver) -> None:
        self._receiver = receiver

    def attach(self) -> None:
        path = f"{{{self._xmpp.default_ns}}}message/{{{LEGACY_OMEMO_NAMESPACE}}}encrypted"
        self._xmpp.register_handler(
            CoroutineCallback("cmaas omemo inbound", MatchXPath(path), self._received)  # type: ignore[arg-type]
        )

    async def _received(self, message: Message) -> None:
        if message["type"] in ("error", "groupchat"):
            return
        sender = message["from"]
        app_id = await self._contacts.active_app_id(message["to"])
        if app_id is None or self._receiver is None:
            self._bounce(message, "cancel", "service-unavailable")
            return
        element = message.xml.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}encrypted")
        try:
            kept = await self._receiver(app_id, str(sender.bare), str(tostring(element)))
        except WireError as error:
            log.info("refused an OMEMO element from %s to app %s: %s", sender.bare, app_id, error)
            self._bounce(message, "modify", "not-acceptable")
            return
        if not kept:
            log.warning(
                "app %s holds as many OMEMO elements as it may (from %s or in all); bounced one",
                app_id,
                sender.bare,
            )
            self._bounce(message, "wait", "resource-constraint")

    def _bounce(self, message: Message, kind: str, condition: str) -> None:
        error: Message = message.reply(clear=True)
        error["type"] = "error"
        error["id"] = message["id"]
        error["error"]["type"] = kind
        error["error"]["condition"] = condition
        error.send()
