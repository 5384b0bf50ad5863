"""The sealed envelope's wire form (``urn:cmaas:envelope:1``), parsed strictly.

Everything in it is public: the gateway stores and forwards it, and only the
recipient's devices can open the content key in their key entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cmaas.envelope.bundle import MAX_DEVICE_ID
from cmaas.envelope.encoding import (
    CANONICAL_LAST_CHARACTERS,
    Fields,
    b64url,
    canonical_json,
    decode_checked_b64url,
    parse_json,
)
from cmaas.envelope.errors import EnvelopeError, MalformedEncoding, OversizeInput
from cmaas.envelope.header import Header
from cmaas.envelope.keys import MAX_SIGNATURE_SIZE, POINT_SIZE, fingerprint
from cmaas.envelope.padding import MAX_PLAINTEXT, padded_length
from cmaas.envelope.payload import NONCE_SIZE

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_KEY_ENTRIES",
    "SEALED_KEY_SIZE",
    "EnvelopeOutline",
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
_APP_KEY_FIELDS = frozenset({"public_key", "fingerprint"})
_KEY_ENTRY_FIELDS = frozenset({"device_id", "key_id", "sealed"})
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
        value, outline = _read(data)
        # Checked in full by now: what follows only decodes.
        fields = Fields(value, "envelope", _FIELDS)
        envelope = cls(
            header=outline.header,
            app_key=outline.app_key,
            keys=tuple(_key_entry(item) for item in value["keys"]),
            nonce=fields.binary("nonce", size=NONCE_SIZE),
            payload=fields.binary("payload", max_size=MAX_PAYLOAD_SIZE),
            signature=outline.signature,
        )
        object.__setattr__(envelope, "_signed", outline.signed)
        return envelope


@dataclass(frozen=True, slots=True)
class EnvelopeOutline:
    """An envelope checked as strictly as :meth:`SealedEnvelope.from_bytes` checks it,
    with its sealed parts (key entries, nonce, payload) left encoded: what a relay
    needs, at a fraction of the cost.

    Attributes:
        header: The header.
        app_key: The app's 65-byte public point.
        app_key_fingerprint: Its fingerprint, as the envelope gives it (checked).
        device_ids: The devices it is sealed to, in the order listed.
        signature: The app's DER signature.
        signed: The canonical bytes the signature is over.
    """

    header: Header
    app_key: bytes
    app_key_fingerprint: str
    device_ids: tuple[int, ...]
    signature: bytes
    signed: bytes

    @classmethod
    def from_bytes(cls, data: bytes | str) -> EnvelopeOutline:
        """Raises: as :meth:`SealedEnvelope.from_bytes`, for the same inputs."""
        raw = _utf8(data)
        return _shaped(raw) or _read(raw)[1]


_LAST = {remainder: text.encode("ascii") for remainder, text in CANONICAL_LAST_CHARACTERS.items()}


def _b64url_pattern(size: int) -> bytes:
    """Canonical unpadded base64url of exactly ``size`` bytes: its length, and the
    last character's spare bits zero."""
    length = (size * 4 + 2) // 3
    if size % 3 == 0:
        return b"[A-Za-z0-9_-]{%d}" % length
    return b"[A-Za-z0-9_-]{%d}[%s]" % (length - 1, _LAST[length % 4])


