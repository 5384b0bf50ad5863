"""The sealed envelope's wire form (``urn:cmaas:envelope:1``), parsed strictly.

Everything in it is public: the gateway stores and forwards it, and only the
recipient's devices can open the content key in their key entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmaas.envelope.bundle import MAX_DEVICE_ID
from cmaas.envelope.encoding import Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.envelope.header import Header
from cmaas.envelope.keys import MAX_SIGNATURE_SIZE, POINT_SIZE, fingerprint
from cmaas.envelope.padding import MAX_PLAINTEXT, padded_length
from cmaas.envelope.payload import NONCE_SIZE

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_KEY_ENTRIES",
    "SEALED_KEY_SIZE",
    "KeyEntry",
    "SealedEnvelope",
]

TAG_SIZE = 16
# HPKE output for a 32-byte content key: enc (65-byte point) || AES-256-GCM(CK) (32 + 16).
SEALED_KEY_SIZE = POINT_SIZE + 32 + TAG_SIZE
MAX_KEY_ENTRIES = 64
MAX_PAYLOAD_SIZE = padded_length(MAX_PLAINTEXT) + TAG_SIZE
MAX_ENVELOPE_BYTES = 256 * 1024
_FIELDS = frozenset({"v", "header", "app_key", "keys", "nonce", "payload", "signature"})
# "v" is the last key of the signed part in code-point order and "signature" sorts just
# before it, so the whole envelope is the signed part with the signature spliced in here.
_SIGNED_TAIL = b',"v":1}'


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """The content key sealed with HPKE to one device's prekey ``key_id``."""

    device_id: int
    key_id: int
    sealed: bytes

    def to_json(self) -> dict[str, object]:
        return {"device_id": self.device_id, "key_id": self.key_id, "sealed": b64url(self.sealed)}

    def canonical(self) -> bytes:
        """``canonical_json(self.to_json())``, written directly.

        Raises: MalformedEncoding: An id is not an integer from 1 to 2**31 - 1.
        """
        for value in (self.device_id, self.key_id):
            if type(value) is not int or not 1 <= value <= MAX_DEVICE_ID:
                raise MalformedEncoding("a key entry's ids must be integers from 1 to 2**31 - 1")
        return b'{"device_id":%d,"key_id":%d,"sealed":"%s"}' % (
            self.device_id,
            self.key_id,
            b64url(self.sealed).encode("ascii"),
        )


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """A parsed envelope; :meth:`from_bytes` checks its form, not its signature."""

    header: Header
    app_key: bytes
    keys: tuple[KeyEntry, ...]
    nonce: bytes
    payload: bytes
    signature: bytes
    # signature_input() once computed: signing, serialising and verifying share it.
    _signed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def signed_part(self) -> dict[str, object]:
        """Everything but the signature, as JSON."""
        return {
            "v": 1,
            "header": self.header.to_json(),
            "app_key": {
                "public_key": b64url(self.app_key),
                "fingerprint": fingerprint(self.app_key),
            },
            "keys": [entry.to_json() for entry in self.keys],
            "nonce": b64url(self.nonce),
            "payload": b64url(self.payload),
        }

    def signature_input(self) -> bytes:
        """The canonical bytes the app signs: the envelope without its signature.

        The same bytes as ``canonical_json(self.signed_part())``, joined from the
        header's canonical bytes (already computed for the payload's associated data)
        and fields that are base64url, hex or bounded integers, which JSON writes
        verbatim: the keys below are in code-point order.

        Raises: MalformedEncoding: The header or a key entry has no canonical form.
        """
        signed = self._signed
        if signed is None:
            app_key = b64url(self.app_key)
            signed = b"".join(
                (
                    b'{"app_key":{"fingerprint":"',
                    fingerprint(self.app_key).encode("ascii"),
                    b'","public_key":"',
                    app_key.encode("ascii"),
                    b'"},"header":',
                    self.header.canonical(),
                    b',"keys":[',
                    b",".join(entry.canonical() for entry in self.keys),
                    b'],"nonce":"',
                    b64url(self.nonce).encode("ascii"),
                    b'","payload":"',
                    b64url(self.payload).encode("ascii"),
                    b'"',
                    _SIGNED_TAIL,
                )
            )
            object.__setattr__(self, "_signed", signed)
        return signed

    def with_signature(self, signature: bytes) -> SealedEnvelope:
        """This envelope carrying ``signature`` (the signed part, computed once, is kept)."""
        signed = SealedEnvelope(
            self.header, self.app_key, self.keys, self.nonce, self.payload, signature
        )
        object.__setattr__(signed, "_signed", self._signed)
        return signed

    def to_json(self) -> dict[str, object]:
        return {**self.signed_part(), "signature": b64url(self.signature)}

    def to_bytes(self) -> bytes:
        """The envelope as canonical JSON, the text of the stanza's ``<envelope/>``
        (the same bytes as ``canonical_json(self.to_json())``, without serialising twice)."""
        signed = self.signature_input()
        signature = b64url(self.signature).encode("ascii")
        return b"".join(
            (signed[: -len(_SIGNED_TAIL)], b',"signature":"', signature, b'"', _SIGNED_TAIL)
        )

    def entry_for(self, device_id: int) -> KeyEntry | None:
        return next((entry for entry in self.keys if entry.device_id == device_id), None)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> SealedEnvelope:
        """Parse an envelope strictly, checking sizes before anything else.

        Raises:
            OversizeInput: Over :data:`MAX_ENVELOPE_BYTES`, or too many key entries.
            MalformedEncoding: Any field missing, unknown, mistyped or out of bounds, a
                fingerprint that does not match the key, or a device listed twice.
        """
        value = parse_json(data, max_bytes=MAX_ENVELOPE_BYTES, what="envelope")
        fields = Fields(value, "envelope", _FIELDS)
        fields.integer("v", low=1, high=1)
        app = Fields(
            fields.raw("app_key"), "envelope.app_key", frozenset({"public_key", "fingerprint"})
        )
        app_key = app.binary("public_key", size=POINT_SIZE)
        if app.text("fingerprint", max_length=64) != fingerprint(app_key):
            raise MalformedEncoding("envelope.app_key.fingerprint does not match the key")
        keys = tuple(
            _key_entry(item)
            for item in fields.array("keys", max_items=MAX_KEY_ENTRIES, min_items=1)
        )
        if len({entry.device_id for entry in keys}) != len(keys):
            raise MalformedEncoding("envelope.keys lists a device twice")
        envelope = cls(
            header=Header.from_json(fields.raw("header")),
            app_key=app_key,
            keys=keys,
            nonce=fields.binary("nonce", size=NONCE_SIZE),
            payload=fields.binary("payload", max_size=MAX_PAYLOAD_SIZE),
            signature=fields.binary("signature", max_size=MAX_SIGNATURE_SIZE),
        )
        # Every field read above is the parsed text itself, or bytes whose base64url
        # was checked canonical and a fingerprint checked equal to its key's: the
        # parsed object without its signature serialises to the signed part's
        # canonical bytes, in one C-speed pass instead of rebuilding it field by field.
        signed = {key: item for key, item in value.items() if key != "signature"}
        object.__setattr__(envelope, "_signed", canonical_json(signed, portable=True))
        return envelope


def _key_entry(value: object) -> KeyEntry:
    fields = Fields(value, "envelope.keys[]", frozenset({"device_id", "key_id", "sealed"}))
    return KeyEntry(
        device_id=fields.integer("device_id", low=1, high=MAX_DEVICE_ID),
        key_id=fields.integer("key_id", low=1, high=MAX_DEVICE_ID),
        sealed=fields.binary("sealed", size=SEALED_KEY_SIZE),
    )
