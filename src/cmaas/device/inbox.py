"""What a device does with a sealed message it received, decided without any I/O but its
own state files: the model for a device on another platform.

:meth:`Inbox.receive` takes what the message stanza carries (the envelope text, the bare
``from``, the ``id``) and the time, and runs the steps of docs/protocol.md sections 11
and 13 in their order:

1. (app JID, message id) recorded as shown: :class:`Duplicate`, acknowledge it again;
   the envelope is not opened (its one-time prekey is gone).
2. Open the envelope: form, pinned app key, app signature, sender and stanza id, the
   gateway's domain, recipient, device, expiry, prekey, decryption. The first failure is
   :class:`Refused`; for ``AppKeyChanged`` the new key is kept as an offer when the
   message's signature verifies under it.
3. Persist the deletion of the one-time prekey the message used.
4. A file message: :class:`FetchFile`. The caller downloads and checks the file, then
   calls :meth:`Inbox.file_fetched` or :meth:`Inbox.file_failed`.
5. Pin the app key on first contact, record the message as shown with its auto-delete
   time: :class:`Accepted`, show it and send its receipt.

The caller (:class:`~cmaas.device.client.DeviceClient`, over XMPP) does the network and
timer work each outcome asks for; the state (keyring, pinned app keys, messages shown)
changes only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cmaas.device.errors import DeviceError
from cmaas.device.pins import PinStore
from cmaas.device.seen import SeenMessages
from cmaas.envelope import (
    AppKeyChanged,
    Content,
    DeviceKeyring,
    EnvelopeError,
    FileContent,
    Header,
    OpenedMessage,
    SealedEnvelope,
    parse_public_key,
    verify,
)

__all__ = [
    "Accepted",
    "Duplicate",
    "FetchFile",
    "Inbox",
    "Outcome",
    "ReceivedMessage",
    "Refused",
    "RefusedMessage",
]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message that passed every check.

    Attributes:
        app_name: The app's display name, as the gateway describes its JID. The inbox
            knows no names and puts the app JID; ``DeviceClient`` asks the gateway.
        app_fingerprint: Of the app's signing key, pinned for ``app_jid``.
        newly_pinned: This message pinned the app's key (first contact).
        delete_at_ms: When auto-delete asks the message to disappear, if it does.
    """

    message_id: str
    app_jid: str
    app_name: str
    app_fingerprint: str
    header: Header
    content: Content
    newly_pinned: bool
    delete_at_ms: int | None
    saved_file: Path | None = None
    """For a file message: where the file was saved, after every check passed."""


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A message that failed a check; nothing of it was shown."""

    message_id: str
    sender: str
    error: EnvelopeError | DeviceError


@dataclass(frozen=True, slots=True)
class Accepted:
    """Every check passed and the message is recorded as shown: show ``message``, then
    send its receipt. When ``message.delete_at_ms`` is set, remove it from view then and
    call :meth:`Inbox.deleted`."""

    message: ReceivedMessage


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Shown before (the gateway resends when a receipt was lost): send the receipt
    again and show nothing."""

    message_id: str
    app_jid: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A check failed: show only the refusal and send no receipt.

    Attributes:
        offered_key: After ``AppKeyChanged``, the key the app now signs with when the
            message's signature verifies under it: kept as an offer
            (:meth:`PinStore.offers`) for the user to accept once they have checked its
            fingerprint with the app. None otherwise.
    """

    refusal: RefusedMessage
    offered_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class FetchFile:
    """A file message opened; its one-time prekey is already forgotten. Download and
    check ``content``'s file, then call :meth:`Inbox.file_fetched` or
    :meth:`Inbox.file_failed`. Nothing is pinned or recorded as shown until then.

    Attributes:
        first_contact: No key was pinned for the app when the message was opened.
    """

    message_id: str
    app_jid: str
    content: FileContent
    opened: OpenedMessage
    first_contact: bool


Outcome = Accepted | Duplicate | Refused | FetchFile


class Inbox:
    """Decides, for each message a device receives, what it shows and acknowledges.

    Args:
        keyring: The device's keys; a successful open forgets the one-time prekey used.
        pins: The app keys trusted per app JID, and keys offered since.
        seen: The messages shown, by (app JID, message id).
        gateway: The gateway's component domain, the only domain apps are on.
        save_keyring: Persists ``keyring``; raises what the key file raises.
    """

    def __init__(
        self,
        keyring: DeviceKeyring,
        *,
        pins: PinStore,
        seen: SeenMessages,
        gateway: str,
        save_keyring: Callable[[], None],
    ) -> None:
        self.keyring = keyring
        self.pins = pins
        self.seen = seen
        self.gateway = gateway
        self._save_keyring = save_keyring

    def receive(self, envelope: str, *, sender: str, message_id: str, now_ms: int) -> Outcome:
        """Decide what to do with one message.

        Args:
            envelope: The envelope JSON, the text of the stanza's ``<envelope/>``.
            sender: The stanza's bare ``from``.
            message_id: The stanza's ``id``.
            now_ms: The current time, Unix milliseconds.

        Raises:
            DeviceFileError: The pins or seen-messages file cannot be read or written,
                or ``save_keyring`` failed (``KeyFileError``).
        """
        if not self.seen.is_new(sender, message_id):
            return Duplicate(message_id, sender)
        pinned = self.pins.get(sender)
        try:
            opened = self.keyring.open(
                envelope,
                now_ms=now_ms,
                pinned_app_key=pinned,
                sender_jid=sender,
                stanza_id=message_id,
                app_domain=self.gateway,
            )
        except AppKeyChanged as error:
            offered = self._offer(sender, envelope, now_ms)
            return Refused(RefusedMessage(message_id, sender, error), offered)
        except EnvelopeError as error:
            return Refused(RefusedMessage(message_id, sender, error))
        # Forward secrecy: a device that crashes once the message is shown must not keep
        # the key that opens it.
        self._save_keyring()
        if isinstance(opened.content, FileContent):
            return FetchFile(message_id, sender, opened.content, opened, pinned is None)
        return self._accept(message_id, sender, opened, pinned is None, None, now_ms)

    def file_fetched(self, fetch: FetchFile, saved_file: Path, *, now_ms: int) -> Accepted:
        """Accept a file message whose file passed its checks and was saved at ``saved_file``.

        Raises:
            DeviceFileError: The pins or seen-messages file cannot be read or written.
        """
        return self._accept(
            fetch.message_id, fetch.app_jid, fetch.opened, fetch.first_contact, saved_file, now_ms
        )

    def file_failed(self, fetch: FetchFile, error: EnvelopeError | DeviceError) -> Refused:
        """Refuse a file message whose file could not be fetched or failed its checks.

        Its app key stays unpinned and the message unrecorded, as for any refusal.
        """
        return Refused(RefusedMessage(fetch.message_id, fetch.app_jid, error))

    def deleted(self, app_jid: str, message_id: str) -> None:
        """Note that a message's auto-delete time came and it left the view. It stays
        recorded as shown, so a resend is still a duplicate.

        Raises:
            ValueError: ``app_jid`` or ``message_id`` is out of range.
            DeviceFileError: The seen-messages file cannot be read or written.
        """
        self.seen.record(app_jid, message_id, auto_delete_at_ms=None)

    def _accept(
        self,
        message_id: str,
        app_jid: str,
        opened: OpenedMessage,
        first_contact: bool,
        saved_file: Path | None,
        now_ms: int,
    ) -> Accepted:
        newly_pinned = first_contact and self.pins.pin(app_jid, opened.app_key, now_ms)
        header = opened.header
        delete_at = now_ms + header.auto_delete_s * 1000 if header.auto_delete_s else None
        self.seen.record(app_jid, message_id, auto_delete_at_ms=delete_at)
        return Accepted(
            ReceivedMessage(
                message_id=message_id,
                app_jid=app_jid,
                app_name=app_jid,
                app_fingerprint=opened.app_fingerprint,
                header=header,
                content=opened.content,
                newly_pinned=newly_pinned,
                delete_at_ms=delete_at,
                saved_file=saved_file,
            )
        )

    def _offer(self, app_jid: str, envelope: str, now_ms: int) -> bytes | None:
        # Anyone can put a key in an envelope; only one that signed it may be offered
        # to the user, or a forger could queue its key for acceptance.
        try:
            sealed = SealedEnvelope.from_bytes(envelope)
            verify(
                parse_public_key(sealed.app_key),
                sealed.signature,
                sealed.signature_input(),
                what="the app signature",
            )
        except EnvelopeError:
            return None
        self.pins.offer(app_jid, sealed.app_key, now_ms)
        return sealed.app_key