_KEY_ENTRY = (
    rb'\{"device_id":[1-9][0-9]{0,9},"key_id":[1-9][0-9]{0,9},"sealed":"'
    + _b64url_pattern(SEALED_KEY_SIZE)
    + rb'"\}'
)
_TEXT = rb'"([^"\\\x00-\x1f]+)"'
_INTEGER = rb"(0|[1-9][0-9]{0,15})"
# The form every conforming sealer writes, each field in its canonical spelling: the
# header's fields in code-point order, its strings without anything JSON escapes (so
# that their bytes are their UTF-8 text) and its integers without sign or leading zero.
_SHAPE = re.compile(
    rb'\{"app_key":\{"fingerprint":"([0-9a-f]{64})","public_key":"('
    + _b64url_pattern(POINT_SIZE)
    + rb')"\},"header":\{"app":'
    + _TEXT
    + rb',(?:"auto_delete_s":'
    + _INTEGER
    + rb",)?"
    + rb'"created_ms":'
    + _INTEGER
    + rb',"expires_ms":'
    + _INTEGER
    + rb',"kind":'
    + _TEXT
    + rb',"message_id":'
    + _TEXT
    + rb',"priority":'
    + _TEXT
    + rb',"to":'
    + _TEXT
    + rb',"v":'
    + _INTEGER
    + rb'\},"keys":\[('
    + _KEY_ENTRY
    + rb"(?:,"
    + _KEY_ENTRY
    + rb"){0,%d})\]," % (MAX_KEY_ENTRIES - 1)
    + rb'"nonce":"'
    + _b64url_pattern(NONCE_SIZE)
    + rb'","payload":"([A-Za-z0-9_-]*)","signature":"([A-Za-z0-9_-]*)"'
    + _SIGNED_TAIL.replace(b"}", rb"\}")
)
_ENTRY_IDS = re.compile(rb'"device_id":([0-9]+),"key_id":([0-9]+)')


def _shaped(raw: bytes) -> EnvelopeOutline | None:
    """The outline of an envelope in the shape every conforming sealer writes, read
    with one regular expression: about half the time of :func:`_read`.
    ``None`` for any other input, which :func:`_read` then decides, so that it meets
    the same errors. What this accepts is canonical JSON that :func:`_read` accepts,
    with the same outline: the header's values go through the same
    :meth:`Header.from_json`."""
    shape = _SHAPE.fullmatch(raw)
    if shape is None:
        return None
    (
        fingerprint_text,
        public_key,
        app,
        auto_delete_s,
        created_ms,
        expires_ms,
        kind,
        message_id,
        priority,
        to,
        version,
        entries,
        payload,
        signature,
    ) = shape.groups()
    if not (
        _canonical_b64url(payload, MAX_PAYLOAD_SIZE)
        and _canonical_b64url(signature, MAX_SIGNATURE_SIZE)
    ):
        return None
    app_key = decode_checked_b64url(public_key)
    app_key_fingerprint = fingerprint_text.decode("ascii")
    if fingerprint(app_key) != app_key_fingerprint:
        return None
    ids = _ENTRY_IDS.findall(entries)
    device_ids = tuple(int(device_id) for device_id, _ in ids)
    if len(set(device_ids)) != len(device_ids) or any(
        int(number) > MAX_DEVICE_ID for pair in ids for number in pair
    ):
        return None
    try:
        header_value: dict[str, object] = {
            "app": app.decode("utf-8"),
            "created_ms": int(created_ms),
            "expires_ms": int(expires_ms),
            "kind": kind.decode("utf-8"),
            "message_id": message_id.decode("utf-8"),
            "priority": priority.decode("utf-8"),
            "to": to.decode("utf-8"),
            "v": int(version),
        }
        if auto_delete_s is not None:
            header_value["auto_delete_s"] = int(auto_delete_s)
        header = Header.from_json(header_value)
    except (UnicodeDecodeError, EnvelopeError):
        return None
    signed = raw[: shape.start(14) - len(b',"signature":"')] + _SIGNED_TAIL
    return EnvelopeOutline(
        header,
        app_key,
        app_key_fingerprint,
        device_ids,
        decode_checked_b64url(signature),
        signed,
    )


def _canonical_b64url(text: bytes, max_size: int) -> bool:
    """Whether base64url ``text`` (its alphabet already checked) is canonical and
    decodes to at most ``max_size`` bytes."""
    spare = len(text) % 4
    return (
        spare != 1 and (not spare or text[-1:] in _LAST[spare]) and len(text) * 3 // 4 <= max_size
    )


