"""Plain data the keystore stores and returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cmaas import wire
from cmaas.identifiers import IpNetwork
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.values import value_class

__all__ = [
    "NOTICES_CONSUMER",
    "AdhocSession",
    "AdhocSessionBounds",
    "AdhocSessionRefusal",
    "App",
    "AppChanges",
    "AppCounters",
    "AuthenticatedApp",
    "CredentialInfo",
    "CursorState",
    "DeviceKeys",
    "DevicePublication",
    "DeviceRecord",
    "DirectoryEntry",
    "IssuedCredentials",
    "KeyTake",
    "MessageRecord",
    "NewApp",
    "NewMessage",
    "OutboxEntry",
    "Plan",
    "PrekeyAllowance",
    "RequestNonce",
    "SealedPayload",
    "StatusEvent",
    "StoredPrekey",
]


@dataclass(frozen=True, slots=True)
class Plan:
    """A rate plan. ``daily_quota`` of ``None`` means no daily cap."""

    name: str
    sustained_per_second: float
    burst: int
    daily_quota: int | None
    priorities: frozenset[Priority]


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """What may be shown about one credential set: never the secrets."""

    credential_id: str
    created_at: int
    not_after: int | None


@dataclass(frozen=True, slots=True)
class App:
    """A registered app account as stored now."""

    app_id: str
    client_id: str
    display_name: str
    plan: str
    callback_url: str | None
    suspended: bool
    networks: tuple[IpNetwork, ...]
    jids: tuple[str, ...]
    credentials: tuple[CredentialInfo, ...]
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class NewApp:
    """A validated request to create an app."""

    app_id: str
    display_name: str
    plan: str
    callback_url: str | None = None
    networks: tuple[IpNetwork, ...] = ()
    jids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppChanges:
    """A validated partial update; ``None`` leaves a field as it is."""

    display_name: str | None = None
    plan: str | None = None
    callback_url: str | None = None
    clear_callback_url: bool = False
    networks: tuple[IpNetwork, ...] | None = None
    jids: tuple[str, ...] | None = None
    suspended: bool | None = None


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """Freshly issued secrets, shown to the operator once and never stored in clear."""

    client_id: str
    client_secret: str = field(repr=False)
    hmac_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthenticatedApp:
    """The outcome of a successful client-id/secret check."""

    app: App
    hmac_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppCounters:
    """Live counters shown by ``app-show``."""

    messages_by_status: dict[str, int]
    submitted_today: int


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """An email or E.164 number bound to a JID."""

    address: str
    kind: str
    jid: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class StoredPrekey:
    """A signed or one-time prekey, as checked by the caller before storing.

    Attributes:
        key_id: 1 to 2**31 - 1, unique among the device's prekeys.
        public_key: 65-byte uncompressed P-256 point.
        signature: DER ECDSA signature over the public key by the identity key.
    """

    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class DevicePublication:
    """A device's keys as it publishes them: first time, or a refresh.

    Attributes:
        jid: The owner's bare JID.
        device_id: 1 to 2**31 - 1.
        identity_key: Fixed for the life of the device id.
        suites: Cipher suites the device speaks, none containing a comma.
        signed_prekey: Replaces the stored one (rotation).
        one_time_prekeys: Added to the pool.
        label: ``None`` keeps the stored label.
    """

    jid: str
    device_id: int
    identity_key: bytes
    suites: tuple[str, ...]
    signed_prekey: StoredPrekey
    one_time_prekeys: tuple[StoredPrekey, ...]
    label: str | None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device as stored now. ``revoked_at`` is set once the device is revoked."""

    jid: str
    device_id: int
    identity_key: bytes
    suites: tuple[str, ...]
    signed_prekey: StoredPrekey
    label: str | None
    created_at: int
    updated_at: int
    revoked_at: int | None
    prekeys_left: int


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """One device's keys as handed to a sender.

    Attributes:
        one_time_prekey: Now removed from the pool; ``None`` when the pool was empty,
            in which case the sender uses the signed prekey alone.
        prekeys_left: The pool's size after this take.
    """

    jid: str
    device_id: int
    identity_key: bytes
    suites: tuple[str, ...]
    signed_prekey: StoredPrekey
    one_time_prekey: StoredPrekey | None
    prekeys_left: int


@dataclass(frozen=True, slots=True)
class PrekeyAllowance:
    """How many one-time prekeys of each device one app may take per window.

    Attributes:
        app_id: The app that looks the keys up.
        per_device: One-time prekeys it may take from one device within a window;
            past that, its lookups carry the signed prekey alone.
        window_s: The window's length; it starts with the first hand-out.
    """

    app_id: str
    per_device: int
    window_s: int


@dataclass(frozen=True, slots=True)
class KeyTake:
    """The keys of every active device of a JID, taken at once.

    Attributes:
        devices: One entry per active device, oldest device first.
        running_low: Those of ``devices`` whose pool is below the low-water mark and
            whose owner is to be told now; each is reported once until it publishes
            more one-time prekeys.
    """

    devices: tuple[DeviceKeys, ...]
    running_low: tuple[DeviceKeys, ...]


