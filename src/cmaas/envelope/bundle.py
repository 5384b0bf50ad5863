"""Device bundles: the public half of a device's keys, signed by its identity key.

A device publishes its identity key (IK), a signed prekey (SPK) and a pool of one-time
prekeys (OPK). Each prekey carries an ECDSA signature by IK over
:func:`prekey_signature_input`, which binds the key to its owner's bare JID, device
id, key id and role, so the gateway cannot move a prekey to another device or account.
A sender receives the same format with at most one one-time prekey.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cmaas.envelope.encoding import Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.envelope.keys import (
    MAX_SIGNATURE_SIZE,
    POINT_SIZE,
    PrivateKey,
    PublicKey,
    fingerprint,
    parse_public_key,
    point_bytes,
    sign,
    verify,
)

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_DEVICE_ID",
    "MAX_PREKEYS_PER_BUNDLE",
    "SUITE_P256",
    "DeviceBundle",
    "Prekey",
    "PrekeyRole",
    "prekey_signature_input",
    "sign_prekey",
]

SUITE_P256 = "p256"
MAX_DEVICE_ID = 2**31 - 1
MAX_PREKEYS_PER_BUNDLE = 100
MAX_BUNDLE_BYTES = 64 * 1024
MAX_JID_LENGTH = 3071
_MAX_SUITES = 8

PrekeyRole = Literal["spk", "opk"]


def prekey_signature_input(
    jid: str, device_id: int, role: PrekeyRole, key_id: int, public_key: bytes
) -> bytes:
    """The canonical bytes an identity key signs for one prekey."""
    return canonical_json(
        {
            "v": 1,
            "jid": jid,
            "device_id": device_id,
            "type": role,
            "key_id": key_id,
            "public_key": b64url(public_key),
        }
    )


@dataclass(frozen=True, slots=True)
class Prekey:
    """One signed prekey or one-time prekey, public part."""

    key_id: int
    public_key: bytes
    signature: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "public_key": b64url(self.public_key),
            "signature": b64url(self.signature),
        }

    @classmethod
    def from_json(cls, value: object, what: str) -> Prekey:
        """Parse without verifying; :meth:`DeviceBundle.from_json` verifies.

        Raises:
            MalformedEncoding: A field is missing or malformed, or the key is not 65 bytes.
        """
        fields = Fields(value, what, frozenset({"key_id", "public_key", "signature"}))
        return cls(
            key_id=fields.integer("key_id", low=1, high=MAX_DEVICE_ID),
            public_key=fields.binary("public_key", size=POINT_SIZE),
            signature=fields.binary("signature", max_size=MAX_SIGNATURE_SIZE),
        )


def sign_prekey(
    identity: PrivateKey, jid: str, device_id: int, role: PrekeyRole, key_id: int, key: PublicKey
) -> Prekey:
    """Sign a prekey's public part with the device's identity key."""
    public = point_bytes(key)
    signature = sign(identity, prekey_signature_input(jid, device_id, role, key_id, public))
    return Prekey(key_id, public, signature)


@dataclass(frozen=True, slots=True)
class DeviceBundle:
    """A device's public keys, every signature checked.

    Construct with :meth:`from_json` (untrusted input) or :meth:`create` (the device's
    own keys); the constructor trusts its arguments.
    """

    jid: str
    device_id: int
    identity_key: bytes
    suites: tuple[str, ...]
    signed_prekey: Prekey
    one_time_prekeys: tuple[Prekey, ...]
    # recipient_prekey() once parsed: a cached lookup seals many messages to the SPK.
    _recipient: tuple[Prekey, PublicKey] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def fingerprint(self) -> str:
        """The identity key's fingerprint, for users comparing devices."""
        return fingerprint(self.identity_key)

    def recipient_prekey(self) -> tuple[Prekey, PublicKey]:
        """The prekey a sender seals to: the first one-time prekey, else the SPK."""
        recipient = self._recipient
        if recipient is None:
            prekey = self.one_time_prekeys[0] if self.one_time_prekeys else self.signed_prekey
            recipient = (prekey, parse_public_key(prekey.public_key))
            object.__setattr__(self, "_recipient", recipient)
        return recipient

    def to_json(self) -> dict[str, object]:
        return {
            "v": 1,
            "jid": self.jid,
            "device_id": self.device_id,
            "identity_key": b64url(self.identity_key),
            "suites": list(self.suites),
            "signed_prekey": self.signed_prekey.to_json(),
            "one_time_prekeys": [prekey.to_json() for prekey in self.one_time_prekeys],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes | str, *, expected_jid: str | None = None) -> DeviceBundle:
        """Parse and verify a bundle from JSON text.

        Raises:
            OversizeInput: Over :data:`MAX_BUNDLE_BYTES` or too many prekeys.
            MalformedEncoding: Not a well-formed bundle (a key that is not 65 bytes
                included), or for another JID than ``expected_jid``.
            InvalidPoint: A 65-byte key is not an uncompressed point on P-256.
            BadSignature: A prekey's signature does not verify under the identity key.
        """
        value = parse_json(data, max_bytes=MAX_BUNDLE_BYTES, what="bundle")
        return cls.from_json(value, expected_jid=expected_jid)

    @classmethod
    def from_json(cls, value: object, *, expected_jid: str | None = None) -> DeviceBundle:
        """Parse and verify a bundle already decoded from JSON.

        Raises: as :meth:`from_bytes`.
        """
        fields = Fields(
            value,
            "bundle",
            frozenset(
                {
                    "v",
                    "jid",
                    "device_id",
                    "identity_key",
                    "suites",
                    "signed_prekey",
                    "one_time_prekeys",
                }
            ),
        )
        fields.integer("v", low=1, high=1)
        jid = fields.text("jid", max_length=MAX_JID_LENGTH)
        if expected_jid is not None and jid != expected_jid:
            raise MalformedEncoding(f"the bundle is for {jid}, not {expected_jid}")
        suites = tuple(
            _suite(item) for item in fields.array("suites", max_items=_MAX_SUITES, min_items=1)
        )
        if SUITE_P256 not in suites or len(set(suites)) != len(suites):
            raise MalformedEncoding("bundle.suites must list p256 once")
        bundle = cls(
            jid=jid,
            device_id=fields.integer("device_id", low=1, high=MAX_DEVICE_ID),
            identity_key=fields.binary("identity_key", size=POINT_SIZE),
            suites=suites,
            signed_prekey=Prekey.from_json(fields.raw("signed_prekey"), "bundle.signed_prekey"),
            one_time_prekeys=tuple(
                Prekey.from_json(item, "bundle.one_time_prekeys[]")
                for item in fields.array("one_time_prekeys", max_items=MAX_PREKEYS_PER_BUNDLE)
            ),
        )
        bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every key is on the curve and every prekey signature verifies.

        Raises:
            InvalidPoint: A key is not an uncompressed point on P-256.
            MalformedEncoding: Two prekeys share a key id.
            BadSignature: A prekey signature does not verify.
        """
        identity = parse_public_key(self.identity_key)
        ids = [self.signed_prekey.key_id, *(p.key_id for p in self.one_time_prekeys)]
        if len(set(ids)) != len(ids):
            raise MalformedEncoding("key ids must be unique within a device")
        roles: list[tuple[PrekeyRole, Prekey]] = [("spk", self.signed_prekey)]
        roles.extend(("opk", p) for p in self.one_time_prekeys)
        for role, prekey in roles:
            parse_public_key(prekey.public_key)
            verify(
                identity,
                prekey.signature,
                prekey_signature_input(
                    self.jid, self.device_id, role, prekey.key_id, prekey.public_key
                ),
                what=f"the signature on {role} {prekey.key_id}",
            )


def _suite(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 32:
        raise MalformedEncoding("bundle.suites must be short strings")
    return value
