"""The payload: the padded content under AES-256-GCM, with the header as associated data."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cmaas.envelope.errors import MalformedEncoding, TamperedPayload

__all__ = ["CONTENT_KEY_SIZE", "NONCE_SIZE", "open_payload", "seal_payload"]

CONTENT_KEY_SIZE = 32
NONCE_SIZE = 12


def seal_payload(content_key: bytes, nonce: bytes, padded: bytes, header: bytes) -> bytes:
    """Raises: MalformedEncoding: The key is not 32 bytes or the nonce not 12."""
    _check_sizes(content_key, nonce)
    return AESGCM(content_key).encrypt(nonce, padded, header)


def open_payload(content_key: bytes, nonce: bytes, payload: bytes, header: bytes) -> bytes:
    """Raises:
    MalformedEncoding: The key is not 32 bytes or the nonce not 12.
    TamperedPayload: The payload or header was changed, or the key is wrong.
    """
    _check_sizes(content_key, nonce)
    try:
        return AESGCM(content_key).decrypt(nonce, payload, header)
    except InvalidTag as error:
        raise TamperedPayload("the payload does not decrypt") from error


def _check_sizes(content_key: bytes, nonce: bytes) -> None:
    if len(content_key) != CONTENT_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise MalformedEncoding("the content key is 32 bytes and the nonce 12")