@value_class
class NewMessage:
    """A sealed message admitted for storage.

    Attributes:
        recipient: As submitted: a JID, an email or an E.164 number.
        recipient_jid: The resolved bare JID, or ``None`` with ``failure`` set.
        request_sha256: Digest of the canonical request, for idempotent retries.
        envelope: The sealed envelope's JSON text exactly as the app submitted it, or
            None for a message sealed with legacy OMEMO only.
        omemo: The legacy-OMEMO ``<encrypted/>`` element's XML text, or None.
        failure: Why it cannot be delivered (unknown recipient, no device): it is
            stored, then failed at once, so the app sees the reason as a status.
    """

    app_id: str
    message_id: str
    recipient: str
    recipient_jid: str | None
    priority: Priority
    request_sha256: bytes
    envelope: bytes | None = field(repr=False)
    expires_ms: int
    failure: str | None = None
    sealed_to: tuple[int, ...] = ()
    """The device ids the envelope holds a key for: receipts and markers count only
    from these (and, with ``omemo``, from resources that name no CMaaS device)."""
    omemo: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RequestNonce:
    """A signed request's nonce, to be claimed: refused while a claim of it by the same
    client is unexpired.

    Attributes:
        expires_at: Unix seconds from which the nonce may be claimed again.
        now: Unix seconds as the request was checked.
    """

    client_id: str
    nonce: str
    expires_at: int
    now: int


@value_class
class OutboxEntry:
    """What the dispatcher needs of a pending message besides what it writes. Read back
    with the envelope at the message's turn; the queues and the resend window keep only
    its sequence number."""

    seq: int
    app_id: str
    message_id: str
    recipient_jid: str
    priority: Priority
    expires_ms: int


@value_class
class SealedPayload:
    """What the dispatcher writes for one pending message: its envelope's JSON text, its
    legacy-OMEMO ``<encrypted/>`` element's XML text, or both; with the message's outbox
    entry, which its queue keeps only the sequence number of."""

    entry: OutboxEntry
    envelope: bytes | None = field(repr=False)
    omemo: bytes | None = field(repr=False)


@value_class
class MessageRecord:
    """A stored message as it stands now (never its envelope)."""

    seq: int
    app_id: str
    message_id: str
    recipient: str
    recipient_jid: str | None
    priority: Priority
    status: MessageStatus
    detail: str
    expires_ms: int
    created_ms: int
    updated_ms: int
    duplicate: bool = False
    """Set on the answer to a retried submission: it was stored before."""


@value_class
class StatusEvent:
    """One recorded status event of an app's message (``seq``: the message's sequence
    number in this gateway's store)."""

    event_id: int
    seq: int
    app_id: str
    message_id: str
    status: MessageStatus
    at_ms: int
    device: str
    detail: str

    def wire(self) -> wire.StatusEvent:
        """As apps receive it: without the app, which the channel already names."""
        return wire.StatusEvent(
            self.event_id, self.message_id, self.status, self.at_ms, self.device, self.detail
        )


# The event consumer that sends status notices to an app's bound JIDs. Binding the first
# JID of an app moves this cursor to the app's latest event, so notices start from then.
NOTICES_CONSUMER = "xmpp"


@dataclass(frozen=True, slots=True)
class CursorState:
    """How far one consumer has delivered one app's events."""

    app_id: str
    event_id: int
    failures: int
    last_error: str


@dataclass(frozen=True, slots=True)
class Takeover:
    """What an instance took over from dead instances (and from nobody: messages
    stored before instances had owners) in one transaction."""

    fenced: list[int]
    """The epochs it fenced; empty when another instance was first."""
    accepted: list[OutboxEntry]
    """Messages never dispatched, oldest first."""
    resend: list[OutboxEntry]
    """Messages dispatched within the resend window of their owner's last dispatch,
    oldest first: they may have been lost with its link."""
    last_fenced_ms: int | None
    """When any instance last fenced another (``None``: never). A dead instance's link
    may have taken receipts for every instance's messages with it."""


@dataclass(frozen=True, slots=True)
class AdhocSessionBounds:
    """Bounds on open ad-hoc sessions, in force when one opens and at each step.

    Attributes:
        idle_ms: A session ends this long after its last submitted form.
        lifetime_ms: A session ends this long after it opened, however busy it is.
        per_account: Open sessions of one bare JID, across its resources.
        per_class: Open sessions of the commands of the access class of the one that
            opens, all requesters together.
    """

    idle_ms: int
    lifetime_ms: int
    per_account: int = 0
    per_class: int = 0


@dataclass(frozen=True, slots=True)
class AdhocSession:
    """An open ad-hoc session, claimed for its next step.

    Attributes:
        step: The command's step whose form the session waits for.
        state: What the command keeps between its steps, as JSON text.
    """

    owner: str
    node: str
    step: str
    state: str


class AdhocSessionRefusal(enum.Enum):
    """Why a session cannot take a step."""

    UNKNOWN = "unknown"
    """No such session, or one of its steps is running."""
    FOREIGN = "foreign"
    """Another full JID opened it; nothing about it was changed."""
    EXPIRED = "expired"
    """Past its idle or lifetime bound; it is deleted."""
    OTHER_NODE = "other-node"
    """It belongs to another command."""
