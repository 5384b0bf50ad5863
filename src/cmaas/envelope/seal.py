"""Sealing a message at its source, for every device of one recipient."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from cmaas.envelope.bundle import DeviceBundle
from cmaas.envelope.content import Content, content_kind, content_to_json
from cmaas.envelope.errors import MalformedEncoding, OversizeInput, WrongRecipient
from cmaas.envelope.header import (
    Header,
)
from cmaas.envelope.hpke_key import key_entry_info, seal_content_key
from cmaas.envelope.keys import PrivateKey, public_point, sign
from cmaas.envelope.padding import pad
from cmaas.envelope.payload import CONTENT_KEY_SIZE, NONCE_SIZE, seal_payload
from cmaas.envelope.sealed import MAX_KEY_ENTRIES, KeyEntry, SealedEnvelope
from cmaas.lifecycle import (
    Priority,
)

__all__ = ["seal"]


def seal(
    content: Content,
    *,
    message_id: str,
    app_jid: str,
    recipient_jid: str,
    bundles: Sequence[DeviceBundle],
    app_key: PrivateKey,
    created_ms: int,
    expires_ms: int,
    priority: Priority = Priority.NORMAL,
    auto_delete_s: int | None = None,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
) -> SealedEnvelope:
    """Seal ``content`` so that only the devices in ``bundles`` can open it.

    Each device gets the content key sealed to its one-time prekey when the bundle
    carries one, else to its signed prekey. The app then signs the whole envelope.

    Args:
        bundles: Verified bundles of ``recipient_jid``'s devices, as looked up.
        app_key: The app's ECDSA P-256 signing key.
        content_key, nonce: Fixed values for test vectors only; by default both are
            fresh from the operating system's random source, as they must be.

    Raises:
        WrongRecipient: A bundle belongs to another JID, or there is none.
        MalformedEncoding: A header or content field is out of bounds.
        OversizeInput: The content is too long, or there are too many devices.
    """
    if not bundles:
        raise WrongRecipient(f"{recipient_jid} has no device to seal to")
    if len(bundles) > MAX_KEY_ENTRIES:
        raise OversizeInput(f"at most {MAX_KEY_ENTRIES} devices per envelope")
    if any(bundle.jid != recipient_jid for bundle in bundles):
        raise WrongRecipient(f"every bundle must belong to {recipient_jid}")
    if len({bundle.device_id for bundle in bundles}) != len(bundles):
        raise MalformedEncoding("a device is listed twice")
    header = Header(
        message_id=message_id,
        app=app_jid,
        to=recipient_jid,
        created_ms=created_ms,
        expires_ms=expires_ms,
        kind=content_kind(content),
        priority=priority,
        auto_delete_s=auto_delete_s,
    )
    content_key = os.urandom(CONTENT_KEY_SIZE) if content_key is None else content_key
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    payload = seal_payload(content_key, nonce, pad(content_to_json(content)), header.canonical())
    entries = []
    for bundle in bundles:
        prekey, public = bundle.recipient_prekey()
        info = key_entry_info(header, bundle.device_id, prekey.key_id)
        entries.append(
            KeyEntry(bundle.device_id, prekey.key_id, seal_content_key(content_key, public, info))
        )
    unsigned = SealedEnvelope(
        header=header,
        app_key=public_point(app_key),
        keys=tuple(entries),
        nonce=nonce,
        payload=payload,
        signature=b"",
    )
    return unsigned.with_signature(sign(app_key, unsigned.signature_input()))


def sign_envelope(envelope: SealedEnvelope, app_key: PrivateKey) -> SealedEnvelope:
    """``envelope`` carrying ``app_key``'s public key and its signature over
    :meth:`SealedEnvelope.signature_input`."""
    unsigned = replace(envelope, app_key=public_point(app_key), signature=b"")
    return unsigned.with_signature(sign(app_key, unsigned.signature_input()))
