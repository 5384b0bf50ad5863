"""What comes back from devices and servers about sealed messages.

Receipts (XEP-0184), displayed markers (XEP-0333) and bounces addressed to app JIDs
become :class:`~cmaas.delivery.tracker.Feedback` handed to the delivery engine's
:class:`~cmaas.delivery.tracker.FeedbackSink`. These handlers only translate: they check
the form and decide nothing.

A receipt or marker of the usual shape is read straight off the parsed element
(:meth:`FeedbackHandlers.take`): while a backlog drains, one arrives per message sent,
and slixmpp's stanza objects and handler matching cost more than the rest of its
handling. Every other stanza, and any receipt or marker of another shape, goes the
usual way, through the handlers below; both ways make the same checks and hand on the
same feedback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from slixmpp import JID, InvalidJID, Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.delivery.tracker import Feedback, FeedbackKind, FeedbackSink
from cmaas.envelope.header import MESSAGE_ID
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE

__all__ = ["FEEDBACK_HIGH_WATER", "LEAN_COMPANIONS", "FeedbackHandlers"]

log = logging.getLogger(__name__)

_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"
_RECEIVED = f"{{{_RECEIPTS}}}received"
_DISPLAYED = f"{{{_MARKERS}}}displayed"
_DEVICE = f"{{{DEVICE_NAMESPACE}}}device"
_KINDS = {_RECEIVED: FeedbackKind.DELIVERED, _DISPLAYED: FeedbackKind.DISPLAYED}
LEAN_COMPANIONS = (
    _DEVICE,
    "{urn:xmpp:hints}store",
    "{urn:xmpp:hints}no-store",
    "{urn:xmpp:hints}no-copy",
    "{urn:xmpp:hints}no-permanent-store",
    "{urn:xmpp:sid:0}origin-id",
    "{urn:xmpp:sid:0}stanza-id",
    "{urn:xmpp:delay}delay",
)
"""The elements a receipt or marker may carry and still be read off the stream
directly: none of them is matched by another of the gateway's handlers (a unit test
checks this against every handler registered)."""

FEEDBACK_HIGH_WATER = 512
"""Feedback stanzas handled at once above which the stream is not read. Each holds its
parsed stanza until the store has recorded it; when the store falls behind the server
(the drain after an outage, with submissions beside it), thousands piled up and the
gateway's peak memory grew by tens of megabytes."""


