"""Turning what devices and servers report about a message into its statuses.

The component translates receipts (XEP-0184), displayed markers (XEP-0333) and bounces
into :class:`Feedback` and hands each to a :class:`FeedbackSink`; the
:class:`StatusTracker` is the sink that records them, under the rules of
:mod:`cmaas.lifecycle`.

A bounce fails a message only when the IM server returns it for the account (from the
bare JID or a domain): the account does not exist, its server cannot be reached or
refuses the gateway. A copy returned by one of the user's clients (from a full JID)
counts against that client only, and a copy that could not be handed over for the
moment (``recipient-unavailable``, e.g. held by a session that hibernated under XEP-0198
until it timed out) is written again: the server then keeps it offline or hands it to
another client, so the person still gets it within the message's lifetime.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from cmaas.clock import now_ms
from cmaas.keystore import MessageStore
from cmaas.lifecycle import MessageStatus, StatusChange
from cmaas.values import value_class

__all__ = ["Feedback", "FeedbackKind", "FeedbackSink", "StatusTracker"]

log = logging.getLogger(__name__)

# Conditions a user's client or a hibernated session returns for a copy it could not
# take; the message itself may still reach the person.
_UNAVAILABLE = frozenset({"recipient-unavailable", "service-unavailable"})

# Bounce conditions that say the recipient account does not exist, put plainly.
_EXPLAINED = {
    "service-unavailable": "the recipient's account does not exist or refuses messages",
    "item-not-found": "the recipient's account does not exist",
    "remote-server-not-found": "the recipient's server cannot be reached",
    "not-allowed": "the recipient's server does not accept messages from this gateway",
    "forbidden": "the recipient's server does not accept messages from this gateway",
    "resource-constraint": "the recipient's offline storage is full",
}


class FeedbackKind(enum.Enum):
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    BOUNCED = "bounced"


@value_class
class Feedback:
    """One report about a sealed message, as the component read it off the wire.

    Attributes:
        app_jid: The bare app JID the message was sent from (the feedback's ``to``).
        sender: Who reports: the device's full JID, or the server for a bounce.
        message_id: The sealed message's id.
        condition: For a bounce, the stanza error condition.
        device: The CMaaS device id the reporter announced, else its XMPP resource.
    """

    kind: FeedbackKind
    app_jid: str
    sender: str
    message_id: str
    condition: str = ""
    device: str = ""

    @property
    def app_id(self) -> str:
        return self.app_jid.partition("@")[0]

    @property
    def reporter(self) -> str:
        """The sender's bare JID."""
        return self.sender.partition("/")[0]

    @property
    def resource(self) -> str:
        """The sender's resource, empty for a bare JID."""
        return self.sender.partition("/")[2]


class FeedbackSink(Protocol):
    """Where the component hands every piece of feedback it reads."""

    async def report(self, feedback: Feedback) -> None: ...

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        """As :meth:`report` for each, in order: what one read of the stream brought."""
        ...


class StatusTracker:
    """Records receipts (``delivered``), displayed markers (``read``) and bounces
    (``failed``) per device. Only the message's recipient may report on it: a report
    from anyone else is ignored by the store."""

    def __init__(
        self,
        store: MessageStore,
        resend: Callable[[str, str], Awaitable[bool]],
        clock_ms: Callable[[], int] = now_ms,
        *,
        urgent: Callable[[str, str], bool] | None = None,
    ) -> None:
        """Args:
        resend: Writes a pending message again (app id, message id); ``False`` when it
            will not (the message is no longer pending, or was resent often enough).
        urgent: Whether a message (app id, message id) is high-priority: what happens
            to it is recorded ahead of the other writes, so that an OTP's ``delivered``
            event reaches the app without waiting behind a drain's receipt updates.
        """
        self._store = store
        self._resend = resend
        self._clock_ms = clock_ms
        self._urgent = urgent

    async def report(self, feedback: Feedback) -> None:
        """Record the status ``feedback`` stands for, if it moves the message on."""
        await self.report_all((feedback,))

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        """Record the statuses ``feedbacks`` stand for: the urgent ones in one call of the
        store ahead of the other writes, the rest in one call after them."""
        urgent: list[StatusChange] = []
        ordinary: list[StatusChange] = []
        for feedback in feedbacks:
            change = await self._change(feedback)
            if change is None:
                continue
            if self._urgent is not None and self._urgent(change.app_id, change.message_id):
                urgent.append(change)
            else:
                ordinary.append(change)
        if urgent:
            await self._store.record(urgent, urgent=True)
        if ordinary:
            await self._store.record(ordinary)

    async def _change(self, feedback: Feedback) -> StatusChange | None:
        """The change ``feedback`` stands for; ``None`` for a copy returned by one client,
        which is handled here."""
        detail = ""
        if feedback.kind is FeedbackKind.BOUNCED:
            condition = feedback.condition or "undefined-condition"
            if feedback.resource or feedback.condition == "recipient-unavailable":
                await self._returned_copy(feedback, condition)
                return None
            status = MessageStatus.FAILED
            explained = _EXPLAINED.get(condition, "the IM server returned the message")
            detail = f"bounced by {feedback.sender}: {condition} ({explained})"
        elif feedback.kind is FeedbackKind.DISPLAYED:
            status = MessageStatus.READ
        else:
            status = MessageStatus.DELIVERED
        return StatusChange(
            feedback.app_id,
            feedback.message_id,
            status,
            self._clock_ms(),
            "" if feedback.kind is FeedbackKind.BOUNCED else feedback.device,
            detail,
            feedback.reporter,
        )

    async def _returned_copy(self, feedback: Feedback, condition: str) -> None:
        """One copy came back, not the message: try again where the person can get it."""
        resent = condition in _UNAVAILABLE and await self._resend(
            feedback.app_id, feedback.message_id
        )
        log.info(
            "message %s: a copy came back from %s (%s); %s",
            feedback.message_id,
            feedback.sender,
            condition,
            "written again" if resent else "not failed for it",
        )
