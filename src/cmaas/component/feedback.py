"""What comes back from devices and servers about sealed messages.

Receipts (XEP-0184), displayed markers (XEP-0333) and bounces addressed to app JIDs
become :class:`~cmaas.delivery.tracker.Feedback` handed to the delivery engine's
:class:`~cmaas.delivery.tracker.FeedbackSink`. These handlers only translate: they check
the form and decide nothing.
"""

from __future__ import annotations

import logging

from slixmpp import Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.delivery.tracker import Feedback, FeedbackKind, FeedbackSink
from cmaas.envelope.header import MESSAGE_ID
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE

__all__ = ["FeedbackHandlers"]

log = logging.getLogger(__name__)

_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"


class FeedbackHandlers:
    """Reads feedback off a component's stream and hands it to every subscribed sink."""

    def __init__(self, xmpp: BaseXMPP) -> None:
        self._xmpp = xmpp
        self._sinks: list[FeedbackSink] = []

    def subscribe(self, sink: FeedbackSink) -> None:
        """Hand feedback to ``sink``, after the ones subscribed before it."""
        self._sinks.append(sink)

    def attach(self) -> None:
        ns = self._xmpp.default_ns
        for name, path, handler in (
            ("receipt", f"{{{ns}}}message/{{{_RECEIPTS}}}received", self._received),
            ("marker", f"{{{ns}}}message/{{{_MARKERS}}}displayed", self._displayed),
        ):
            self._xmpp.register_handler(
                CoroutineCallback(f"cmaas {name}", MatchXPath(path), handler)  # type: ignore[arg-type]
            )
        self._xmpp.add_event_handler("message_error", self._bounced)

    async def _received(self, message: Message) -> None:
        if message["type"] == "error":
            return
        element = message.xml.find(f"{{{_RECEIPTS}}}received")
        await self._hand_on(
            FeedbackKind.DELIVERED, message, element.get("id", "") if element is not None else ""
        )

    async def _displayed(self, message: Message) -> None:
        if message["type"] == "error":
            return
        await self._hand_on(FeedbackKind.DISPLAYED, message, message["displayed"]["id"])

    async def _bounced(self, message: Message) -> None:
        await self._hand_on(
            FeedbackKind.BOUNCED, message, message["id"], message["error"]["condition"] or ""
        )

    async def _hand_on(
        self, kind: FeedbackKind, message: Message, message_id: str, condition: str = ""
    ) -> None:
        app_jid = message["to"]
        if not app_jid.user or not MESSAGE_ID.fullmatch(message_id or ""):
            log.debug("ignored %s without an app JID or a valid message id", kind.value)
            return
        feedback = Feedback(
            kind,
            str(app_jid.bare),
            str(message["from"]),
            message_id,
            condition,
            "" if kind is FeedbackKind.BOUNCED else _device(message),
        )
        log.info(
            "%s: message %s from %s (%s)%s",
            kind.value,
            message_id,
            feedback.app_jid,
            feedback.sender,
            f": {condition}" if condition else "",
        )
        for sink in self._sinks:
            await sink.report(feedback)


def _device(message: Message) -> str:
    tag = message.xml.find(f"{{{DEVICE_NAMESPACE}}}device")
    announced = tag.get("id", "") if tag is not None else ""
    if announced.isascii() and announced.isdigit() and len(announced) <= 10:
        return announced
    return str(message["from"].resource)[:128]
