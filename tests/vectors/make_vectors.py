"""Generate the envelope v1 test vectors, ``docs/protocol-vectors.json``.

Fresh vectors (new HPKE key entries, so new sealed bytes, signatures and envelopes)::

    .venv/bin/python -m tests.vectors.make_vectors > docs/protocol-vectors.json

Run that only on purpose and commit the result: HPKE encryption is randomised (the
sender's ephemeral key) and ``cryptography`` takes no fixed ephemeral key, so every
fresh run changes every key entry and everything signed over it.

Same vectors again, reusing each recorded HPKE key entry that still opens to the same
content key under the same ``info``::

    .venv/bin/python -m tests.vectors.make_vectors --reuse docs/protocol-vectors.json > /tmp/v.json

When nothing else changed, ``/tmp/v.json`` is the committed file byte for byte (write
it elsewhere first: the shell empties the target of ``>`` before Python reads it).
``tests/unit/test_protocol_vectors.py`` checks exactly that.

Everything else is deterministic: private keys are derived from labels, content keys
and nonces are fixed through :func:`seal`'s ``content_key`` and ``nonce`` arguments
(or the same primitives), and ECDSA signatures are RFC 6979.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cmaas.envelope import (
    NAMESPACE,
    SUITE_P256,
    Content,
    DeviceBundle,
    EnvelopeError,
    FileContent,
    Header,
    KeyEntry,
    OtpContent,
    Prekey,
    PrivateKey,
    SealedEnvelope,
    TextContent,
    b64url,
    content_to_json,
    fingerprint,
    key_entry_info,
    pad,
    padded_length,
    parse_private_scalar,
    point_bytes,
    prekey_signature_input,
    private_scalar,
    sign,
    sign_envelope,
    sign_prekey,
)
from cmaas.envelope import errors as envelope_errors
from cmaas.envelope.bundle import PrekeyRole
from cmaas.envelope.content import content_from_json, content_kind
from cmaas.envelope.hpke_key import SUITE
from cmaas.envelope.keys import CURVE_ORDER
from cmaas.envelope.payload import seal_payload
from cmaas.envelope.sealed import MAX_KEY_ENTRIES
from cmaas.lifecycle import (
    Priority,
)

__all__ = ["build", "main", "render"]

Json = dict[str, Any]

GATEWAY_DOMAIN = "gateway.example.org"
APP_JID = f"parichay-otp@{GATEWAY_DOMAIN}"
OTHER_APP_JID = f"other-app@{GATEWAY_DOMAIN}"
# Anyone can open an ordinary account with an app's name; only the gateway sends from
# its own component domain.
IMPOSTOR_JID = "parichay-otp@example.org"
SUBDOMAIN_APP_JID = f"parichay-otp@apps.{GATEWAY_DOMAIN}"
ALICE = "alice@example.org"
BOB = "bob@example.org"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in unix milliseconds
MINUTE = 60_000
DAY = 86_400_000
NOW = T0 + MINUTE
MAX_LIFETIME = 30 * DAY


# Deterministic material


def derived_key(label: str) -> PrivateKey:
    """A P-256 private key whose scalar is derived from ``label`` (test vectors only)."""
    digest = hashlib.sha256(b"cmaas envelope v1 test vector key\x00" + label.encode()).digest()
    value = int.from_bytes(digest, "big") % (CURVE_ORDER - 1) + 1
    return parse_private_scalar(value.to_bytes(32, "big"))


def fixed(label: str, size: int) -> bytes:
    """``size`` (at most 32) fixed bytes derived from ``label`` (test vectors only)."""
    return hashlib.sha256(b"cmaas envelope v1 test vector bytes\x00" + label.encode()).digest()[
        :size
    ]


APP = derived_key("app/parichay-otp")
OTHER_APP = derived_key("app/other")


def public_hex(key: PrivateKey) -> str:
    return point_bytes(key.public_key()).hex()


def p1363(der: bytes) -> bytes:
    """The IEEE P1363 form ``r || s`` (32 bytes each) of a DER ECDSA signature."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def text_and_hex(data: bytes) -> Json:
    return {"text": data.decode("utf-8"), "hex": data.hex()}


def error_ancestors(name: str) -> list[str]:
    """The base classes of the error ``name`` up to :class:`EnvelopeError`."""
    cls = getattr(envelope_errors, name)
    return [
        base.__name__
        for base in cls.__mro__[1:]
        if issubclass(base, EnvelopeError) and base is not cls
    ]


# Devices


@dataclass(frozen=True)
class Device:
    """A test device; its private keys are derived from its name."""

    name: str
    jid: str
    device_id: int
    spk_id: int
    opk_ids: tuple[int, ...]

    @property
    def identity(self) -> PrivateKey:
        return derived_key(f"{self.name}/identity")

    def prekey(self, key_id: int) -> PrivateKey:
        return derived_key(f"{self.name}/prekey/{key_id}")

    def bundle(self, opk_ids: Sequence[int], *, jid: str | None = None) -> DeviceBundle:
        """The bundle as published (every OPK) or as looked up (at most one OPK)."""
        owner = jid or self.jid
        spk = sign_prekey(
            self.identity,
            owner,
            self.device_id,
            "spk",
            self.spk_id,
            self.prekey(self.spk_id).public_key(),
        )
        opks = tuple(
            sign_prekey(
                self.identity,
                owner,
                self.device_id,
                "opk",
                key_id,
                self.prekey(key_id).public_key(),
            )
            for key_id in opk_ids
        )
        return DeviceBundle(
            jid=owner,
            device_id=self.device_id,
            identity_key=point_bytes(self.identity.public_key()),
            suites=(SUITE_P256,),
            signed_prekey=spk,
            one_time_prekeys=opks,
        )

    def to_json(self, key_ids: Sequence[int] | None = None) -> Json:
        """Who the device is and which prekeys it still holds (private keys: 'devices')."""
        held = [self.spk_id, *self.opk_ids] if key_ids is None else list(key_ids)
        return {
            "name": self.name,
            "jid": self.jid,
            "device_id": self.device_id,
            "prekey_ids": held,
        }


PHONE = Device("alice-phone", ALICE, 1_546_392_817, spk_id=1, opk_ids=(2, 3, 4))
LAPTOP = Device("alice-laptop", ALICE, 987_654_321, spk_id=1, opk_ids=(2, 3))
TABLET = Device("alice-tablet", ALICE, 555_000_111, spk_id=1, opk_ids=())
# Same device id as Alice's phone: only the account differs.
BOB_PHONE = Device("bob-phone", BOB, 1_546_392_817, spk_id=1, opk_ids=(2,))
DEVICES = (PHONE, LAPTOP, TABLET, BOB_PHONE)


# HPKE key entries: the only randomised part


