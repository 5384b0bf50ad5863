"""The keystore's async interface: what the gateway needs from storage, nothing more."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from cmaas.keystore.blobs import EXPIRE_BYTES
from cmaas.keystore.errors import MessageConflict, QuotaExhausted
from cmaas.keystore.models import (
    AdhocSession,
    AdhocSessionBounds,
    AdhocSessionRefusal,
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    CursorState,
    DevicePublication,
    DeviceRecord,
    DirectoryEntry,
    IssuedCredentials,
    KeyTake,
    MessageRecord,
    NewApp,
    NewMessage,
    OutboxEntry,
    Plan,
    PrekeyAllowance,
    RequestNonce,
    SealedPayload,
    StatusEvent,
    Takeover,
)
from cmaas.lifecycle import (
    Priority,
    StatusChange,
)
from cmaas.token_bucket import Took
from cmaas.wire import OmemoBundle, OmemoInbound

__all__ = [
    "AdhocSessionStore",
    "BlobStore",
    "DeviceStore",
    "Keystore",
    "MessageStore",
    "OmemoStore",
    "RateStore",
]


class DeviceStore(Protocol):
    """Storage of devices' identity keys, signed prekeys and one-time prekey pools.

    It stores bytes the caller has already validated; it does no cryptography.
    """

    async def publish(
        self, publication: DevicePublication, *, max_devices: int, max_prekeys: int
    ) -> DeviceRecord:
        """Store a new device, or refresh a known one's keys, all or nothing.

        A refresh replaces the signed prekey, adds the one-time prekeys to the pool,
        and replaces the label unless it is ``None``.

        Raises:
            ValueError: An id out of range, or a suite name that is empty or has a comma.
            DeviceRevoked: The device id was revoked for this JID.
            IdentityKeyMismatch: The device id is stored with another identity key.
            TooManyDevices: A new device would exceed ``max_devices`` active devices.
            PrekeyIdConflict: A one-time prekey id is already in the pool, given
                twice, or equal to the signed prekey's id.
            PrekeyPoolFull: The pool would exceed ``max_prekeys`` one-time prekeys.
        """
        ...

    async def list(self, jid: str) -> Sequence[DeviceRecord]:
        """The JID's devices, revoked ones included, oldest first."""
        ...

    async def get(self, jid: str, device_id: int) -> DeviceRecord:
        """Raises: DeviceNotFound."""
        ...

    async def revoke(
        self, jid: str, device_id: int, *, keep_revoked: int | None = None
    ) -> DeviceRecord:
        """Revoke a device; its id is not accepted again for this JID while the device
        is among the ``keep_revoked`` most recently revoked ones (all when ``None``).

        Raises:
            DeviceNotFound: The JID has no such device.
            DeviceRevoked: The device is revoked already.
        """
        ...

    async def take(
        self, jid: str, *, low_water: int, allowance: PrekeyAllowance | None = None
    ) -> KeyTake:
        """The keys of every active device of the JID, each with one one-time prekey
        unless the pool is empty or ``allowance``'s app has had its share of it.

        A one-time prekey is handed out at most once, even to concurrent callers in
        other processes.
        """
        ...


class OmemoStore(Protocol):
    """Apps' own legacy OMEMO devices and bundles (public keys only), which the gateway
    serves as the app JIDs' PEP nodes.

    :class:`~cmaas.keystore.omemo.SqlOmemoStore` documents each method.
    """

    async def publish(
        self, app_id: str, bundle: OmemoBundle, *, max_devices: int, max_prekeys: int
    ) -> bool:
        """Raises: PrekeyPoolFull, TooManyDevices, IdentityKeyMismatch."""
        ...

    async def retire(self, app_id: str, device_id: int) -> None:
        """Raises: DeviceNotFound."""
        ...

    async def device_ids(self, app_id: str) -> list[int]: ...

    async def bundle(self, app_id: str, device_id: int) -> OmemoBundle:
        """Raises: DeviceNotFound."""
        ...

    async def bundles(self, app_id: str) -> list[OmemoBundle]: ...

    async def add_inbound(
        self,
        app_id: str,
        sender: str,
        xml: bytes,
        received_ms: int,
        *,
        max_items: int,
        max_per_sender: int,
    ) -> int | None: ...

    async def inbound_after(self, app_id: str, after: int, limit: int) -> list[OmemoInbound]: ...

    async def purge_inbound(self, before_ms: int) -> int: ...