class FeedbackHandlers:
    """Reads feedback off a component's stream and hands it to every subscribed sink.

    Args:
        high_water: Feedback in progress (read, not yet handed on to every sink, by
            either way) at which ``on_backlog(True)`` is called: the stream should stop
            being read. ``on_backlog(False)`` follows once half of it is done.
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
        self._message_tag = f"{{{xmpp.default_ns}}}message"
        # What the lean path took and has not handed on yet, with the stanzas to answer
        # should a sink fail; and its reports in flight (the loop keeps only weak
        # references to tasks).
        self._taken: list[tuple[Feedback, ET.Element]] = []
        self._reports: set[asyncio.Task[None]] = set()

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
            ("receipt", f"{{{ns}}}message/{_RECEIVED}", self._received),
            ("marker", f"{{{ns}}}message/{_DISPLAYED}", self._displayed),
        ):
            self._xmpp.register_handler(
                CoroutineCallback(f"cmaas {name}", MatchXPath(path), handler)  # type: ignore[arg-type]
            )
        self._xmpp.add_event_handler("message_error", self._bounced)

    def take(self, xml: ET.Element) -> bool:
        """Hand on a receipt or displayed marker straight from its parsed element, if it
        has the usual shape: one ``<received/>`` or ``<displayed/>``, nothing nested,
        beside it only :data:`LEAN_COMPANIONS`, not of type ``error``, with ``to`` and
        ``from`` valid JIDs. The checks and the feedback are the handlers' own; what is
        taken is handed on in one task per read of the stream, after what came before it
        (:meth:`flush`).

        Returns: ``False`` when ``xml`` is not such a message: it must go the usual way.
        """
        if xml.tag != self._message_tag or xml.get("type") == "error":
            return False
        report: ET.Element | None = None
        device: ET.Element | None = None
        for child in xml:
            if len(child):
                return False
            tag = child.tag
            if tag in _KINDS:
                if report is not None:
                    return False
                report = child
            elif tag == _DEVICE:
                # The first one counts, as for ``find``.
                device = device if device is not None else child
            elif tag not in LEAN_COMPANIONS:
                return False
        if report is None:
            return False
        try:
            app_jid = JID(xml.get("to", ""))
        except InvalidJID:
            return False
        kind = _KINDS[report.tag]
        message_id = report.get("id", "")
        if not _reportable(kind, app_jid, message_id):
            return True
        try:
            sender = JID(xml.get("from", ""))
        except InvalidJID:
            return False
        if not self._taken:
            self._xmpp.loop.call_soon(self.flush)
        self._taken.append((_feedback(kind, app_jid, sender, message_id, "", device), xml))
        self._started(1)
        return True

    def flush(self) -> None:
        """Start handing on what :meth:`take` took, all in one task (one per read of the
        stream, not one per receipt). Called before a stanza goes the usual way too, so
        that the sinks hear feedback in the stream's order."""
        if not self._taken:
            return
        taken, self._taken = self._taken, []
        task = asyncio.ensure_future(self._report_taken(taken))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report_taken(self, taken: list[tuple[Feedback, ET.Element]]) -> None:
        feedbacks = [feedback for feedback, _ in taken]
        for feedback in feedbacks:
            _log_feedback(feedback)
        try:
            for sink in self._sinks:
                await sink.report_all(feedbacks)
        except Exception as error:
            # The handlers' way: slixmpp answers each stanza with an error and logs.
            for _, xml in taken:
                Message(self._xmpp, xml, recv=True).exception(error)
        finally:
            self._finished(len(taken))

    async def _received(self, message: Message) -> None:
        if message["type"] == "error":
            return
        element = message.xml.find(_RECEIVED)
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
        if not _reportable(kind, app_jid, message_id):
            return
        self._started(1)
        try:
            await self._report(
                _feedback(
                    kind,
                    app_jid,
                    message["from"],
                    message_id,
                    condition,
                    message.xml.find(_DEVICE),
                )
            )
        finally:
            self._finished(1)

    def _started(self, count: int) -> None:
        self._in_progress += count
        if not self._backlogged and self._in_progress >= self._high_water:
            self._backlogged = True
            if self._on_backlog is not None:
                self._on_backlog(True)

    def _finished(self, count: int) -> None:
        self._in_progress -= count
        if self._backlogged and self._in_progress <= self._low_water:
            self._backlogged = False
            if self._on_backlog is not None:
                self._on_backlog(False)

    async def _report(self, feedback: Feedback) -> None:
        _log_feedback(feedback)
        for sink in self._sinks:
            await sink.report(feedback)


def _log_feedback(feedback: Feedback) -> None:
    log.info(
        "%s: message %s from %s (%s)%s",
        feedback.kind.value,
        feedback.message_id,
        feedback.app_jid,
        feedback.sender,
        f": {feedback.condition}" if feedback.condition else "",
    )


def _reportable(kind: FeedbackKind, app_jid: JID, message_id: str) -> bool:
    if not app_jid.user or not MESSAGE_ID.fullmatch(message_id or ""):
        log.debug("ignored %s without an app JID or a valid message id", kind.value)
        return False
    return True


def _feedback(
    kind: FeedbackKind,
    app_jid: JID,
    sender: JID,
    message_id: str,
    condition: str,
    device: ET.Element | None,
) -> Feedback:
    return Feedback(
        kind,
        str(app_jid.bare),
        str(sender),
        message_id,
        condition,
        "" if kind is FeedbackKind.BOUNCED else _device(device, sender),
    )


def _device(tag: ET.Element | None, sender: JID) -> str:
    """The device id the reporter announced, if well formed; else its resource."""
    announced = tag.get("id", "") if tag is not None else ""
    if announced.isascii() and announced.isdigit() and len(announced) <= 10:
        return announced
    return str(sender.resource)[:128]