def _sealed_blobs(value: object) -> Iterator[bytes]:
    """Every recorded sealed key entry in a previous vectors file."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "sealed_hex" and isinstance(item, str):
                yield bytes.fromhex(item)
            elif key == "sealed" and isinstance(item, str):
                try:
                    blob = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
                except (binascii.Error, ValueError):
                    continue
                yield blob
            elif key == "envelope_hex" and isinstance(item, str):
                yield from _sealed_blobs(bytes.fromhex(item).decode("utf-8", "replace"))
            else:
                yield from _sealed_blobs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _sealed_blobs(item)
    elif isinstance(value, str) and value.lstrip("\ufeff \n").startswith("{"):
        try:
            parsed = json.loads(value.lstrip("\ufeff"))
        except ValueError:
            return
        yield from _sealed_blobs(parsed)


class HpkeSource:
    """Seals content keys with HPKE, reusing recorded entries that still fit."""

    def __init__(self, previous: object = None) -> None:
        recorded = (blob for blob in _sealed_blobs(previous) if len(blob) == 113)
        self._blobs: list[bytes] = list(dict.fromkeys(recorded))
        self.fresh = 0

    def seal(self, content_key: bytes, recipient: PrivateKey, info: bytes) -> bytes:
        for blob in self._blobs:
            try:
                if SUITE.decrypt(blob, recipient, info) == content_key:
                    return blob
            except (InvalidTag, ValueError):
                continue
        blob = SUITE.encrypt(content_key, recipient.public_key(), info)
        self._blobs.append(blob)
        self.fresh += 1
        return blob


# Envelopes


@dataclass(frozen=True)
class Sealed:
    """An envelope and the secrets it was made with."""

    envelope: SealedEnvelope
    content_key: bytes
    padded: bytes

    def text(self) -> str:
        return self.envelope.to_bytes().decode("utf-8")


def make_header(message_id: str, kind: str = "text", **changes: Any) -> Header:
    fields: dict[str, Any] = {
        "message_id": message_id,
        "app": APP_JID,
        "to": ALICE,
        "created_ms": T0,
        "expires_ms": T0 + DAY,
        "kind": kind,
        "priority": Priority.NORMAL,
        "auto_delete_s": None,
    }
    fields.update(changes)
    return Header(**fields)


def make_envelope(
    hpke: HpkeSource,
    header: Header,
    padded: bytes,
    targets: Sequence[tuple[Device, int]],
    *,
    label: str,
    app: PrivateKey = APP,
) -> Sealed:
    """Seal ``padded`` to each ``(device, key id)`` and sign, from the primitives."""
    content_key = fixed(f"{label}/content-key", 32)
    nonce = fixed(f"{label}/nonce", 12)
    payload = seal_payload(content_key, nonce, padded, header.canonical())
    entries = tuple(
        KeyEntry(
            device.device_id,
            key_id,
            hpke.seal(
                content_key, device.prekey(key_id), key_entry_info(header, device.device_id, key_id)
            ),
        )
        for device, key_id in targets
    )
    unsigned = SealedEnvelope(header, point_bytes(app.public_key()), entries, nonce, payload, b"")
    return Sealed(sign_envelope(unsigned, app), content_key, padded)


def resign(envelope: SealedEnvelope, app: PrivateKey = APP, **changes: Any) -> SealedEnvelope:
    """``envelope`` with ``changes``, signed again by ``app`` (a dishonest or buggy app)."""
    return sign_envelope(dataclasses.replace(envelope, **changes), app)


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def off_curve(point: bytes) -> bytes:
    """``point`` with y + 1: still 0x04 || X || Y, 65 bytes, no longer on P-256."""
    y = (int.from_bytes(point[33:], "big") + 1) % 2**256
    return point[:33] + y.to_bytes(32, "big")


def dumps(value: object) -> str:
    """Sorted, compact JSON that also writes floats (for malformed vectors)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Sections


def keys_section() -> list[Json]:
    return [
        {
            "name": name,
            "description": description,
            "jid": jid,
            "private_hex": private_scalar(key).hex(),
            "public_hex": public_hex(key),
            "public_b64url": b64url(point_bytes(key.public_key())),
            "fingerprint": fingerprint(key.public_key()),
        }
        for name, description, jid, key in (
            ("app", "The app's ECDSA P-256 signing key; signs every envelope.", APP_JID, APP),
            (
                "other-app",
                "Another signing key: a rotated app key or an impersonator.",
                APP_JID,
                OTHER_APP,
            ),
        )
    ]


PADDING_LENGTHS = (0, 1, 100, 255, 256, 300, 400, 511, 512, 1000, 1024, 4096, 10_000, 65_535)


def padding_section() -> Json:
    example = b'{"kind":"text","text":"hi"}'
    return {
        "description": (
            "padded_length(n) = Padme(max(n + 1, 256)); padded = plaintext || 0x80 || zeros."
        ),
        "lengths": [{"n": n, "padded_length": padded_length(n)} for n in PADDING_LENGTHS],
        "example": {
            "plaintext_hex": example.hex(),
            "padded_hex": pad(example).hex(),
        },
    }


def signature_encoding_section() -> list[Json]:
    """DER and P1363 forms of signatures whose DER INTEGERs take each shape."""
    wanted: dict[str, tuple[str, Callable[[int, int], bool]]] = {
        "der-70-bytes": (
            "r and s both 32 bytes with the high bit clear: DER is 70 bytes",
            lambda r, s: r.bit_length() in range(249, 256) and s.bit_length() in range(249, 256),
        ),
        "r-high-bit": (
            "r has its high bit set: its DER INTEGER gets a leading 0x00 (33 bytes)",
            lambda r, s: r.bit_length() == 256 and s.bit_length() in range(249, 256),
        ),
        "s-short": (
            "s is below 2**247: its DER INTEGER is 31 bytes; P1363 pads it back to 32",
            lambda r, s: s.bit_length() in range(241, 248) and r.bit_length() in range(249, 256),
        ),
    }
    found: list[Json] = []
    counter = 0
    while wanted:
        message = f"signature encoding example {counter}".encode()
        der = sign(APP, message)
        r, s = decode_dss_signature(der)
        for name, (description, test) in list(wanted.items()):
            if test(r, s):
                found.append(
                    {
                        "name": name,
                        "description": description,
                        "public_hex": public_hex(APP),
                        "message_text": message.decode(),
                        "der_hex": der.hex(),
                        "p1363_hex": p1363(der).hex(),
                    }
                )
                del wanted[name]
                break
        counter += 1
    found.sort(key=lambda vector: ["der-70-bytes", "r-high-bit", "s-short"].index(vector["name"]))
    return found


def devices_section() -> list[Json]:
    vectors: list[Json] = []
    for device in DEVICES:
        bundle = device.bundle(device.opk_ids)
        roles: list[tuple[PrekeyRole, Prekey]] = [("spk", bundle.signed_prekey)]
        roles += [("opk", p) for p in bundle.one_time_prekeys]
        vectors.append(
            {
                "name": device.name,
                "description": (
                    f"The keys of {device.name} and the bundle it publishes: identity key, "
                    f"signed prekey {device.spk_id} and {len(device.opk_ids)} one-time prekeys."
                ),
                "jid": device.jid,
                "device_id": device.device_id,
                "identity_private_hex": private_scalar(device.identity).hex(),
                "identity_public_hex": public_hex(device.identity),
                "identity_fingerprint": fingerprint(device.identity.public_key()),
                "prekeys": [
                    {
                        "type": role,
                        "key_id": prekey.key_id,
                        "private_hex": private_scalar(device.prekey(prekey.key_id)).hex(),
                        "public_hex": prekey.public_key.hex(),
                        "signature_input": text_and_hex(
                            prekey_signature_input(
                                device.jid, device.device_id, role, prekey.key_id, prekey.public_key
                            )
                        ),
                        "signature_der_hex": prekey.signature.hex(),
                        "signature_p1363_hex": p1363(prekey.signature).hex(),
                    }
                    for role, prekey in roles
                ],
                "bundle_text": bundle.to_bytes().decode("utf-8"),
            }
        )
    return vectors


