"""Opening an envelope on a device: every check, in an order that shows nothing early.

The order is part of the protocol (docs/protocol.md): form, pinned app key, app
signature, sender and stanza id, recipient and device, expiry, prekey, content key,
payload, content. Nothing is returned unless all pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cmaas.envelope.content import Content, content_from_json, content_kind
from cmaas.envelope.errors import (
    AppKeyChanged,
    Expired,
    ForeignApp,
    MalformedEncoding,
    TamperedHeader,
    UnpinnedAppKey,
    WrongDevice,
    WrongRecipient,
)
from cmaas.envelope.header import Header
from cmaas.envelope.hpke_key import key_entry_info, open_content_key
from cmaas.envelope.keys import PrivateKey, fingerprint, parse_public_key, verify
from cmaas.envelope.padding import unpad
from cmaas.envelope.payload import open_payload
from cmaas.envelope.sealed import SealedEnvelope

__all__ = ["OpenedMessage", "PrekeyLookup", "open_envelope"]

PrekeyLookup = Callable[[int], PrivateKey]
"""The device's private prekey for a key id; raises UnknownKeyId when it has none."""


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """A message that passed every check."""

    header: Header
    content: Content
    app_key: bytes
    key_id: int

    @property
    def app_fingerprint(self) -> str:
        return fingerprint(self.app_key)


def open_envelope(
    data: bytes | str | SealedEnvelope,
    *,
    recipient_jid: str,
    device_id: int,
    prekey: PrekeyLookup,
    now_ms: int,
    pinned_app_key: bytes | None,
    sender_jid: str | None = None,
    stanza_id: str | None = None,
    require_pinned: bool = False,
    app_domain: str | None = None,
) -> OpenedMessage:
    """Verify and open an envelope addressed to this device.

    Args:
        recipient_jid, device_id: Who this device is.
        prekey: Finds the private prekey a key entry names.
        now_ms: The current time, unix milliseconds.
        pinned_app_key: The key pinned for the sending app JID, or None on first use.
        sender_jid: The stanza's bare ``from``; must be the header's app JID.
        stanza_id: The stanza's ``id``; must be the header's message id.
        require_pinned: Refuse an app with no pinned key instead of trusting on first use.
        app_domain: The gateway's component domain; the app JID must be on it.

    Raises:
        OversizeInput, MalformedEncoding, InvalidPoint: Not a well-formed envelope.
        AppKeyChanged: The app signs with a key other than ``pinned_app_key``.
        UnpinnedAppKey: No key is pinned and ``require_pinned`` is set.
        BadSignature: The app signature does not verify.
        TamperedHeader: The header disagrees with ``sender_jid`` or ``stanza_id``.
        ForeignApp: The app JID is not on ``app_domain``.
        WrongRecipient: The envelope is for another JID.
        WrongDevice: It carries no key entry for ``device_id``.
        Expired: Its expiry is not after ``now_ms``.
        UnknownKeyId: ``prekey`` has no key for the entry (never issued, or used).
        TamperedKeyEntry: The entry does not open with that prekey.
        TamperedPayload: The payload does not decrypt.
    """
    # Imported here, by the devices that open envelopes: ``hmac`` imports ``hashlib``,
    # which the gateway's admission workers, importing this package, do without.
    import hmac

    envelope = data if isinstance(data, SealedEnvelope) else SealedEnvelope.from_bytes(data)
    header = envelope.header
    app_public = parse_public_key(envelope.app_key)
    if pinned_app_key is None:
        if require_pinned:
            raise UnpinnedAppKey(f"no signing key is pinned for {header.app}")
    elif not hmac.compare_digest(pinned_app_key, envelope.app_key):
        raise AppKeyChanged(
            f"{header.app} now signs with key {fingerprint(envelope.app_key)}, not the "
            f"pinned {fingerprint(pinned_app_key)}"
        )
    verify(app_public, envelope.signature, envelope.signature_input(), what="the app signature")
    if sender_jid is not None and sender_jid != header.app:
        raise TamperedHeader(f"signed by {header.app} but sent by {sender_jid}")
    if stanza_id is not None and stanza_id != header.message_id:
        raise TamperedHeader("the stanza id is not the signed message id")
    if app_domain is not None and header.app.rpartition("@")[2] != app_domain:
        raise ForeignApp(f"{header.app} is not an app of the gateway {app_domain}")
    if header.to != recipient_jid:
        raise WrongRecipient("the envelope is addressed to another account")
    entry = envelope.entry_for(device_id)
    if entry is None:
        raise WrongDevice(f"the envelope has no key for device {device_id}")
    if header.expires_ms <= now_ms:
        raise Expired(f"message {header.message_id} expired")
    content_key = open_content_key(
        entry.sealed, prekey(entry.key_id), key_entry_info(header, device_id, entry.key_id)
    )
    padded = open_payload(content_key, envelope.nonce, envelope.payload, header.canonical())
    content = content_from_json(unpad(padded))
    if content_kind(content) != header.kind:
        raise MalformedEncoding(f"the content is {content_kind(content)}, the header {header.kind}")
    return OpenedMessage(header, content, envelope.app_key, entry.key_id)
