"""What comes back from devices and servers about sealed messages.

Receipts (XEP-0184), displayed markers (XEP-0333) and bounces addressed to app JIDs
become named events carrying a :class:`Feedback`; the delivery engine turns them into
statuses. These handlers only translate: they check the form and decide nothing.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from slixmpp import JID, Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.delivery.tracker import StatusTracker
from cmaas.envelope.header import MESSAGE_ID
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE

__all__ = ["FEEDBACK_EVENTS", "Feedback", "FeedbackHandlers", "FeedbackKind", "track_feedback"]

log = logging.getLogger(__name__)

_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"


class FeedbackKind(enum.Enum):
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    BOUNCED = "bounced"


FEEDBACK_EVENTS = {kind: f"cmaas_{kind.value}" for kind in FeedbackKind}
"""The event each kind of feedback is emitted as, with a :class:`Feedback`."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """Attributes:
    app_jid: The app JID the message was sent from (the feedback's ``to``).
    sender: Who reports: the device's full JID, or the server for a bounce.
    message_id: The sealed message's id.
    condition: For a bounce, the stanza error condition.
    device: The CMaaS device id the reporter announced, else its XMPP resource.
    """

    kind: FeedbackKind
    app_jid: JID
    sender: JID
    message_id: str
    condition: str = ""
    device: str = ""


class FeedbackHandlers:
    """Registers the handlers on a component and emits :data:`FEEDBACK_EVENTS`."""

    def __init__(self, xmpp: BaseXMPP) -> None:
        self._xmpp = xmpp

    def attach(self) -> None:
        ns = self._xmpp.default_ns
        for name, path, handler in (
            ("receipt", f"{{{ns}}}message/{{{_RECEIPTS}}}received", self._received),
            ("marker", f"{{{ns}}}message/{{{_MARKERS}}}displayed", self._displayed),
        ):
            self._xmpp.register_handler(
                Callback(f"cmaas {name}", MatchXPath(path), handler)  # type: ignore[arg-type]
            )
        self._xmpp.add_event_handler("message_error", self._bounced)

    def _received(self, message: Message) -> None:
        if message["type"] == "error":
            return
        element = message.xml.find(f"{{{_RECEIPTS}}}received")
        self._emit(
            FeedbackKind.DELIVERED, message, element.get("id", "") if element is not None else ""
        )

    def _displayed(self, message: Message) -> None:
        if message["type"] == "error":
            return
        self._emit(FeedbackKind.DISPLAYED, message, message["displayed"]["id"])

    def _bounced(self, message: Message) -> None:
        self._emit(
            FeedbackKind.BOUNCED, message, message["id"], message["error"]["condition"] or ""
        )

    def _emit(
        self, kind: FeedbackKind, message: Message, message_id: str, condition: str = ""
    ) -> None:
        app_jid = message["to"]
        if not app_jid.user or not MESSAGE_ID.fullmatch(message_id or ""):
            log.debug("ignored %s without an app JID or a valid message id", kind.value)
            return
        feedback = Feedback(
            kind,
            JID(app_jid.bare),
            message["from"],
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
        self._xmpp.event(FEEDBACK_EVENTS[kind], feedback)


def track_feedback(xmpp: BaseXMPP, tracker: StatusTracker) -> None:
    """Hand every feedback event to the delivery engine's status tracker."""

    async def delivered(feedback: Feedback) -> None:
        await tracker.delivered(*_about(feedback), feedback.device)

    async def displayed(feedback: Feedback) -> None:
        await tracker.read(*_about(feedback), feedback.device)

    async def bounced(feedback: Feedback) -> None:
        await tracker.bounced(*_about(feedback), feedback.condition)

    for kind, handler in (
        (FeedbackKind.DELIVERED, delivered),
        (FeedbackKind.DISPLAYED, displayed),
        (FeedbackKind.BOUNCED, bounced),
    ):
        xmpp.add_event_handler(FEEDBACK_EVENTS[kind], handler)


def _about(feedback: Feedback) -> tuple[str, str, str]:
    """(app id, message id, the reporter's bare JID)."""
    return str(feedback.app_jid.user), feedback.message_id, str(feedback.sender.bare)


def _device(message: Message) -> str:
    tag = message.xml.find(f"{{{DEVICE_NAMESPACE}}}device")
    announced = tag.get("id", "") if tag is not None else ""
    if announced.isascii() and announced.isdigit() and len(announced) <= 10:
        return announced
    return str(message["from"].resource)[:128]