class BlobStore(Protocol):
    """Who holds which encrypted file blob, how big, until when, and its bytes.

    :class:`~cmaas.keystore.blobs.SqlBlobStore` documents each method.
    """

    @property
    def staging(self) -> Path: ...

    async def add(
        self,
        blob_id: str,
        app_id: str,
        size: int,
        now_ms: int,
        expires_ms: int,
        quota: int,
        max_count: int | None = None,
        *,
        content: Path | None = None,
    ) -> None:
        """Raises: QuotaExhausted."""
        ...

    async def size(self, blob_id: str, now_ms: int) -> int | None: ...

    def read(self, blob_id: str, size: int) -> AsyncGenerator[bytes, None]:
        """Raises: BlobMissing."""
        ...

    async def expire(
        self, now_ms: int, limit: int = 1000, max_bytes: int = EXPIRE_BYTES
    ) -> list[str]: ...


class RateStore(Protocol):
    """Token buckets in the database, shared by the instances on it.

    :class:`~cmaas.keystore.rates.SqlRateStore` documents each method.
    """

    async def take(self, key: str, rate: float, burst: int, wanted: int) -> Took: ...

    async def purge_full(self, limit: int = 5000) -> int: ...


class AdhocSessionStore(Protocol):
    """Open ad-hoc command sessions, shared by every gateway instance.

    :class:`~cmaas.keystore.adhoc.SqlAdhocSessions` documents each method.
    """

    async def open(
        self,
        session_id: str,
        session: AdhocSession,
        access: str,
        now_ms: int,
        bounds: AdhocSessionBounds,
    ) -> None:
        """Raises: AdhocSessionLimit."""
        ...

    async def claim(
        self, session_id: str, owner: str, node: str, now_ms: int, bounds: AdhocSessionBounds
    ) -> AdhocSession | AdhocSessionRefusal: ...

    async def save(self, session_id: str, step: str, state: str, active_ms: int | None) -> bool: ...

    async def end(self, session_id: str) -> None: ...

    async def forget(self, jid: str) -> int: ...

    async def purge(self, now_ms: int, bounds: AdhocSessionBounds) -> int: ...

    async def count(self) -> int: ...


class MessageStore(Protocol):
    """The durable outbox: messages, their status events, and consumers' cursors.

    :class:`~cmaas.keystore.messages.SqlMessageStore` documents each method.
    """

    def listen(self, listener: Callable[[Sequence[StatusEvent]], None]) -> None: ...

    @property
    def submit_slice(self) -> int | None: ...

    async def submit(
        self,
        messages: Sequence[NewMessage],
        *,
        daily_quota: int | None,
        owner: int | None = None,
        nonce: RequestNonce | None = None,
    ) -> list[MessageRecord | MessageConflict | QuotaExhausted]: ...

    async def register_instance(self, name: str, *, dead_after_ms: int | None = None) -> int: ...

    async def heartbeat(self, epoch: int) -> bool: ...

    async def release(self, epoch: int) -> int: ...

    async def purge_instances(self, before_ms: int) -> int: ...

    async def take_over(
        self, epoch: int, resend_window_ms: int, *, dead_after_ms: int | None
    ) -> Takeover: ...

    async def sealed(
        self, seqs: Sequence[int], *, owner: int | None = None
    ) -> dict[int, SealedPayload]: ...

    async def pending_entry(self, app_id: str, message_id: str) -> OutboxEntry | None: ...

    async def pending_entries(
        self, seqs: Sequence[int], *, owner: int | None = None
    ) -> list[OutboxEntry]: ...

    async def mark_dispatched(
        self, seqs: Sequence[int], at_ms: int, *, owner: int | None = None, urgent: bool = False
    ) -> list[StatusEvent]: ...

    async def record(
        self, changes: Sequence[StatusChange], *, urgent: bool = False
    ) -> list[StatusEvent]: ...

    async def expire_due(self, now_ms: int, limit: int = 1000) -> list[StatusEvent]: ...

    async def purge_finished(self, before_ms: int, limit: int = 5000) -> int: ...

    async def get(
        self, app_id: str, message_id: str
    ) -> tuple[MessageRecord, list[StatusEvent]]: ...

    async def events_after(self, app_id: str, after: int, limit: int) -> list[StatusEvent]: ...

    async def last_event_id(self) -> int: ...

    async def depth(self) -> dict[Priority, int]: ...

    async def cursors(self, consumer: str) -> list[CursorState]: ...

    async def save_cursor(
        self, consumer: str, state: CursorState, *, leader: int | None = None
    ) -> bool: ...

    async def take_lead(self, epoch: int) -> bool: ...

    async def leads(self, epoch: int) -> bool: ...

    async def resign(self, epoch: int) -> None: ...

    async def claim_nonce(self, nonce: RequestNonce) -> bool: ...

    async def nonce_seen(self, nonce: RequestNonce) -> bool: ...

    async def purge_nonces(self, now: int) -> int: ...


