"""A message's lifecycle: its priority, its statuses and the rules that move it.

Pure: no storage and no network. A message store calls :func:`transition` inside the
transaction that records a change, so every storage backend applies the same rules:

- a message's own status only moves forward (``accepted`` → ``dispatched`` →
  ``delivered`` → ``read``), and ``failed`` or ``expired`` end only a pending message;
- a device's receipt or marker is recorded once per device and status, even when the
  message as a whole is already further on;
- only the message's recipient may report on it: anyone else's report is ignored;
- a receipt or marker counts only from a device the message is sealed to: ``delivered``
  means that a device able to open the message received it. Clients that acknowledge
  what they cannot open (Gajim, Conversations, Profanity answer every receipt request)
  do not move a message. A message that also carries a legacy-OMEMO element may be
  reported on by any resource that names no CMaaS device: OMEMO clients' receipts carry
  no device id, so for them ``delivered`` means that a client of the person received it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from cmaas.values import value_class

__all__ = [
    "OMEMO_RESOURCES",
    "MessageStatus",
    "Priority",
    "StatusChange",
    "Transition",
    "transition",
]


OMEMO_RESOURCES = "omemo"
"""In a message's ``sealed_to``: it carries a legacy-OMEMO element, so any resource that
names no CMaaS device may report on it. OMEMO clients' receipts and markers carry no
device id; their resource (never all digits for the clients known) stands for it."""


def _omemo_resource(device: str) -> bool:
    # A CMaaS device names itself by its numeric id; a resource name is anything else.
    return not (device.isascii() and device.isdigit())


class Priority(enum.StrEnum):
    """Delivery classes, written as their value on the wire and in envelopes. OTPs ride
    ``HIGH``; a lower :attr:`rank` is dispatched first."""

    HIGH = "high"
    NORMAL = "normal"
    BULK = "bulk"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for bulk: the dispatch order, and the stored form."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        """Raises: ValueError: Not 0, 1 or 2."""
        for priority, value in _PRIORITY_RANK.items():
            if value == rank:
                return priority
        raise ValueError(f"no priority ranks {rank}")

    @staticmethod
    def ranked(priorities: Iterable[Priority]) -> list[Priority]:
        """``priorities`` in dispatch order."""
        return sorted(priorities, key=lambda priority: priority.rank)

    @classmethod
    def named(cls, value: object) -> Priority | None:
        """The priority written as ``value``, or ``None``: a dictionary lookup, where
        calling or iterating the class costs a microsecond per message admitted."""
        return _PRIORITY_BY_VALUE.get(value) if isinstance(value, str) else None

    @classmethod
    def choices(cls) -> str:
        """``high, normal or bulk``: how a refusal names the valid values."""
        names = [priority.value for priority in cls]
        return f"{', '.join(names[:-1])} or {names[-1]}"


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.BULK: 2}
_PRIORITY_BY_VALUE = {priority.value: priority for priority in Priority}


class MessageStatus(enum.StrEnum):
    """Where a message stands; see the module's rules for how it moves."""

    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def rank(self) -> int:
        """Later statuses rank higher; the two failures end any pending message."""
        return _STATUS_RANK[self]

    @property
    def pending(self) -> bool:
        """Not yet delivered, failed or expired: the outbox still answers for it."""
        return self in (MessageStatus.ACCEPTED, MessageStatus.DISPATCHED)

    @property
    def final_failure(self) -> bool:
        return self in (MessageStatus.FAILED, MessageStatus.EXPIRED)


_STATUS_RANK = {
    MessageStatus.ACCEPTED: 0,
    MessageStatus.DISPATCHED: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
    MessageStatus.FAILED: 4,
    MessageStatus.EXPIRED: 4,
}


@value_class
class StatusChange:
    """Something that happened to a message, to be recorded if it moves it forward.

    Attributes:
        reporter: The bare JID that reported it (a receipt's or marker's sender); it
            must be the message's recipient, else the change is ignored. ``None`` for
            the gateway's own observations.
        device: Where it applies: the reporting device, or empty for the message.
    """

    app_id: str
    message_id: str
    status: MessageStatus
    at_ms: int
    device: str = ""
    detail: str = ""
    reporter: str | None = None


@value_class
class Transition:
    """What an accepted change does: an event is recorded for it, and the message's own
    status becomes :attr:`status` (when :attr:`moves`) or stays as it was."""

    status: MessageStatus
    moves: bool


def transition(
    current: MessageStatus,
    recipient_jid: str | None,
    sealed_to: frozenset[str] | None,
    change: StatusChange,
    reported: Callable[[str, MessageStatus], bool],
) -> Transition | None:
    """Apply the lifecycle's rules to one change of a stored message.

    Args:
        current: The message's status in the store now.
        recipient_jid: The message's resolved recipient.
        sealed_to: The device ids the envelope is sealed to, with
            :data:`OMEMO_RESOURCES` when the message carries an OMEMO element; ``None``
            when unknown (messages stored before they were recorded), and then any
            device counts.
        reported: Whether a device already reported a status (asked only for a
            device's change, so a store reads its history only then).

    Returns: the transition to record, or ``None`` when the change is to be ignored.
    """
    if change.reporter is not None and change.reporter != recipient_jid:
        return None
    new = change.status
    if new.final_failure:
        if not current.pending:
            return None
    elif change.device:
        if (
            sealed_to is not None
            and change.device not in sealed_to
            and not (OMEMO_RESOURCES in sealed_to and _omemo_resource(change.device))
        ):
            return None
        if current.final_failure or reported(change.device, new):
            return None
    elif new.rank <= current.rank or new in (MessageStatus.DELIVERED, MessageStatus.READ):
        # Delivered and read are a device's to report, never the message's alone.
        return None
    moves = new.rank > current.rank
    return Transition(new if moves else current, moves)