@dataclass(frozen=True)
class SealCase:
    name: str
    description: str
    content: Content
    message_id: str
    targets: tuple[tuple[Device, int | None], ...]
    priority: Priority = Priority.NORMAL
    auto_delete_s: int | None = None
    expires_ms: int = T0 + DAY


UNICODE_TEXT = (
    'Quote " backslash \\ slash / newline\n tab\t bell \x07 unit-separator \x1f '
    "delete \x7f e-acute \u00e9 CJK \u4e2d\u6587 emoji \U0001f600 line-separator \u2028 "
    "markup </envelope> & <b>. "
) * 3

SEAL_CASES = (
    SealCase(
        "text-two-devices",
        "A text to both of Alice's devices: the phone's entry is sealed to the one-time "
        "prekey the lookup handed out (2), the laptop's to its signed prekey (its pool was "
        "empty).",
        TextContent("Your parcel 4711 arrives today between 14:00 and 16:00."),
        "4f6c1c1e-9d1a-4c0e-8b59-0a4b7d2f3e11",
        ((PHONE, 2), (LAPTOP, None)),
    ),
    SealCase(
        "otp-auto-delete",
        "A one-time password to the phone (one-time prekey 3), high priority, deleted 300 s "
        "after it is shown, valid 5 minutes.",
        OtpContent("493817", "Sign in to Parichay"),
        "otp-2026-000042",
        ((PHONE, 3),),
        priority=Priority.HIGH,
        auto_delete_s=300,
        expires_ms=T0 + 5 * MINUTE,
    ),
    SealCase(
        "file-max-lifetime",
        "A file reference to the laptop (signed prekey), bulk priority, living the maximum "
        "30 days; the message id uses every punctuation character allowed.",
        FileContent(
            name="Invoice M\u00e4rz 2026.pdf",
            media_type="application/pdf",
            size=48_213,
            url="https://gateway.example.org/v1/blobs/b7Yc2Qe1?sig=x-y_z",
            file_key=fixed("file-max-lifetime/file-key", 32),
            sha256=hashlib.sha256(b"the invoice").hexdigest(),
        ),
        "inv.2026-03:7~a_b",
        ((LAPTOP, None),),
        priority=Priority.BULK,
        expires_ms=T0 + MAX_LIFETIME,
    ),
    SealCase(
        "text-unicode-escapes",
        "A text exercising canonical JSON escaping (quote, backslash, control characters as "
        "\\u00XX lowercase, DEL, U+2028 and non-ASCII raw as UTF-8, '/' not escaped) and a "
        "padding bucket above the 256-byte minimum.",
        TextContent(UNICODE_TEXT),
        "unicode-1",
        ((PHONE, 4), (LAPTOP, None)),
    ),
)


def seal_case(case: SealCase, hpke: HpkeSource) -> tuple[Json, Sealed]:
    bundles = [device.bundle(() if opk is None else (opk,)) for device, opk in case.targets]
    header = make_header(
        case.message_id,
        content_kind(case.content),
        priority=case.priority,
        auto_delete_s=case.auto_delete_s,
        expires_ms=case.expires_ms,
    )
    content_json = content_to_json(case.content)
    targets = [
        (device, bundle.recipient_prekey()[0].key_id)
        for (device, _), bundle in zip(case.targets, bundles, strict=True)
    ]
    sealed = make_envelope(hpke, header, pad(content_json), targets, label=case.name)
    envelope = sealed.envelope
    entries = []
    for (device, key_id), entry in zip(targets, envelope.keys, strict=True):
        info = key_entry_info(header, device.device_id, key_id)
        entries.append(
            {
                "device_id": entry.device_id,
                "key_id": entry.key_id,
                "prekey_type": "spk" if key_id == device.spk_id else "opk",
                "recipient_public_hex": public_hex(device.prekey(key_id)),
                "recipient_private_hex": private_scalar(device.prekey(key_id)).hex(),
                "info": text_and_hex(info),
                "sealed_hex": entry.sealed.hex(),
                "enc_hex": entry.sealed[:65].hex(),
                "ct_hex": entry.sealed[65:].hex(),
            }
        )
    vector = {
        "name": case.name,
        "description": case.description,
        "inputs": {
            "app_jid": APP_JID,
            "app_private_hex": private_scalar(APP).hex(),
            "app_public_hex": public_hex(APP),
            "recipient_jid": ALICE,
            "message_id": case.message_id,
            "created_ms": header.created_ms,
            "expires_ms": header.expires_ms,
            "priority": case.priority.value,
            "auto_delete_s": case.auto_delete_s,
            "content": json.loads(content_json),
            "content_key_hex": sealed.content_key.hex(),
            "nonce_hex": envelope.nonce.hex(),
            "bundles": [bundle.to_bytes().decode("utf-8") for bundle in bundles],
        },
        "content_json": text_and_hex(content_json),
        "padded_content": {"length": len(sealed.padded), "hex": sealed.padded.hex()},
        "header": text_and_hex(header.canonical()),
        "payload": {"length": len(envelope.payload), "hex": envelope.payload.hex()},
        "key_entries": entries,
        "signature_input": text_and_hex(envelope.signature_input()),
        "signature": {
            "der_hex": envelope.signature.hex(),
            "p1363_hex": p1363(envelope.signature).hex(),
        },
        "envelope_text": sealed.text(),
    }
    return vector, sealed


def context(
    message_id: str,
    *,
    now_ms: int = NOW,
    pinned: PrivateKey | None = APP,
    require_pinned: bool = False,
    sender_jid: str = APP_JID,
    stanza_id: str | None = None,
) -> Json:
    return {
        "now_ms": now_ms,
        "pinned_app_key_hex": None if pinned is None else public_hex(pinned),
        "require_pinned": require_pinned,
        "sender_jid": sender_jid,
        "stanza_id": message_id if stanza_id is None else stanza_id,
        "app_domain": GATEWAY_DOMAIN,
    }


def open_vector(
    name: str,
    description: str,
    sealed: Sealed,
    device: Device,
    *,
    text: str | None = None,
    ctx: Json | None = None,
) -> Json:
    envelope = sealed.envelope
    entry = envelope.entry_for(device.device_id)
    assert entry is not None
    plaintext = sealed.padded[: sealed.padded.rindex(b"\x80")]
    return {
        "name": name,
        "description": description,
        "device": device.to_json(),
        "context": ctx or context(envelope.header.message_id),
        "envelope_text": text or sealed.text(),
        "expected": {
            "plaintext_hex": plaintext.hex(),
            "content_json": content_to_json(content_from_json(plaintext)).decode("utf-8"),
            "header": envelope.header.canonical().decode("utf-8"),
            "key_id": entry.key_id,
            "app_public_hex": envelope.app_key.hex(),
            "app_fingerprint": fingerprint(envelope.app_key),
        },
    }


