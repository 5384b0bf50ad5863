"""Messages on the wire: a submission, its result, a message's view and status events.

The same classes write and read these objects at the gateway (HTTP API, ad-hoc
commands, webhooks), in the client service (both transports, the daemon) and in the
tests, so a field means one thing everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from cmaas.envelope.header import MESSAGE_ID
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.values import value_class
from cmaas.wire.errors import WireError
from cmaas.wire.fields import ObjectReader
from cmaas.wire.omemo_message import MAX_OMEMO_MESSAGE_CHARS

__all__ = [
    "Accepted",
    "DeviceProgress",
    "EventsPage",
    "MessageView",
    "Refused",
    "StatusEvent",
    "Submission",
    "SubmissionResult",
    "submission_result",
]

MAX_RECIPIENT_LENGTH = 2047
_SUBMISSION_FIELDS = frozenset({"message_id", "to", "priority", "expires_at", "envelope", "omemo"})


def _status(reader: ObjectReader, key: str) -> MessageStatus:
    text = reader.text(key)
    try:
        return MessageStatus(text)
    except ValueError:
        raise WireError(f"{key} {text[:32]!r} is not a message status") from None


@value_class
class Submission:
    """One sealed message for the gateway (``POST /v1/messages``), in one suite or both.

    Attributes:
        to: The recipient as the app knows them: a JID, an email or an E.164 number.
        envelope: The sealed envelope's JSON text, exactly as sealed, for the
            recipient's CMaaS devices; None when it has none.
        expires_at: Unix seconds; when given it must match the envelope's expiry.
            Required without an envelope: it is then the message's expiry.
        omemo: The legacy-OMEMO ``<encrypted/>`` element as XML text, for the
            recipient's OMEMO devices; None when it has none.
    """

    message_id: str
    to: str
    envelope: str | None = field(repr=False)
    priority: Priority = Priority.NORMAL
    expires_at: int | None = None
    omemo: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        value: dict[str, object] = {
            "message_id": self.message_id,
            "to": self.to,
            "priority": self.priority.value,
        }
        if self.envelope is not None:
            value["envelope"] = self.envelope
        if self.expires_at is not None:
            value["expires_at"] = self.expires_at
        if self.omemo is not None:
            value["omemo"] = self.omemo
        return value

    @classmethod
    def from_json(cls, value: object) -> Submission:
        """Raises: WireError: The first problem found, in the order of the fields."""
        if not isinstance(value, dict):
            raise WireError("each message must be a JSON object")
        unknown = set(value) - _SUBMISSION_FIELDS
        if unknown:
            raise WireError(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
        message_id, to = value.get("message_id"), value.get("to")
        priority, expires_at = value.get("priority", "normal"), value.get("expires_at")
        envelope, omemo = value.get("envelope"), value.get("omemo")
        if not isinstance(message_id, str) or not MESSAGE_ID.fullmatch(message_id):
            raise WireError("message_id must be 1 to 128 of A-Z a-z 0-9 . _ : ~ -")
        if not isinstance(to, str) or not 0 < len(to) <= MAX_RECIPIENT_LENGTH:
            raise WireError("to must be a JID, an email address or an E.164 number")
        chosen = Priority.named(priority)
        if chosen is None:
            raise WireError(f"priority must be {Priority.choices()}")
        if expires_at is not None and (type(expires_at) is not int or expires_at <= 0):
            raise WireError("expires_at must be unix seconds")
        if envelope is None and omemo is None:
            raise WireError("a message needs an envelope, an omemo element, or both")
        if envelope is not None and (
            not isinstance(envelope, str) or not 0 < _utf8_length(envelope) <= MAX_ENVELOPE_BYTES
        ):
            raise WireError(
                "envelope must be the sealed envelope's JSON text,"
                f" at most {MAX_ENVELOPE_BYTES} bytes"
            )
        if omemo is not None and (
            not isinstance(omemo, str) or not 0 < len(omemo) <= MAX_OMEMO_MESSAGE_CHARS
        ):
            raise WireError(
                "omemo must be the legacy-OMEMO <encrypted/> element's XML text,"
                f" at most {MAX_OMEMO_MESSAGE_CHARS} characters"
            )
        if envelope is None and expires_at is None:
            raise WireError("expires_at is required for a message without an envelope")
        return cls(message_id, to, envelope, chosen, expires_at, omemo)

    def request_sha256(self) -> bytes:
        """A digest of the request as understood, so that a retry that spells out a
        default is the same request (idempotent retries compare it)."""
        normalised = {
            "message_id": self.message_id,
            "to": self.to,
            "priority": self.priority.value,
            "expires_at": self.expires_at,
            "envelope": self.envelope,
        }
        if self.omemo is not None:
            normalised["omemo"] = self.omemo
        return hashlib.sha256(_REQUEST_DIGEST.encode(normalised).encode()).digest()


def _utf8_length(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes; -1 when it has none (a lone surrogate,
    which a JSON body can spell as an escape)."""
    if text.isascii():  # known without a scan: its own length in UTF-8
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return -1


