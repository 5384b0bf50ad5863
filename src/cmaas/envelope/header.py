"""The envelope header: who sent what kind of message to whom, and until when.

Its canonical JSON bytes are the payload's AEAD associated data and part of what the
app signs, so none of it can change in transit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cmaas.envelope.bundle import MAX_JID_LENGTH
from cmaas.envelope.content import KINDS, Kind
from cmaas.envelope.encoding import MAX_SAFE_INTEGER, Fields, canonical_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.lifecycle import Priority

__all__ = [
    "MAX_LIFETIME_MS",
    "MESSAGE_ID",
    "Header",
]

MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000
MAX_AUTO_DELETE_S = 365 * 24 * 3600
MESSAGE_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
"""What a message id may be: also the stanza id the gateway writes and reads back."""
_REQUIRED = frozenset(
    {"v", "message_id", "app", "to", "created_ms", "expires_ms", "kind", "priority"}
)
_OPTIONAL = frozenset({"auto_delete_s"})
_PRIORITY_CHOICES = tuple(priority.value for priority in Priority)


@dataclass(frozen=True, slots=True)
class Header:
    """Raises (constructor): MalformedEncoding: A field is out of bounds."""

    message_id: str
    app: str
    to: str
    created_ms: int
    expires_ms: int
    kind: Kind
    priority: Priority
    auto_delete_s: int | None = None
    # canonical() once computed: the payload's associated data and the signed part share it.
    _canonical: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not MESSAGE_ID.fullmatch(self.message_id):
            raise MalformedEncoding("header.message_id must be 1 to 128 of A-Z a-z 0-9 . _ : ~ -")
        for name, jid in (("app", self.app), ("to", self.to)):
            if "@" not in jid or "/" in jid or len(jid) > MAX_JID_LENGTH:
                raise MalformedEncoding(f"header.{name} must be a bare JID")
        if not 0 <= self.created_ms < self.expires_ms <= MAX_SAFE_INTEGER:
            raise MalformedEncoding("header.expires_ms must come after header.created_ms")
        if self.expires_ms - self.created_ms > MAX_LIFETIME_MS:
            raise MalformedEncoding("an envelope may live at most 30 days")
        if self.kind not in KINDS or not isinstance(self.priority, Priority):
            raise MalformedEncoding("header.kind or header.priority is unknown")
        if self.auto_delete_s is not None and not 1 <= self.auto_delete_s <= MAX_AUTO_DELETE_S:
            raise MalformedEncoding("header.auto_delete_s must be 1 s to a year")

    def to_json(self) -> dict[str, object]:
        value: dict[str, object] = {
            "v": 1,
            "message_id": self.message_id,
            "app": self.app,
            "to": self.to,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "kind": self.kind,
            "priority": self.priority.value,
        }
        if self.auto_delete_s is not None:
            value["auto_delete_s"] = self.auto_delete_s
        return value

    def canonical(self) -> bytes:
        """The header's canonical bytes: the payload's associated data.

        Raises: MalformedEncoding: A JID holds a lone surrogate.
        """
        canonical = self._canonical
        if canonical is None:
            canonical = canonical_json(self.to_json())
            object.__setattr__(self, "_canonical", canonical)
        return canonical

    @classmethod
    def from_json(cls, value: object) -> Header:
        """Raises: MalformedEncoding: A field is missing, unknown or out of bounds."""
        fields = Fields(value, "header", _REQUIRED, _OPTIONAL)
        fields.integer("v", low=1, high=1)
        kind: Kind = fields.choice("kind", KINDS)  # type: ignore[assignment]
        priority = Priority.named(fields.choice("priority", _PRIORITY_CHOICES))
        assert priority is not None  # one of the choices
        return cls(
            message_id=fields.text("message_id", max_length=128),
            app=fields.text("app", max_length=MAX_JID_LENGTH),
            to=fields.text("to", max_length=MAX_JID_LENGTH),
            created_ms=fields.integer("created_ms", low=0, high=MAX_SAFE_INTEGER),
            expires_ms=fields.integer("expires_ms", low=0, high=MAX_SAFE_INTEGER),
            kind=kind,
            priority=priority,
            auto_delete_s=(
                fields.integer("auto_delete_s", low=1, high=MAX_AUTO_DELETE_S)
                if fields.has("auto_delete_s")
                else None
            ),
        )