def _reordered(value: object) -> object:
    """``value`` with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


def noncanonical_text(sealed: Sealed) -> str:
    text = json.dumps(_reordered(sealed.envelope.to_json()), indent=2)
    # A JSON escape for an ASCII letter: the same string once parsed.
    target = f'"app": "{APP_JID}"'
    assert target in text
    return text.replace(target, '"app": "\\u0070arichay-otp@gateway.example.org"')


def other_of_pair(envelope: SealedEnvelope) -> SealedEnvelope:
    """The same signature with s replaced by n - s: also valid ECDSA."""
    r, s = decode_dss_signature(envelope.signature)
    return dataclasses.replace(envelope, signature=encode_dss_signature(r, CURVE_ORDER - s))


def open_section(seals: dict[str, Sealed], hpke: HpkeSource) -> list[Json]:
    two = seals["text-two-devices"]
    otp = seals["otp-auto-delete"]
    file = seals["file-max-lifetime"]
    uni = seals["text-unicode-escapes"]
    loose_content = b'{ "text" : "Loose JSON, still valid.",\n  "kind" : "text" }'
    loose = make_envelope(
        hpke,
        make_header("loose-content-json"),
        pad(loose_content),
        [(LAPTOP, 1)],
        label="loose-content-json",
    )
    pair = other_of_pair(two.envelope)
    vectors = [
        open_vector(
            "text-two-devices/phone-first-use",
            "The phone opens the text with one-time prekey 2; no app key is pinned yet "
            "(trust on first use: pin app_public_hex after this succeeds).",
            two,
            PHONE,
            ctx=context(two.envelope.header.message_id, pinned=None),
        ),
        open_vector(
            "text-two-devices/laptop",
            "The laptop opens the same text with its signed prekey 1; the app key is pinned.",
            two,
            LAPTOP,
        ),
        open_vector("otp-auto-delete/phone", "The phone opens the OTP.", otp, PHONE),
        open_vector(
            "file-max-lifetime/laptop-last-millisecond",
            "The laptop opens the file reference one millisecond before it expires.",
            file,
            LAPTOP,
            ctx=context(
                file.envelope.header.message_id, now_ms=file.envelope.header.expires_ms - 1
            ),
        ),
        open_vector(
            "text-unicode-escapes/phone", "The phone opens the escaping test text.", uni, PHONE
        ),
        open_vector(
            "text-unicode-escapes/laptop", "The laptop opens the escaping test text.", uni, LAPTOP
        ),
        open_vector(
            "text-two-devices/phone-noncanonical-text",
            "The envelope as non-canonical JSON text (indented, keys in reverse order, a "
            "\\u0070 escape): receivers re-serialise the parsed values canonically to check "
            "the signature and the AAD, so it opens.",
            two,
            PHONE,
            text=noncanonical_text(two),
        ),
        open_vector(
            "text-two-devices/laptop-other-signature-of-pair",
            "The signature with s replaced by n - s (ECDSA's twin signature) verifies too: "
            "envelope v1 has no low-S rule, so never use signature bytes as an identifier.",
            Sealed(pair, two.content_key, two.padded),
            LAPTOP,
        ),
        open_vector(
            "loose-content-json/laptop",
            "The decrypted content JSON is not canonical (spaces, unsorted keys); it is "
            "parsed, not compared, so it opens. Senders should still send canonical JSON.",
            loose,
            LAPTOP,
        ),
    ]
    return vectors


def negative_envelope(
    name: str,
    description: str,
    error: str,
    why: str,
    *,
    envelope: SealedEnvelope | None = None,
    text: str | None = None,
    data: bytes | None = None,
    device: Device = PHONE,
    key_ids: Sequence[int] | None = None,
    ctx: Json,
) -> Json:
    vector: Json = {
        "name": name,
        "description": description,
        "input": "envelope",
        "device": device.to_json(key_ids),
        "context": ctx,
    }
    if data is not None:
        vector["envelope_hex"] = data.hex()
    else:
        vector["envelope_text"] = text if text is not None else envelope_text(envelope)
    vector["expected_error"] = error
    vector["error_ancestors"] = error_ancestors(error)
    vector["why"] = why
    return vector


def envelope_text(envelope: SealedEnvelope | None) -> str:
    assert envelope is not None
    return envelope.to_bytes().decode("utf-8")


def _short_der(base: Sealed) -> SealedEnvelope:
    """``base`` re-signed with created_ms nudged until its DER signature is at most 71 bytes.

    The key entries stay (``info`` does not cover created_ms); only the payload's AAD
    and the signature change, so the search is deterministic.
    """
    envelope = base.envelope
    for delta in range(1, 1000):
        header = dataclasses.replace(envelope.header, created_ms=envelope.header.created_ms + delta)
        payload = seal_payload(base.content_key, envelope.nonce, base.padded, header.canonical())
        candidate = resign(envelope, header=header, payload=payload)
        if len(candidate.signature) <= 71:
            return candidate
    raise AssertionError("no short DER signature found")


def _ber_long_length(der: bytes) -> bytes:
    """The same SEQUENCE with its length in BER long form (0x81 LL): valid BER, not DER."""
    return der[:1] + b"\x81" + der[1:]


def negative_envelopes(seals: dict[str, Sealed], hpke: HpkeSource) -> list[Json]:
    two = seals["text-two-devices"]
    otp = seals["otp-auto-delete"]
    env = two.envelope
    mid = env.header.message_id
    ctx = context(mid)
    value: Json = json.loads(two.text())
    text = two.text()
    phone_entry = env.keys[0]
    laptop_entry = env.keys[1]
    vectors: list[Json] = []

    def add(name: str, description: str, error: str, why: str, **kwargs: Any) -> None:
        kwargs.setdefault("ctx", ctx)
        vectors.append(negative_envelope(name, description, error, why, **kwargs))

    def edited(edit: Any) -> str:
        copy = json.loads(json.dumps(value))
        edit(copy)
        return dumps(copy)

    # Signature

    add(
        "bad-signature/header-changed",
        "The header's priority changed from normal to high after signing.",
        "BadSignature",
        "The signature covers the whole envelope but the signature; it is checked before "
        "the payload, whose AAD would also fail.",
        text=edited(lambda v: v["header"].update(priority="high")),
    )
    add(
        "bad-signature/key-entries-reordered",
        "The two key entries swapped places.",
        "BadSignature",
        "Arrays keep their order in canonical JSON, so the signature input changed.",
        text=edited(lambda v: v["keys"].reverse()),
    )
    add(
        "bad-signature/payload-changed",
        "One payload bit flipped; the signature was not redone.",
        "BadSignature",
        "The app signature is checked before any decryption.",
        envelope=dataclasses.replace(env, payload=flip_last(env.payload)),
    )
    add(
        "bad-signature/p1363-instead-of-der",
        "The right signature, but as IEEE P1363 r || s (64 bytes, what WebCrypto returns).",
        "BadSignature",
        "Signatures travel as strict DER; convert P1363 to DER before sending.",
        envelope=dataclasses.replace(env, signature=p1363(env.signature)),
    )
    short = _short_der(two)
    add(
        "bad-signature/ber-long-form-length",
        "A valid signature of this envelope, with the DER SEQUENCE length written in BER "
        "long form (0x30 0x81 LL): accepted by lenient BER parsers.",
        "BadSignature",
        "Only the one strict DER encoding is accepted.",
        envelope=dataclasses.replace(short, signature=_ber_long_length(short.signature)),
    )
    add(
        "bad-signature/signed-by-other-key",
        "app_key is the pinned app key, but the signature was made with another key.",
        "BadSignature",
        "The signature must verify under app_key.",
        envelope=dataclasses.replace(env, signature=sign(OTHER_APP, env.signature_input())),
    )

    # App key pinning

    impostor = make_envelope(
        hpke,
        make_header("impostor-1"),
        two.padded,
        [(PHONE, 2), (LAPTOP, 1)],
        label="impostor-1",
        app=OTHER_APP,
    )
    add(
        "app-key-changed/valid-envelope-other-key",
        "A well-formed, correctly signed envelope from the app JID, signed with a key other "
        "than the pinned one.",
        "AppKeyChanged",
        "The pinned key is compared before the signature: the user must decide (app key "
        "rotation or impersonation); nothing is shown.",
        envelope=impostor.envelope,
        ctx=context("impostor-1"),
    )
    add(
        "app-key-changed/checked-before-signature",
        "As above, with a broken signature as well.",
        "AppKeyChanged",
        "Check order: the pinned key comes before the signature.",
        envelope=dataclasses.replace(
            impostor.envelope, signature=sign(APP, impostor.envelope.signature_input())
        ),
        ctx=context("impostor-1"),
    )
    add(
        "unpinned-app-key/require-pinned",
        "A valid envelope, no key pinned for the app JID, and the device requires one.",
        "UnpinnedAppKey",
        "With require_pinned the device refuses to trust on first use.",
        envelope=env,
        ctx=context(mid, pinned=None, require_pinned=True),
    )

    # Header against the stanza

    add(
        "tampered-header/sender",
        "A valid envelope delivered from another app's JID.",
        "TamperedHeader",
        "The stanza's bare 'from' must equal header.app.",
        envelope=env,
        ctx=context(mid, sender_jid=OTHER_APP_JID),
    )
    add(
        "tampered-header/stanza-id",
        "A valid envelope in a stanza whose id is not the header's message id.",
        "TamperedHeader",
        "The stanza id must equal header.message_id.",
        envelope=env,
        ctx=context(mid, stanza_id="another-message-id"),
    )

    # The app's domain

    foreign: dict[str, SealedEnvelope] = {}
    for label, app_jid, description in (
        (
            "ordinary-account",
            IMPOSTOR_JID,
            "An ordinary account on the user's own server, named like the app, sends a "
            "well-formed envelope it signed with its own key; no key is pinned for it.",
        ),
        (
            "subdomain-of-gateway",
            SUBDOMAIN_APP_JID,
            "The same from an address on a subdomain of the gateway's component domain.",
        ),
    ):
        foreign[label] = make_envelope(
            hpke,
            make_header(f"foreign-{label}", app=app_jid),
            two.padded,
            [(PHONE, 2), (LAPTOP, 1)],
            label=f"foreign-{label}",
            app=OTHER_APP,
        ).envelope
        add(
            f"foreign-app/{label}",
            description,
            "ForeignApp",
            "The domain of header.app must equal the gateway's component domain the device "
            "was configured with (app_domain), exactly; never pin a foreign app's key.",
            envelope=foreign[label],
            ctx=context(f"foreign-{label}", pinned=None, sender_jid=app_jid),
        )
    add(
        "foreign-app/checked-before-recipient",
        "The ordinary account's envelope, opened by Bob's device (addressed to Alice).",
        "ForeignApp",
        "Check order: the app's domain (step 6a) comes before the recipient (step 7).",
        envelope=foreign["ordinary-account"],
        device=BOB_PHONE,
        ctx=context("foreign-ordinary-account", pinned=None, sender_jid=IMPOSTOR_JID),
    )

    # Recipient and device

    add(
        "wrong-recipient/other-account",
        "Alice's envelope opened by Bob's device, which has the same device id as Alice's phone.",
        "WrongRecipient",
        "header.to must be the device's own bare JID.",
        envelope=env,
        device=BOB_PHONE,
    )
    add(
        "wrong-device/no-entry",
        "Alice's tablet, published after the message was sealed, has no key entry.",
        "WrongDevice",
        "No entry in keys has this device's id.",
        envelope=env,
        device=TABLET,
    )
    add(
        "wrong-device/checked-before-expiry",
        "No entry for the tablet and the envelope expired as well.",
        "WrongDevice",
        "Check order: recipient and device come before expiry.",
        envelope=env,
        device=TABLET,
        ctx=context(mid, now_ms=env.header.expires_ms + DAY),
    )

    # Expiry

    add(
        "expired/at-expiry",
        "now_ms equals header.expires_ms.",
        "Expired",
        "An envelope is valid while now_ms < expires_ms.",
        envelope=env,
        ctx=context(mid, now_ms=env.header.expires_ms),
    )
    add(
        "expired/checked-before-prekey",
        "An expired replay: the one-time prekey is gone too.",
        "Expired",
        "Check order: expiry comes before the prekey lookup.",
        envelope=env,
        key_ids=[PHONE.spk_id, 3, 4],
        ctx=context(mid, now_ms=env.header.expires_ms + 1),
    )

    # Prekeys

    add(
        "unknown-key-id/one-time-prekey-used",
        "A replay: the phone already opened this envelope and deleted one-time prekey 2.",
        "UnknownKeyId",
        "The device no longer holds the prekey the entry names.",
        envelope=env,
        key_ids=[PHONE.spk_id, 3, 4],
    )
    never = dataclasses.replace(
        phone_entry,
        key_id=99,
        sealed=hpke.seal(
            two.content_key, PHONE.prekey(2), key_entry_info(env.header, PHONE.device_id, 99)
        ),
    )
    add(
        "unknown-key-id/never-issued",
        "The phone's entry names prekey 99, which the phone never made.",
        "UnknownKeyId",
        "The device holds no prekey 99.",
        envelope=resign(env, keys=(never, laptop_entry)),
    )

    # Key entries (the app re-signed each change: only HPKE can catch them)

    add(
        "tampered-key-entry/bit-flip",
        "The last byte of the phone's sealed content key (the HPKE tag) flipped; re-signed.",
        "TamperedKeyEntry",
        "HPKE open fails.",
        envelope=resign(
            env,
            keys=(
                dataclasses.replace(phone_entry, sealed=flip_last(phone_entry.sealed)),
                laptop_entry,
            ),
        ),
    )
    otp_entry = otp.envelope.keys[0]
    add(
        "tampered-key-entry/moved-from-other-message",
        "The phone's entry of the OTP message (one-time prekey 3) copied into this message; "
        "re-signed. The phone holds prekey 3.",
        "TamperedKeyEntry",
        "HPKE info binds the entry to its message id; open fails with this message's info.",
        envelope=resign(env, keys=(otp_entry, laptop_entry)),
    )
    misfiled = dataclasses.replace(
        phone_entry,
        key_id=PHONE.spk_id,
        sealed=hpke.seal(
            two.content_key,
            PHONE.prekey(2),
            key_entry_info(env.header, PHONE.device_id, PHONE.spk_id),
        ),
    )
    add(
        "tampered-key-entry/sealed-to-other-prekey",
        "The entry names the signed prekey 1 (and info says key 1), but it was sealed to "
        "one-time prekey 2; re-signed.",
        "TamperedKeyEntry",
        "The entry does not open with the private key of the prekey it names.",
        envelope=resign(env, keys=(misfiled, laptop_entry)),
    )
    bad_enc = off_curve(phone_entry.sealed[:65]) + phone_entry.sealed[65:]
    add(
        "tampered-key-entry/enc-not-on-curve",
        "The entry's enc (the first 65 bytes) replaced by a point off P-256; re-signed.",
        "TamperedKeyEntry",
        "HPKE refuses the encapsulated key.",
        envelope=resign(env, keys=(dataclasses.replace(phone_entry, sealed=bad_enc), laptop_entry)),
    )

    # Payload

    add(
        "tampered-payload/bit-flip",
        "The last payload byte (GCM tag) flipped; re-signed.",
        "TamperedPayload",
        "AES-256-GCM open fails.",
        envelope=resign(env, payload=flip_last(env.payload)),
    )
    add(
        "tampered-payload/header-is-aad",
        "auto_delete_s: 60 added to the header after the payload was sealed; re-signed. "
        "The key entries still open (info does not cover auto_delete_s).",
        "TamperedPayload",
        "The payload's AAD is the canonical header: any header change breaks it.",
        envelope=resign(env, header=dataclasses.replace(env.header, auto_delete_s=60)),
    )
    add(
        "tampered-payload/nonce-changed",
        "The nonce changed; re-signed.",
        "TamperedPayload",
        "AES-256-GCM open fails under another nonce.",
        envelope=resign(env, nonce=flip_last(env.nonce)),
    )
    add(
        "tampered-payload/shorter-than-tag",
        "A 15-byte payload, shorter than a GCM tag; re-signed.",
        "TamperedPayload",
        "AES-256-GCM open fails.",
        envelope=resign(env, payload=env.payload[:15]),
    )
    add(
        "tampered-payload/empty",
        "An empty payload (the empty base64url string); re-signed.",
        "TamperedPayload",
        "The form check sets no minimum payload length: a payload shorter than the 16-byte "
        "GCM tag fails to decrypt (step 12).",
        envelope=resign(env, payload=b""),
    )

    # Form: strict JSON

    add(
        "malformed/duplicate-key",
        "The top-level object has 'v' twice.",
        "MalformedEncoding",
        "Duplicate keys are refused (a signature check on one reading would be unsafe).",
        text=text.replace('{"app_key":', '{"v":1,"app_key":', 1),
    )
    add(
        "malformed/unknown-field",
        "An extra top-level field 'x'.",
        "MalformedEncoding",
        "Unknown fields are refused, never ignored.",
        text=edited(lambda v: v.update(x=1)),
    )
    add(
        "malformed/unknown-header-field",
        "An extra header field 'subject'.",
        "MalformedEncoding",
        "Unknown fields are refused at every level.",
        text=edited(lambda v: v["header"].update(subject="hello")),
    )
    add(
        "malformed/missing-nonce",
        "The 'nonce' field is missing.",
        "MalformedEncoding",
        "Every field but header.auto_delete_s is required.",
        text=edited(lambda v: v.pop("nonce")),
    )
    add(
        "malformed/float",
        "'v' is 1.0.",
        "MalformedEncoding",
        "Numbers with a fraction or exponent are refused, even when integral.",
        text=edited(lambda v: v.update(v=1.0)),
    )
    add(
        "malformed/integer-as-string",
        "keys[0].device_id is a string.",
        "MalformedEncoding",
        "Integers are JSON numbers.",
        text=edited(lambda v: v["keys"][0].update(device_id=str(PHONE.device_id))),
    )
    add(
        "malformed/version-2",
        "'v' is 2.",
        "MalformedEncoding",
        "Only version 1 exists.",
        text=edited(lambda v: v.update(v=2)),
    )
    add(
        "malformed/byte-order-mark",
        "The text starts with U+FEFF.",
        "MalformedEncoding",
        "The envelope is plain UTF-8 JSON; a BOM is not JSON.",
        text="\ufeff" + text,
    )
    add(
        "malformed/integer-4301-digits",
        "'v' is an integer literal of 4301 digits.",
        "MalformedEncoding",
        "Integers beyond 2**53 - 1 are refused (and must not crash a parser).",
        text=text[: text.rindex('"v":1}')] + '"v":' + "1" * 4301 + "}",
    )
    add(
        "malformed/header-lone-surrogate",
        "header.app contains the escape \\ud800 without its pair.",
        "MalformedEncoding",
        "A string with an unpaired surrogate has no UTF-8 form, hence no canonical form.",
        text=text.replace('"app":"parichay-otp@', '"app":"parichay-otp\\ud800@', 1),
    )
    bad_utf8 = text.encode().replace(b"alice@", b"al\xffce@", 1)
    add(
        "malformed/invalid-utf8",
        "A byte 0xFF inside header.to (given as envelope_hex).",
        "MalformedEncoding",
        "The envelope must be valid UTF-8.",
        data=bad_utf8,
    )

    # Form: base64url

    key_b64 = value["app_key"]["public_key"]
    add(
        "malformed/base64url-padded",
        "app_key.public_key ends with '='.",
        "MalformedEncoding",
        "Base64url is unpadded.",
        text=text.replace(key_b64, key_b64 + "=", 1),
    )
    last = key_b64[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 65 bytes use 520 of the 522 bits of 87 characters: set a spare low bit.
    noncanonical = key_b64[:-1] + alphabet[alphabet.index(last) | 1]
    assert noncanonical != key_b64
    add(
        "malformed/base64url-nonzero-spare-bits",
        "app_key.public_key's last character has a non-zero unused low bit: it decodes to "
        "the same bytes in lenient decoders.",
        "MalformedEncoding",
        "Only the canonical encoding is accepted.",
        text=text.replace(key_b64, noncanonical, 1),
    )
    payload_b64 = value["payload"]
    assert "-" in payload_b64 or "_" in payload_b64
    standard = payload_b64.replace("-", "+").replace("_", "/")
    add(
        "malformed/base64-standard-alphabet",
        "The payload in the standard base64 alphabet ('+' and '/').",
        "MalformedEncoding",
        "Only the URL-safe alphabet is accepted.",
        text=text.replace(payload_b64, standard, 1),
    )

    # Form: values

    add(
        "malformed/fingerprint-uppercase",
        "app_key.fingerprint in uppercase hex.",
        "MalformedEncoding",
        "The fingerprint must be the lowercase hex SHA-256 of the point, exactly.",
        text=edited(lambda v: v["app_key"].update(fingerprint=v["app_key"]["fingerprint"].upper())),
    )
    add(
        "malformed/device-listed-twice",
        "The phone's key entry appears twice.",
        "MalformedEncoding",
        "Each device has at most one entry.",
        text=edited(lambda v: v["keys"].append(v["keys"][0])),
    )
    add(
        "malformed/no-key-entries",
        "'keys' is empty.",
        "MalformedEncoding",
        "An envelope has 1 to 64 key entries.",
        text=edited(lambda v: v.update(keys=[])),
    )
    add(
        "malformed/nonce-16-bytes",
        "A 16-byte nonce; re-signed.",
        "MalformedEncoding",
        "The nonce is exactly 12 bytes.",
        envelope=resign(env, nonce=env.nonce + bytes(4)),
    )
    add(
        "malformed/sealed-112-bytes",
        "The phone's sealed entry is one byte short.",
        "MalformedEncoding",
        "A sealed entry is exactly 113 bytes.",
        text=edited(lambda v: v["keys"][0].update(sealed=b64url(phone_entry.sealed[:-1]))),
    )
    add(
        "malformed/expires-not-after-created",
        "header.expires_ms equals header.created_ms.",
        "MalformedEncoding",
        "created_ms < expires_ms is required.",
        text=edited(lambda v: v["header"].update(expires_ms=v["header"]["created_ms"])),
    )
    add(
        "malformed/lifetime-over-30-days",
        "header.expires_ms is 30 days and 1 ms after created_ms.",
        "MalformedEncoding",
        "An envelope lives at most 30 days (2592000000 ms).",
        text=edited(
            lambda v: v["header"].update(expires_ms=v["header"]["created_ms"] + MAX_LIFETIME + 1)
        ),
    )
    add(
        "malformed/app-full-jid",
        "header.app carries a resource.",
        "MalformedEncoding",
        "header.app and header.to are bare JIDs.",
        text=edited(lambda v: v["header"].update(app=APP_JID + "/bot")),
    )
    add(
        "malformed/message-id-space",
        "header.message_id contains a space.",
        "MalformedEncoding",
        "A message id is 1 to 128 of A-Z a-z 0-9 . _ : ~ -.",
        text=edited(lambda v: v["header"].update(message_id="msg 1")),
    )
    add(
        "malformed/app-key-compressed",
        "app_key.public_key is the 33-byte compressed point (fingerprint matching).",
        "MalformedEncoding",
        "app_key.public_key must decode to exactly 65 bytes; checked before the point.",
        text=edited(lambda v: v["app_key"].update(**_compressed_app_key())),
    )

    # Form: the decrypted content (each envelope is well-formed and correctly signed)

    def content_case(label: str, padded: bytes, kind: str = "text") -> SealedEnvelope:
        return make_envelope(
            hpke, make_header(label, kind), padded, [(PHONE, 2)], label=label
        ).envelope

    for label, description, padded, kind, why in (
        (
            "content-kind-mismatch",
            "The header says otp; the content is a text.",
            pad(b'{"kind":"text","text":"hello"}'),
            "otp",
            "content.kind must equal header.kind (checked last).",
        ),
        (
            "padding-no-marker",
            "The plaintext is followed by zeros only, no 0x80.",
            b'{"kind":"text","text":"hello"}' + bytes(226),
            "text",
            "The padding is 0x80 then zeros.",
        ),
        (
            "padding-wrong-bucket",
            "A 30-byte plaintext padded to 512 bytes instead of 256.",
            b'{"kind":"text","text":"hello"}\x80' + bytes(481),
            "text",
            "The padded length must be exactly padded_length(n).",
        ),
        (
            "padding-below-minimum",
            "A 30-byte plaintext and its 0x80, not padded to the 256-byte minimum: a "
            "47-byte payload that decrypts.",
            b'{"kind":"text","text":"hello"}\x80',
            "text",
            "A payload shorter than 272 bytes (256 + the tag) cannot hold a padded content; "
            "it authenticates, so unpadding refuses it (step 13).",
        ),
        (
            "content-unknown-field",
            "The content has an extra field 'lang'.",
            pad(b'{"kind":"text","lang":"en","text":"hello"}'),
            "text",
            "Unknown content fields are refused.",
        ),
        (
            "content-empty-text",
            "The text is empty.",
            pad(b'{"kind":"text","text":""}'),
            "text",
            "A text has 1 to 16000 characters.",
        ),
        (
            "content-lone-surrogate",
            "The text contains the escape \\ud800 without its pair.",
            pad(b'{"kind":"text","text":"a\\ud800b"}'),
            "text",
            "A string with an unpaired surrogate is refused.",
        ),
        (
            "content-otp-code-space",
            "The OTP code contains a space.",
            pad(b'{"code":"12 34","kind":"otp","purpose":"Sign in"}'),
            "otp",
            "A code is 4 to 12 ASCII letters or digits.",
        ),
    ):
        add(
            f"malformed/{label}",
            description + " Well-formed envelope, correctly signed.",
            "MalformedEncoding",
            why,
            envelope=content_case(label, padded, kind),
            ctx=context(label),
        )

    # Points

    bad_point = off_curve(env.app_key)
    add(
        "invalid-point/app-key-off-curve",
        "app_key.public_key is 0x04 || X || Y with Y off the curve; its fingerprint matches.",
        "InvalidPoint",
        "Every public key must be an uncompressed point on P-256.",
        text=edited(
            lambda v: v["app_key"].update(
                public_key=b64url(bad_point), fingerprint=fingerprint(bad_point)
            )
        ),
        ctx=context(mid, pinned=None),
    )

    # Sizes

    filler = [
        {
            "device_id": 1000 + index,
            "key_id": 1,
            "sealed": b64url(b"\x04" + fixed(f"filler/{index}", 32) * 3 + bytes(16)),
        }
        for index in range(MAX_KEY_ENTRIES + 1 - len(env.keys))
    ]
    add(
        "oversize/65-key-entries",
        "65 key entries (the phone's, the laptop's and 63 fillers of the right size).",
        "OversizeInput",
        "An envelope has at most 64 key entries.",
        text=edited(lambda v: v["keys"].extend(filler)),
    )
    add(
        "oversize/signature-73-bytes",
        "The signature field decodes to 73 bytes.",
        "OversizeInput",
        "A DER P-256 signature is at most 72 bytes.",
        text=edited(
            lambda v: v.update(signature=b64url(env.signature + bytes(73 - len(env.signature))))
        ),
    )
    return vectors


def _compressed_app_key() -> dict[str, str]:
    point = point_bytes(APP.public_key())
    compressed = bytes([2 + (point[-1] & 1)]) + point[1:33]
    return {"public_key": b64url(compressed), "fingerprint": fingerprint(compressed)}


def negative_bundle(name: str, description: str, error: str, why: str, bundle: object) -> Json:
    text = bundle if isinstance(bundle, str) else dumps(bundle)
    return {
        "name": name,
        "description": description,
        "input": "bundle",
        "bundle_text": text,
        "expected_jid": ALICE,
        "expected_error": error,
        "error_ancestors": error_ancestors(error),
        "why": why,
    }


def negative_bundles() -> list[Json]:
    bundle = PHONE.bundle(PHONE.opk_ids)
    good = bundle.to_json()
    vectors: list[Json] = []

    def add(name: str, description: str, error: str, why: str, edit: Any) -> None:
        copy = json.loads(json.dumps(good))
        edit(copy)
        vectors.append(negative_bundle(name, description, error, why, copy))

    def replace_opk(index: int, prekey: Prekey) -> Any:
        return lambda v: v["one_time_prekeys"].__setitem__(index, prekey.to_json())

    opk2 = PHONE.prekey(2).public_key()
    spk_public = PHONE.prekey(PHONE.spk_id).public_key()
    add(
        "bundle/bad-signature/other-device-id",
        "One-time prekey 2 signed for another device id of the same account.",
        "BadSignature",
        "The signature input binds the device id.",
        replace_opk(0, sign_prekey(PHONE.identity, ALICE, LAPTOP.device_id, "opk", 2, opk2)),
    )
    add(
        "bundle/bad-signature/opk-signed-as-spk",
        "One-time prekey 2 signed with type 'spk'.",
        "BadSignature",
        "The signature input binds the role.",
        replace_opk(0, sign_prekey(PHONE.identity, ALICE, PHONE.device_id, "spk", 2, opk2)),
    )
    add(
        "bundle/bad-signature/other-jid",
        "One-time prekey 2 signed for bob@example.org.",
        "BadSignature",
        "The signature input binds the owner's bare JID.",
        replace_opk(0, sign_prekey(PHONE.identity, BOB, PHONE.device_id, "opk", 2, opk2)),
    )
    spk = bundle.signed_prekey
    add(
        "bundle/bad-signature/p1363",
        "The signed prekey's signature as P1363 r || s.",
        "BadSignature",
        "Prekey signatures are strict DER.",
        lambda v: v["signed_prekey"].update(signature=b64url(p1363(spk.signature))),
    )
    identity = point_bytes(PHONE.identity.public_key())
    compressed = bytes([2 + (identity[-1] & 1)]) + identity[1:33]
    add(
        "bundle/malformed/identity-key-compressed",
        "identity_key is the 33-byte compressed point.",
        "MalformedEncoding",
        "A key field decodes to exactly 65 bytes, like every fixed-size field; checked "
        "while parsing, before the point.",
        lambda v: v.update(identity_key=b64url(compressed)),
    )
    long_spk = point_bytes(spk_public) + b"\x00"
    add(
        "bundle/malformed/spk-key-66-bytes",
        "The signed prekey's public_key is its point and one more byte (correctly signed).",
        "MalformedEncoding",
        "A key field decodes to exactly 65 bytes; a longer one is malformed, not oversize.",
        lambda v: v.update(
            signed_prekey=Prekey(
                PHONE.spk_id,
                long_spk,
                sign(
                    PHONE.identity,
                    prekey_signature_input(ALICE, PHONE.device_id, "spk", PHONE.spk_id, long_spk),
                ),
            ).to_json()
        ),
    )
    bad = off_curve(point_bytes(opk2))
    add(
        "bundle/invalid-point/opk-off-curve",
        "One-time prekey 2's point is off the curve (signature over it valid).",
        "InvalidPoint",
        "Every key must be on P-256; checked before its signature.",
        replace_opk(
            0,
            Prekey(
                2,
                bad,
                sign(PHONE.identity, prekey_signature_input(ALICE, PHONE.device_id, "opk", 2, bad)),
            ),
        ),
    )
    many = PHONE.bundle(range(2, 103))
    vectors.append(
        negative_bundle(
            "bundle/oversize/101-one-time-prekeys",
            "A bundle with 101 correctly signed one-time prekeys (ids 2 to 102).",
            "OversizeInput",
            "A bundle carries at most 100 one-time prekeys.",
            many.to_bytes().decode("utf-8"),
        )
    )
    add(
        "bundle/malformed/key-id-reused",
        "A one-time prekey with id 1, the signed prekey's id (correctly signed).",
        "MalformedEncoding",
        "Key ids are unique within a device, across the signed and one-time prekeys.",
        replace_opk(0, sign_prekey(PHONE.identity, ALICE, PHONE.device_id, "opk", 1, opk2)),
    )
    add(
        "bundle/malformed/no-p256",
        'suites is ["x25519"].',
        "MalformedEncoding",
        'suites must list "p256" exactly once.',
        lambda v: v.update(suites=["x25519"]),
    )
    add(
        "bundle/malformed/device-id-zero",
        "device_id is 0.",
        "MalformedEncoding",
        "Device ids are 1 to 2**31 - 1.",
        lambda v: v.update(device_id=0),
    )
    add(
        "bundle/malformed/device-id-2-31",
        "device_id is 2**31.",
        "MalformedEncoding",
        "Device ids are 1 to 2**31 - 1.",
        lambda v: v.update(device_id=2**31),
    )
    add(
        "bundle/malformed/unknown-field",
        "An extra field 'label'.",
        "MalformedEncoding",
        "Unknown fields are refused.",
        lambda v: v.update(label="phone"),
    )
    vectors.append(
        negative_bundle(
            "bundle/malformed/other-account",
            "Bob's correctly signed bundle, published from Alice's account.",
            "MalformedEncoding",
            "The bundle's jid must be the account it was expected for (the publisher's bare "
            "JID, or the recipient a sender looked up); a mismatch is malformed.",
            BOB_PHONE.bundle(BOB_PHONE.opk_ids).to_bytes().decode("utf-8"),
        )
    )
    return vectors


def build(previous: object = None) -> Json:
    """Every vector; HPKE key entries reused from ``previous`` where they still fit."""
    hpke = HpkeSource(previous)
    seal_vectors: list[Json] = []
    seals: dict[str, Sealed] = {}
    for case in SEAL_CASES:
        vector, sealed = seal_case(case, hpke)
        seal_vectors.append(vector)
        seals[case.name] = sealed
    open_vectors = open_section(seals, hpke)
    return {
        "description": (
            f"Test vectors for CMaaS envelope v1 ({NAMESPACE}), specified in "
            "docs/protocol.md. Bytes are lowercase hex (*_hex); JSON texts are given as "
            "strings (*_text, or 'text' next to 'hex'). HPKE key entries are randomised, so "
            "'seal' vectors pin every deterministic part and record the sealed entries; "
            "'open' vectors give a device's private keys and an envelope and the exact "
            "content; 'negative' vectors must fail with expected_error. Private keys here "
            "are public test values: never use them."
        ),
        "protocol": NAMESPACE,
        "generator": "tests/vectors/make_vectors.py",
        "checked_by": "tests/unit/test_protocol_vectors.py",
        "hpke_suite": {
            "mode": "base (0x00)",
            "kem_id": 16,
            "kdf_id": 1,
            "aead_id": 2,
            "names": "DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM",
            "aad": "empty",
            "sealed_layout": "enc (65 bytes) || ciphertext of the 32-byte content key (48 bytes)",
        },
        "open_context": (
            "Open with recipient_jid = device.jid, device_id = device.device_id, the "
            "private prekeys listed in device.prekey_ids (taken from 'devices' by "
            "device.name; any other key_id is UnknownKeyId), "
            "now_ms, the pinned app key (null: none pinned yet) and require_pinned, the "
            "stanza's bare 'from' (sender_jid) and its 'id' (stanza_id), and the gateway's "
            "component domain the device is configured with (app_domain; the domain of "
            "header.app must equal it, else ForeignApp)."
        ),
        "keys": keys_section(),
        "padding": padding_section(),
        "signature_encoding": signature_encoding_section(),
        "devices": devices_section(),
        "seal": seal_vectors,
        "open": open_vectors,
        "negative": negative_envelopes(seals, hpke) + negative_bundles(),
    }


def render(vectors: Json) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--reuse",
        type=Path,
        help="a previous vectors file whose HPKE key entries to reuse where they still fit",
    )
    args = parser.parse_args(argv)
    previous = json.loads(args.reuse.read_text("utf-8")) if args.reuse else None
    sys.stdout.write(render(build(previous)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