# json.dumps(value, sort_keys=True), without building an encoder for every call: the
# digests of messages already stored must stay the same.
_REQUEST_DIGEST = json.JSONEncoder(sort_keys=True)


@value_class
class Accepted:
    """The gateway stored the message (or had stored it: ``duplicate``)."""

    status_code: ClassVar[int] = 202

    message_id: str
    status: MessageStatus
    detail: str
    recipient_jid: str | None
    accepted_ms: int
    duplicate: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "status_code": self.status_code,
            "message_id": self.message_id,
            "status": self.status.value,
            "detail": self.detail,
            "recipient_jid": self.recipient_jid,
            "accepted_ms": self.accepted_ms,
            "duplicate": self.duplicate,
        }

    @classmethod
    def from_json(cls, value: object) -> Accepted:
        """Raises: WireError."""
        reader = ObjectReader(value, "result")
        return cls(
            message_id=reader.text("message_id"),
            status=_status(reader, "status"),
            detail=reader.optional_text("detail") or "",
            recipient_jid=reader.optional_text("recipient_jid") or None,
            accepted_ms=reader.integer("accepted_ms"),
            duplicate=reader.boolean("duplicate") if reader.has("duplicate") else False,
        )


@value_class
class Refused:
    """The gateway (or the client service, for a recipient it could not seal to)
    refused one message.

    Attributes:
        status_code: The HTTP status that answers it.
        error: The stable machine-readable code (``rate_limited``, ...).
        message_id: The submitted id, where the submission had one.
        retry_after: Whole seconds after which trying again may succeed.
    """

    status_code: int
    error: str
    detail: str
    message_id: str | None = None
    retry_after: int | None = None

    def to_json(self) -> dict[str, object]:
        value: dict[str, object] = {
            "status_code": self.status_code,
            "error": self.error,
            "detail": self.detail,
        }
        if self.message_id is not None:
            value["message_id"] = self.message_id
        if self.retry_after is not None:
            value["retry_after"] = self.retry_after
        return value

    @classmethod
    def from_json(cls, value: object) -> Refused:
        """Raises: WireError."""
        reader = ObjectReader(value, "result")
        return cls(
            status_code=reader.integer("status_code"),
            error=reader.text("error"),
            detail=reader.optional_text("detail") or "",
            message_id=reader.optional_text("message_id"),
            retry_after=reader.optional_integer("retry_after"),
        )


SubmissionResult = Accepted | Refused
"""Per message: stored, or why not."""


def submission_result(value: object) -> SubmissionResult:
    """Read one result of a submission.

    Raises: WireError.
    """
    if isinstance(value, dict) and value.get("status_code") == Accepted.status_code:
        return Accepted.from_json(value)
    return Refused.from_json(value)


