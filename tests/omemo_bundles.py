"""Legacy OMEMO bundles as an app publishes them, for unit, abuse and integration tests.

The keys are random bytes in the right shape: the gateway stores and serves public keys
without using them, so nothing here needs real Curve25519 keys.
"""

from __future__ import annotations

import base64
import os


def public_key() -> str:
    """A 33-byte Curve25519 public key with libsignal's type byte, as base64."""
    return base64.b64encode(b"\x05" + os.urandom(32)).decode()


def bundle_json(prekeys: int = 3, *, spk_id: int = 1) -> dict[str, object]:
    """A bundle body for ``PUT /v1/omemo/devices/{id}``."""
    return {
        "identity_key": public_key(),
        "signed_prekey_id": spk_id,
        "signed_prekey": public_key(),
        "signed_prekey_signature": base64.b64encode(os.urandom(64)).decode(),
        "prekeys": [{"id": i, "key": public_key()} for i in range(1, prekeys + 1)],
    }