def _read(data: bytes | str) -> tuple[dict[str, Any], EnvelopeOutline]:
    """The parsed envelope and its outline.

    An envelope arrives canonical from every conforming sealer, and then JSON without
    hooks, with one serialisation of the signed part compared with the input, proves
    what the strict parse would: no repeated key, no float, no character outside
    canonical form. An outline that fails there, or any refusal, is decided again by
    the strict parse, so that every input meets the same errors either way.
    """
    raw = _utf8(data)
    canonical = _canonical(raw)
    if canonical is not None:
        try:
            return canonical[0], _outline(*canonical)
        except EnvelopeError:
            pass
    value = parse_json(raw, max_bytes=MAX_ENVELOPE_BYTES, what="envelope")
    outline = _outline(value, b"")
    # Every field of the outline is the parsed text itself, or bytes whose base64url
    # was checked canonical and a fingerprint checked equal to its key's: the parsed
    # object without its signature serialises to the signed part's canonical bytes.
    signed = {key: item for key, item in value.items() if key != "signature"}
    return value, replace(outline, signed=canonical_json(signed, portable=True))


def _utf8(data: bytes | str) -> bytes:
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as error:
        raise MalformedEncoding("envelope is not valid UTF-8 text") from error
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise OversizeInput(f"envelope is {len(raw)} bytes; the limit is {MAX_ENVELOPE_BYTES}")
    return raw


def _canonical(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The envelope and its signed part's canonical bytes, when ``raw`` is the whole
    envelope's canonical form; ``None`` otherwise."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(value) is not dict or type(signature := value.get("signature")) is not str:
        return None
    try:
        signed = canonical_json(
            {key: item for key, item in value.items() if key != "signature"}, portable=True
        )
        signature_json = canonical_json(signature, portable=True)
    except MalformedEncoding:
        return None
    # "signature" sorts last but for "v": the whole is the signed part with it spliced in.
    if not signed.endswith(_SIGNED_TAIL) or raw != b"".join(
        (signed[: -len(_SIGNED_TAIL)], b',"signature":', signature_json, _SIGNED_TAIL)
    ):
        return None
    return value, signed


def _outline(value: object, signed: bytes) -> EnvelopeOutline:
    fields = Fields(value, "envelope", _FIELDS)
    fields.integer("v", low=1, high=1)
    app = Fields(fields.raw("app_key"), "envelope.app_key", _APP_KEY_FIELDS)
    app_key = app.binary("public_key", size=POINT_SIZE)
    app_key_fingerprint = app.text("fingerprint", max_length=64)
    if app_key_fingerprint != fingerprint(app_key):
        raise MalformedEncoding("envelope.app_key.fingerprint does not match the key")
    device_ids = tuple(
        _checked_entry(item)
        for item in fields.array("keys", max_items=MAX_KEY_ENTRIES, min_items=1)
    )
    if len(set(device_ids)) != len(device_ids):
        raise MalformedEncoding("envelope.keys lists a device twice")
    header = Header.from_json(fields.raw("header"))
    fields.encoded("nonce", size=NONCE_SIZE)
    fields.encoded("payload", max_size=MAX_PAYLOAD_SIZE)
    signature = fields.binary("signature", max_size=MAX_SIGNATURE_SIZE)
    return EnvelopeOutline(header, app_key, app_key_fingerprint, device_ids, signature, signed)


def _checked_entry(value: object) -> int:
    fields = Fields(value, "envelope.keys[]", _KEY_ENTRY_FIELDS)
    device_id = fields.integer("device_id", low=1, high=MAX_DEVICE_ID)
    fields.integer("key_id", low=1, high=MAX_DEVICE_ID)
    fields.encoded("sealed", size=SEALED_KEY_SIZE)
    return device_id


def _key_entry(value: object) -> KeyEntry:
    fields = Fields(value, "envelope.keys[]", _KEY_ENTRY_FIELDS)
    return KeyEntry(
        device_id=fields.integer("device_id", low=1, high=MAX_DEVICE_ID),
        key_id=fields.integer("key_id", low=1, high=MAX_DEVICE_ID),
        sealed=fields.binary("sealed", size=SEALED_KEY_SIZE),
    )
