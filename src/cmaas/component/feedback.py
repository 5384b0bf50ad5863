"""What comes back from devices and servers about sealed messages.

Receipts (XEP-0184), displayed markers (XEP-0333) and bounces addressed to app JIDs
become :class:`~cmaas.delivery.tracker.Feedback` handed to the delivery engine's
:class:`~cmaas.delivery.tracker.FeedbackSink`. These handlers only translate: they check
the form and decide nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from slixmpp import Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.delivery.tracker import Feedback, FeedbackKind, FeedbackSink
from cmaas.envelope.header import MESSAGE_ID
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE

__all__ = ["FEEDBACK_HIGH_WATER", "FeedbackHandlers"]

log = logging.getLogger(__name__)

_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"

FEEDBACK_HIGH_WATER = 512
"""Feedback stanzas handled at once above which the stream is not read. Each holds its
parsed stanza until the store has recorded it; when the store falls behind the server
(the drain after an outage, with submissions beside it), thousands piled up and the
gateway's peak memory grew by tens of megabytes."""


class FeedbackHandlers:
    """Reads feedback off a component's stream and hands it to every subscribed sink.

    Args:
        high_water: Feedback in progress at which ``on_backlog(True)`` is called: the
            stream should stop being read. ``on_backlog(False)`` follows once half
            of it is done.
        on_backlog: Told when the feedback in progress crosses the marks.
    """

    def __init__(
        self,
        xmpp: BaseXMPP,
        *,
        high_water: int = FEEDBACK_HIGH_WATER,
        on_backlog: Callable[[bool], None] | None = None,
    ) -> None:
        self._xmpp = xmpp
        self._sinks: list[FeedbackSink] = []
        self._high_water = high_water
        self._low_water = high_water // 2
        self._on_backlog = on_backlog
        self._in_progress = 0
        self._backlogged = False

    @property
    def in_progress(self) -> int:
        """Feedback stanzas read and not yet handed on to every sink."""
        return self._in_progress

    @property
    def backlogged(self) -> bool:
        """Whether the feedback in progress reached the high-water mark and has not
        yet fallen to half of it."""
        return self._backlogged

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
        self._in_progress += 1
        if not self._backlogged and self._in_progress >= self._high_water:
            self._backlogged = True
            if self._on_backlog is not None:
                self._on_backlog(True)
        try:
            await self._translate(kind, message, message_id, condition)
        finally:
            self._in_progress -= 1
            if self._backlogged and self._in_progress <= self._low_water:
                self._backlogged = False
                if self._on_backlog is not None:
                    self._on_backlog(False)

    async def _translate(
        self, kind: FeedbackKind, message: Message, message_id: str, condition: str
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
