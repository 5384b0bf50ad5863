"""Issuing app credentials and protecting them at rest.

* The client secret is 256 random bits, stored as HMAC-SHA256(salt, secret) with a
  per-credential random salt. A slow password hash would add nothing: the secret is
  machine-generated with full entropy, so there is nothing to brute-force, while every
  API request pays for the check.
* The HMAC key must be recoverable (the gateway verifies request signatures and signs
  webhooks with it), so it is encrypted with AES-256-GCM under a key derived from
  ``CMAAS_MASTER_KEY`` with HKDF. The AAD binds each ciphertext to its app and
  credential, so rows cannot be swapped between apps.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cmaas.keystore.errors import MasterKeyMismatch
from cmaas.keystore.models import IssuedCredentials

__all__ = [
    "HMAC_KEY_BYTES",
    "MasterKeyring",
    "hash_client_secret",
    "issue_credentials",
    "new_salt",
    "secret_matches",
]

HMAC_KEY_BYTES = 32
_SALT_BYTES = 16
_NONCE_BYTES = 12
_WRAP_INFO = b"cmaas/v1/hmac-key-wrap"
_KEY_ID_INFO = b"cmaas/v1/master-key-id"


def issue_credentials(client_id: str) -> IssuedCredentials:
    """Draw a fresh client secret and HMAC key for ``client_id``."""
    return IssuedCredentials(
        client_id=client_id,
        client_secret=secrets.token_urlsafe(32),
        hmac_key=secrets.token_bytes(HMAC_KEY_BYTES),
    )


def new_salt() -> bytes:
    return os.urandom(_SALT_BYTES)


def hash_client_secret(salt: bytes, client_secret: str) -> bytes:
    """The stored form of a client secret."""
    mac = crypto_hmac.HMAC(salt, hashes.SHA256())
    mac.update(client_secret.encode("utf-8"))
    return mac.finalize()


def secret_matches(salt: bytes, stored_hash: bytes, client_secret: str) -> bool:
    """Compare a presented secret with its stored hash in constant time."""
    return hmac.compare_digest(hash_client_secret(salt, client_secret), stored_hash)


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master_key)


@dataclass(frozen=True, slots=True)
class _WrappingKey:
    key_id: str
    aead: AESGCM


class MasterKeyring:
    """The current master key, and optionally the previous one during a rotation."""

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        self._current = self._wrapping_key(current)
        self._previous = None if previous is None else self._wrapping_key(previous)

    @staticmethod
    def _wrapping_key(master_key: bytes) -> _WrappingKey:
        key_id = _derive(master_key, _KEY_ID_INFO)[:8].hex()
        return _WrappingKey(key_id=key_id, aead=AESGCM(_derive(master_key, _WRAP_INFO)))

    @property
    def current_key_id(self) -> str:
        return self._current.key_id

    def wrap(self, hmac_key: bytes, associated: bytes) -> tuple[str, bytes]:
        """Encrypt an HMAC key under the current master key.

        Returns:
            The master key id and ``nonce || ciphertext``.
        """
        nonce = os.urandom(_NONCE_BYTES)
        return self._current.key_id, nonce + self._current.aead.encrypt(nonce, hmac_key, associated)

    def unwrap(self, key_id: str, wrapped: bytes, associated: bytes) -> bytes:
        """Decrypt an HMAC key wrapped by :meth:`wrap` under the current or previous key.

        Raises:
            MasterKeyMismatch: Neither configured key has this id, or the ciphertext
                does not authenticate (wrong key, tampered row, or moved row).
        """
        for candidate in (self._current, self._previous):
            if candidate is not None and candidate.key_id == key_id:
                try:
                    return candidate.aead.decrypt(
                        wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], associated
                    )
                except InvalidTag as exc:
                    raise MasterKeyMismatch(
                        f"stored HMAC key under master key {key_id} does not authenticate"
                    ) from exc
        raise MasterKeyMismatch(
            f"an HMAC key is wrapped under master key {key_id}, which is not configured;"
            " set CMAAS_PREVIOUS_MASTER_KEY and run `cmaas admin master-key-rotate`"
        )