@value_class
class StatusEvent:
    """One status event of a message, as apps receive it (long-poll, webhooks, notices).

    Attributes:
        event_id: The app's cursor: events come in increasing order.
        device: The reporting device, or empty for the message as a whole.
    """

    event_id: int
    message_id: str
    status: MessageStatus
    at_ms: int
    device: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "message_id": self.message_id,
            "status": self.status.value,
            "at_ms": self.at_ms,
            "device": self.device,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, value: object) -> StatusEvent:
        """Raises: WireError."""
        reader = ObjectReader(value, "event")
        return cls(
            event_id=reader.integer("event_id"),
            message_id=reader.text("message_id"),
            status=_status(reader, "status"),
            at_ms=reader.integer("at_ms"),
            device=reader.optional_text("device") or "",
            detail=reader.optional_text("detail") or "",
        )


@dataclass(frozen=True, slots=True)
class EventsPage:
    """``GET /v1/events``: events after a cursor, and the cursor to ask from next."""

    events: tuple[StatusEvent, ...]
    next: int

    def to_json(self) -> dict[str, object]:
        return {"events": [event.to_json() for event in self.events], "next": self.next}

    @classmethod
    def from_json(cls, value: object) -> EventsPage:
        """Raises: WireError."""
        reader = ObjectReader(value, "events page")
        events = tuple(StatusEvent.from_json(item) for item in reader.array("events"))
        return cls(events, reader.integer("next"))


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    """When one device first reported the message delivered and read."""

    delivered_ms: int | None = None
    read_ms: int | None = None

    def to_json(self) -> dict[str, int]:
        value = {}
        if self.delivered_ms is not None:
            value["delivered_ms"] = self.delivered_ms
        if self.read_ms is not None:
            value["read_ms"] = self.read_ms
        return value

    @classmethod
    def from_json(cls, value: object) -> DeviceProgress:
        """Raises: WireError."""
        reader = ObjectReader(value, "device")
        return cls(reader.optional_integer("delivered_ms"), reader.optional_integer("read_ms"))


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as apps see it: status, per-device progress and the whole history."""

    message_id: str
    status: MessageStatus
    detail: str
    to: str
    recipient_jid: str | None
    priority: Priority
    accepted_ms: int
    updated_ms: int
    expires_ms: int
    devices: Mapping[str, DeviceProgress]
    history: tuple[StatusEvent, ...]

    @staticmethod
    def progress(history: Sequence[StatusEvent]) -> dict[str, DeviceProgress]:
        """Each device's first ``delivered`` and ``read``, from a message's history."""
        seen: dict[str, dict[MessageStatus, int]] = {}
        for event in history:
            if event.device and event.status in (MessageStatus.DELIVERED, MessageStatus.READ):
                seen.setdefault(event.device, {}).setdefault(event.status, event.at_ms)
        return {
            device: DeviceProgress(
                times.get(MessageStatus.DELIVERED), times.get(MessageStatus.READ)
            )
            for device, times in seen.items()
        }

    def to_json(self) -> dict[str, object]:
        return {
            "message_id": self.message_id,
            "status": self.status.value,
            "detail": self.detail,
            "to": self.to,
            "recipient_jid": self.recipient_jid,
            "priority": self.priority.value,
            "accepted_ms": self.accepted_ms,
            "updated_ms": self.updated_ms,
            "expires_ms": self.expires_ms,
            "devices": {device: p.to_json() for device, p in self.devices.items()},
            "history": [event.to_json() for event in self.history],
        }

    @classmethod
    def from_json(cls, value: object) -> MessageView:
        """Raises: WireError."""
        reader = ObjectReader(value, "message")
        priority = Priority.named(reader.text("priority"))
        if priority is None:
            raise WireError(f"message.priority must be {Priority.choices()}")
        return cls(
            message_id=reader.text("message_id"),
            status=_status(reader, "status"),
            detail=reader.optional_text("detail") or "",
            to=reader.text("to"),
            recipient_jid=reader.optional_text("recipient_jid") or None,
            priority=priority,
            accepted_ms=reader.integer("accepted_ms"),
            updated_ms=reader.integer("updated_ms"),
            expires_ms=reader.integer("expires_ms"),
            devices={
                str(device): DeviceProgress.from_json(progress)
                for device, progress in reader.mapping("devices").items()
            },
            history=tuple(StatusEvent.from_json(item) for item in reader.array("history")),
        )
