"""Shared helpers for the envelope tests: keyrings, bundles as a sender sees them, JSON edits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from cmaas.envelope import (
    Content,
    DeviceBundle,
    DeviceKeyring,
    FileContent,
    OpenedMessage,
    PrivateKey,
    SealedEnvelope,
    TextContent,
    b64url,
    from_b64url,
    generate_private_key,
    point_bytes,
    seal,
    sign_envelope,
)

APP_JID = "otp@apps.cmaas.test"
USER_JID = "alice@cmaas.test"
OTHER_JID = "mallory@cmaas.test"
NOW_MS = 1_800_000_000_000
EXPIRES_MS = NOW_MS + 3_600_000
MESSAGE_ID = "msg-1"
TEXT = TextContent("Your parcel arrives today between 10:00 and 12:00.")
FILE = FileContent(
    name="statement-2027-03.pdf",
    media_type="application/pdf",
    size=183_211,
    url="https://files.bank.example/blobs/9f2c",
    file_key=bytes(range(32)),
    sha256=hashlib.sha256(b"statement").hexdigest(),
)


def make_keyring(jid: str = USER_JID, *, one_time_prekeys: int = 3) -> DeviceKeyring:
    return DeviceKeyring.generate(jid, now_ms=NOW_MS, one_time_prekeys=one_time_prekeys)


def sender_bundle(keyring: DeviceKeyring, *, with_one_time_prekey: bool = True) -> DeviceBundle:
    """The bundle as the gateway hands it to a sender: through the wire format, with at
    most one one-time prekey (the first unpublished one), or none for the SPK fallback."""
    published = DeviceBundle.from_bytes(keyring.bundle().to_bytes(), expected_jid=keyring.jid)
    served = dataclasses.replace(
        published,
        one_time_prekeys=published.one_time_prekeys[:1] if with_one_time_prekey else (),
    )
    return DeviceBundle.from_bytes(served.to_bytes(), expected_jid=keyring.jid)


def seal_to(
    bundles: list[DeviceBundle],
    app_key: PrivateKey,
    content: Content = TEXT,
    *,
    message_id: str = MESSAGE_ID,
    app_jid: str = APP_JID,
    recipient_jid: str = USER_JID,
    auto_delete_s: int | None = None,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
) -> SealedEnvelope:
    return seal(
        content,
        message_id=message_id,
        app_jid=app_jid,
        recipient_jid=recipient_jid,
        bundles=bundles,
        app_key=app_key,
        created_ms=NOW_MS,
        expires_ms=EXPIRES_MS,
        auto_delete_s=auto_delete_s,
        content_key=content_key,
        nonce=nonce,
    )


def app_public(app_key: PrivateKey) -> bytes:
    return point_bytes(app_key.public_key())


def open_as(
    keyring: DeviceKeyring,
    data: bytes | str | SealedEnvelope,
    app_key: PrivateKey | None,
    **kwargs: Any,
) -> OpenedMessage:
    """Open on ``keyring`` at NOW_MS, with ``app_key`` pinned (None: first use)."""
    return keyring.open(
        data,
        now_ms=kwargs.pop("now_ms", NOW_MS),
        pinned_app_key=None if app_key is None else app_public(app_key),
        **kwargs,
    )


def to_tree(envelope: SealedEnvelope | DeviceBundle | bytes) -> Any:
    """The JSON tree of an envelope or bundle, to edit."""
    data = envelope if isinstance(envelope, bytes) else envelope.to_bytes()
    return json.loads(data)


def dump(tree: Any) -> bytes:
    """JSON bytes of an edited tree (not necessarily canonical: the parser must not care)."""
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def flip_b64(text: str, index: int = 0, mask: int = 0x01) -> str:
    """A base64url field with one bit of its decoded bytes flipped."""
    data = bytearray(from_b64url(text, what="test field"))
    data[index % len(data)] ^= mask
    return b64url(bytes(data))


def resign(tree: Any, app_key: PrivateKey) -> bytes:
    """An edited envelope signed again by ``app_key``: a buggy or malicious app."""
    return sign_envelope(SealedEnvelope.from_bytes(dump(tree)), app_key).to_bytes()


def other_key() -> PrivateKey:
    return generate_private_key()
