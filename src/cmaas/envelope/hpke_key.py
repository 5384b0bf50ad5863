"""Sealing the 32-byte content key to one device prekey with RFC 9180 HPKE.

Base mode, DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, all from
``cryptography``; its output is ``enc`` (65-byte point) followed by the ciphertext.
``info`` binds the sealed key to one message, app, recipient, device and prekey, so
an entry cannot be moved to another message or device.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from cmaas.envelope.encoding import canonical_json
from cmaas.envelope.errors import TamperedKeyEntry
from cmaas.envelope.header import Header
from cmaas.envelope.keys import PrivateKey, PublicKey
from cmaas.envelope.payload import CONTENT_KEY_SIZE

__all__ = ["CONTENT_KEY_SIZE", "SUITE", "key_entry_info", "open_content_key", "seal_content_key"]

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def key_entry_info(header: Header, device_id: int, key_id: int) -> bytes:
    """HPKE ``info`` for one key entry: canonical JSON of what the entry is bound to."""
    return canonical_json(
        {
            "v": 1,
            "message_id": header.message_id,
            "app": header.app,
            "to": header.to,
            "device_id": device_id,
            "key_id": key_id,
        }
    )


def seal_content_key(content_key: bytes, prekey: PublicKey, info: bytes) -> bytes:
    return SUITE.encrypt(content_key, prekey, info)


def open_content_key(sealed: bytes, prekey: PrivateKey, info: bytes) -> bytes:
    """Raises: TamperedKeyEntry: The entry does not open, or holds no 32-byte key."""
    try:
        content_key = SUITE.decrypt(sealed, prekey, info)
    except (InvalidTag, ValueError) as error:
        raise TamperedKeyEntry("the key entry does not open with this device's prekey") from error
    if len(content_key) != CONTENT_KEY_SIZE:
        raise TamperedKeyEntry("the key entry does not hold a 32-byte content key")
    return content_key