class Keystore(Protocol):
    """Storage of app accounts, plans and the directory.

    Every read goes to the database, so a change made by another process (the
    ``cmaas admin`` CLI, or another gateway instance) is seen by the next call.
    """

    async def close(self) -> None: ...

    @property
    def devices(self) -> DeviceStore:
        """Device keys, stored alongside the rest."""
        ...

    @property
    def omemo(self) -> OmemoStore:
        """Apps' own OMEMO devices, stored alongside the rest."""
        ...

    @property
    def messages(self) -> MessageStore:
        """The outbox, stored alongside the rest."""
        ...

    @property
    def blobs(self) -> BlobStore:
        """File blobs' owners, sizes and expiry, stored alongside the rest."""
        ...

    @property
    def rates(self) -> RateStore:
        """Rate buckets, stored alongside the rest (used where instances share them)."""
        ...

    @property
    def adhoc_sessions(self) -> AdhocSessionStore:
        """Open ad-hoc command sessions, stored alongside the rest."""
        ...

    async def set_plan(self, plan: Plan) -> Plan:
        """Create or replace a plan."""
        ...

    async def get_plan(self, name: str) -> Plan:
        """Raises: PlanNotFound."""
        ...

    async def list_plans(self) -> Sequence[Plan]: ...

    async def create_app(self, new_app: NewApp, credentials: IssuedCredentials) -> App:
        """Raises: AppAlreadyExists, PlanNotFound, JidAlreadyBound, ClientIdTaken."""
        ...

    async def get_app(self, app_id: str) -> App:
        """Raises: AppNotFound."""
        ...

    async def list_apps(self) -> Sequence[App]: ...

    async def update_app(self, app_id: str, changes: AppChanges) -> App:
        """Raises: AppNotFound, PlanNotFound, JidAlreadyBound."""
        ...

    async def rotate_credentials(
        self, app_id: str, credentials: IssuedCredentials, old_not_after: int
    ) -> App:
        """Add new credentials; existing ones end at ``old_not_after`` (unix seconds).

        Raises: AppNotFound.
        """
        ...

    async def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        """Raises: AuthenticationFailed."""
        ...

    async def hmac_keys(self, app_id: str) -> list[bytes]:
        """The live credentials' HMAC keys, newest first (it signs webhooks).

        Raises: AppNotFound.
        """
        ...

    async def add_signing_key(self, app_id: str, fingerprint: str, public_key: bytes) -> bool:
        """Raises: AppNotFound, TooManySigningKeys."""
        ...

    async def retire_signing_key(self, app_id: str, fingerprint: str) -> bool: ...

    async def signing_keys(self, app_id: str) -> dict[str, bytes]: ...

    async def app_for_jid(self, jid: str) -> str | None:
        """The app a bare JID is bound to, if any."""
        ...

    async def app_counters(self, app_id: str) -> AppCounters: ...

    async def set_directory(self, address: str, kind: str, jid: str) -> DirectoryEntry: ...

    async def remove_directory(self, address: str) -> bool:
        """Returns whether an entry was removed."""
        ...

    async def resolve_address(self, address: str) -> str | None: ...

    async def rewrap_hmac_keys(self) -> int:
        """Re-encrypt every stored HMAC key under the current master key.

        Returns: how many keys were re-encrypted.
        Raises: MasterKeyMismatch.
        """
        ...
