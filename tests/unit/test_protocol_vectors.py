"""The envelope v1 test vectors (``docs/protocol-vectors.json``) against the code.

The file is committed: its HPKE key entries are random, everything else is
deterministic. These tests recompute every deterministic part and compare bytes, open
every open vector, expect exactly the named error from every negative vector, and
check that the generator, reusing the recorded HPKE entries, reproduces the file.
Where it is cheap, a part is also recomputed from the bare primitives the way
``docs/protocol.md`` describes it, so the document and the code cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cmaas.envelope import (
    DeviceBundle,
    DeviceKeyring,
    EnvelopeError,
    Header,
    KeyEntry,
    PrivateKey,
    SealedEnvelope,
    UnknownKeyId,
    b64url,
    content_from_json,
    content_to_json,
    key_entry_info,
    open_envelope,
    pad,
    padded_length,
    parse_private_scalar,
    parse_public_key,
    point_bytes,
    prekey_signature_input,
    seal,
    sign,
    sign_envelope,
    unpad,
)
from cmaas.envelope import errors as envelope_errors
from cmaas.envelope.sealed import MAX_KEY_ENTRIES
from cmaas.lifecycle import Priority
from tests.vectors.make_vectors import build, render

ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = ROOT / "docs" / "protocol-vectors.json"
DOC_PATH = ROOT / "docs" / "protocol.md"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text("utf-8"))
DEVICES: dict[str, dict[str, Any]] = {device["name"]: device for device in VECTORS["devices"]}
SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def each(section: str) -> pytest.MarkDecorator:
    vectors = VECTORS[section]
    return pytest.mark.parametrize("vector", vectors, ids=[v["name"] for v in vectors])


def private(hex_text: str) -> PrivateKey:
    return parse_private_scalar(bytes.fromhex(hex_text))


def public_hex(key: PrivateKey) -> str:
    return point_bytes(key.public_key()).hex()


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jcs(value: object) -> bytes:
    """Canonical JSON as docs/protocol.md states it, from the standard library."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def first_difference(a: object, b: object, path: str = "$") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {str(a)[:120]!r} != {str(b)[:120]!r}"


# DER <-> P1363 exactly as docs/protocol.md shows it (byte handling, no cryptography)


def der_to_p1363(der: bytes) -> bytes:
    assert der[0] == 0x30 and der[1] == len(der) - 2
    out = b""
    pos = 2
    for _ in range(2):
        assert der[pos] == 0x02
        length = der[pos + 1]
        value = der[pos + 2 : pos + 2 + length]
        pos += 2 + length
        out += value.lstrip(b"\x00").rjust(32, b"\x00")
    assert pos == len(der)
    return out


def p1363_to_der(raw: bytes) -> bytes:
    def integer(value: bytes) -> bytes:
        value = value.lstrip(b"\x00") or b"\x00"
        if value[0] & 0x80:
            value = b"\x00" + value
        return bytes([0x02, len(value)]) + value

    body = integer(raw[:32]) + integer(raw[32:])
    return bytes([0x30, len(body)]) + body


# The generator reproduces the committed file


def test_committed_file_is_the_generator_output() -> None:
    regenerated = build(VECTORS)
    assert first_difference(regenerated, VECTORS) is None
    assert render(regenerated) == VECTORS_PATH.read_text("utf-8")


def test_vectors_cover_every_error() -> None:
    expected = {vector["expected_error"] for vector in VECTORS["negative"]}
    assert expected >= {
        "BadSignature",
        "AppKeyChanged",
        "UnpinnedAppKey",
        "TamperedHeader",
        "WrongRecipient",
        "WrongDevice",
        "ForeignApp",
        "Expired",
        "UnknownKeyId",
        "TamperedKeyEntry",
        "TamperedPayload",
        "MalformedEncoding",
        "InvalidPoint",
        "OversizeInput",
    }
    names = [v["name"] for section in ("seal", "open", "negative") for v in VECTORS[section]]
    assert len(names) == len(set(names))


def test_every_open_context_names_the_gateway_domain() -> None:
    """Step 6a needs the gateway's component domain: every envelope vector gives it."""
    vectors = VECTORS["open"] + [v for v in VECTORS["negative"] if v["input"] == "envelope"]
    assert {v["context"]["app_domain"] for v in vectors} == {"gateway.example.org"}
    assert "app_domain" in VECTORS["open_context"]


def test_oversize_key_entries_vector_is_one_past_the_limit() -> None:
    (vector,) = (v for v in VECTORS["negative"] if v["name"] == "oversize/65-key-entries")
    entries = json.loads(vector["envelope_text"])["keys"]
    assert len(entries) == MAX_KEY_ENTRIES + 1 == 65
    assert vector["description"].startswith(f"{len(entries)} key entries")


# Keys, padding, signature encodings


@each("keys")
def test_key(vector: dict[str, Any]) -> None:
    key = private(vector["private_hex"])
    point = bytes.fromhex(vector["public_hex"])
    assert point_bytes(key.public_key()) == point
    assert len(point) == 65 and point[0] == 0x04
    assert vector["public_b64url"] == b64url(point)
    assert vector["fingerprint"] == hashlib.sha256(point).hexdigest()


def padme(n: int) -> int:
    """Padme of max(n + 1, 256) with the formula of docs/protocol.md, in floats."""
    length = max(n + 1, 256)
    e = math.floor(math.log2(length))
    s = math.floor(math.log2(e)) + 1
    z = e - s
    return int(math.ceil(length / 2**z) * 2**z)


def test_padding() -> None:
    section = VECTORS["padding"]
    for row in section["lengths"]:
        assert padded_length(row["n"]) == row["padded_length"] == padme(row["n"])
    for n in range(70_000):
        assert padded_length(n) == padme(n)
    plaintext = bytes.fromhex(section["example"]["plaintext_hex"])
    padded = bytes.fromhex(section["example"]["padded_hex"])
    assert pad(plaintext) == padded
    assert padded == plaintext + b"\x80" + bytes(255 - len(plaintext))
    assert unpad(padded) == plaintext


@each("signature_encoding")
def test_signature_encoding(vector: dict[str, Any]) -> None:
    der = bytes.fromhex(vector["der_hex"])
    raw = bytes.fromhex(vector["p1363_hex"])
    message = vector["message_text"].encode()
    assert der_to_p1363(der) == raw
    assert p1363_to_der(raw) == der
    key = parse_public_key(bytes.fromhex(vector["public_hex"]))
    key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    app = private(next(k for k in VECTORS["keys"] if k["name"] == "app")["private_hex"])
    assert sign(app, message) == der  # RFC 6979


# Devices and bundles


@each("devices")
def test_device_bundle(vector: dict[str, Any]) -> None:
    identity = private(vector["identity_private_hex"])
    assert public_hex(identity) == vector["identity_public_hex"]
    assert (
        vector["identity_fingerprint"]
        == hashlib.sha256(bytes.fromhex(vector["identity_public_hex"])).hexdigest()
    )
    jid, device_id = vector["jid"], vector["device_id"]
    for prekey in vector["prekeys"]:
        public = bytes.fromhex(prekey["public_hex"])
        assert public_hex(private(prekey["private_hex"])) == prekey["public_hex"]
        documented = jcs(
            {
                "v": 1,
                "jid": jid,
                "device_id": device_id,
                "type": prekey["type"],
                "key_id": prekey["key_id"],
                "public_key": b64url(public),
            }
        )
        signature_input = prekey_signature_input(
            jid, device_id, prekey["type"], prekey["key_id"], public
        )
        assert signature_input == documented == bytes.fromhex(prekey["signature_input"]["hex"])
        assert signature_input.decode() == prekey["signature_input"]["text"]
        der = bytes.fromhex(prekey["signature_der_hex"])
        assert sign(identity, signature_input) == der
        assert der_to_p1363(der) == bytes.fromhex(prekey["signature_p1363_hex"])
    bundle = DeviceBundle.from_bytes(vector["bundle_text"], expected_jid=jid)
    assert bundle.to_bytes().decode() == vector["bundle_text"]
    assert bundle.fingerprint == vector["identity_fingerprint"]
    assert keyring(vector).bundle().to_bytes().decode() == vector["bundle_text"]


def keyring(device: dict[str, Any], key_ids: list[int] | None = None) -> DeviceKeyring:
    """The device's keyring, as its key file would hold it."""
    spk = next(p for p in device["prekeys"] if p["type"] == "spk")
    opks = [p for p in device["prekeys"] if p["type"] == "opk"]
    if key_ids is not None:
        opks = [p for p in opks if p["key_id"] in key_ids]
    return DeviceKeyring.from_json(
        {
            "v": 1,
            "jid": device["jid"],
            "device_id": device["device_id"],
            "identity": b64url(bytes.fromhex(device["identity_private_hex"])),
            "signed_prekey": {
                "key_id": spk["key_id"],
                "private": b64url(bytes.fromhex(spk["private_hex"])),
                "created_ms": 0,
            },
            "retired_signed_prekeys": [],
            "one_time_prekeys": [
                {
                    "key_id": p["key_id"],
                    "private": b64url(bytes.fromhex(p["private_hex"])),
                    "published": False,
                }
                for p in opks
            ],
            "next_key_id": max(p["key_id"] for p in device["prekeys"]) + 1,
        }
    )


# Seal vectors: every deterministic part, byte for byte


@each("seal")
def test_seal_vector(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    app = private(inputs["app_private_hex"])
    assert public_hex(app) == inputs["app_public_hex"]
    content_key = bytes.fromhex(inputs["content_key_hex"])
    nonce = bytes.fromhex(inputs["nonce_hex"])
    bundles = [
        DeviceBundle.from_bytes(text, expected_jid=inputs["recipient_jid"])
        for text in inputs["bundles"]
    ]
    assert all(len(bundle.one_time_prekeys) <= 1 for bundle in bundles)

    content_json = bytes.fromhex(vector["content_json"]["hex"])
    assert content_json.decode() == vector["content_json"]["text"]
    assert jcs(inputs["content"]) == content_json
    content = content_from_json(content_json)
    assert content_to_json(content) == content_json

    padded = bytes.fromhex(vector["padded_content"]["hex"])
    assert pad(content_json) == padded
    assert len(padded) == vector["padded_content"]["length"] == padded_length(len(content_json))

    header = Header(
        message_id=inputs["message_id"],
        app=inputs["app_jid"],
        to=inputs["recipient_jid"],
        created_ms=inputs["created_ms"],
        expires_ms=inputs["expires_ms"],
        kind=inputs["content"]["kind"],
        priority=Priority(inputs["priority"]),
        auto_delete_s=inputs["auto_delete_s"],
    )
    header_bytes = bytes.fromhex(vector["header"]["hex"])
    assert header.canonical() == header_bytes == jcs(header.to_json())
    assert header_bytes.decode() == vector["header"]["text"]

    payload = bytes.fromhex(vector["payload"]["hex"])
    assert AESGCM(content_key).encrypt(nonce, padded, header_bytes) == payload
    assert len(payload) == vector["payload"]["length"] == len(padded) + 16

    entries = []
    for bundle, recorded in zip(bundles, vector["key_entries"], strict=True):
        prekey = bundle.one_time_prekeys[0] if bundle.one_time_prekeys else bundle.signed_prekey
        assert recorded["device_id"] == bundle.device_id
        assert recorded["key_id"] == prekey.key_id
        assert recorded["prekey_type"] == ("opk" if bundle.one_time_prekeys else "spk")
        assert recorded["recipient_public_hex"] == prekey.public_key.hex()
        info = bytes.fromhex(recorded["info"]["hex"])
        assert info.decode() == recorded["info"]["text"]
        assert info == key_entry_info(header, bundle.device_id, prekey.key_id)
        assert info == jcs(
            {
                "v": 1,
                "message_id": header.message_id,
                "app": header.app,
                "to": header.to,
                "device_id": bundle.device_id,
                "key_id": prekey.key_id,
            }
        )
        sealed = bytes.fromhex(recorded["sealed_hex"])
        assert len(sealed) == 113
        assert sealed == bytes.fromhex(recorded["enc_hex"]) + bytes.fromhex(recorded["ct_hex"])
        recipient = private(recorded["recipient_private_hex"])
        assert public_hex(recipient) == prekey.public_key.hex()
        assert SUITE.decrypt(sealed, recipient, info) == content_key
        entries.append(KeyEntry(bundle.device_id, prekey.key_id, sealed))

    unsigned = SealedEnvelope(
        header, point_bytes(app.public_key()), tuple(entries), nonce, payload, b""
    )
    signature_input = bytes.fromhex(vector["signature_input"]["hex"])
    assert unsigned.signature_input() == signature_input
    assert signature_input.decode() == vector["signature_input"]["text"]
    without_signature = json.loads(vector["envelope_text"])
    del without_signature["signature"]
    assert jcs(without_signature) == signature_input
    envelope = sign_envelope(unsigned, app)
    assert envelope.signature == bytes.fromhex(vector["signature"]["der_hex"])
    assert der_to_p1363(envelope.signature) == bytes.fromhex(vector["signature"]["p1363_hex"])
    assert envelope.to_bytes().decode() == vector["envelope_text"]

    # seal() itself agrees on every deterministic part.
    sealed_now = seal(
        content,
        message_id=inputs["message_id"],
        app_jid=inputs["app_jid"],
        recipient_jid=inputs["recipient_jid"],
        bundles=bundles,
        app_key=app,
        created_ms=inputs["created_ms"],
        expires_ms=inputs["expires_ms"],
        priority=Priority(inputs["priority"]),
        auto_delete_s=inputs["auto_delete_s"],
        content_key=content_key,
        nonce=nonce,
    )
    assert sealed_now.header == header
    assert sealed_now.app_key == envelope.app_key
    assert (sealed_now.nonce, sealed_now.payload) == (nonce, payload)
    assert [(e.device_id, e.key_id) for e in sealed_now.keys] == [
        (e.device_id, e.key_id) for e in entries
    ]
    for entry, recorded in zip(sealed_now.keys, vector["key_entries"], strict=True):
        info = bytes.fromhex(recorded["info"]["hex"])
        recipient = private(recorded["recipient_private_hex"])
        assert SUITE.decrypt(entry.sealed, recipient, info) == content_key
    parse_public_key(sealed_now.app_key).verify(
        sealed_now.signature, sealed_now.signature_input(), ec.ECDSA(hashes.SHA256())
    )


# Open vectors


def prekey_lookup(device: dict[str, Any]) -> Callable[[int], PrivateKey]:
    keys = {
        p["key_id"]: private(p["private_hex"])
        for p in DEVICES[device["name"]]["prekeys"]
        if p["key_id"] in device["prekey_ids"]
    }

    def lookup(key_id: int) -> PrivateKey:
        if key_id not in keys:
            raise UnknownKeyId(f"no prekey {key_id}")
        return keys[key_id]

    return lookup


def open_with_context(data: bytes | str, vector: dict[str, Any]) -> Any:
    device, ctx = vector["device"], vector["context"]
    pinned = ctx["pinned_app_key_hex"]
    return open_envelope(
        data,
        recipient_jid=device["jid"],
        device_id=device["device_id"],
        prekey=prekey_lookup(device),
        now_ms=ctx["now_ms"],
        pinned_app_key=None if pinned is None else bytes.fromhex(pinned),
        sender_jid=ctx["sender_jid"],
        stanza_id=ctx["stanza_id"],
        require_pinned=ctx["require_pinned"],
        app_domain=ctx["app_domain"],
    )


def open_by_hand(vector: dict[str, Any]) -> bytes:
    """Steps 5, 11, 12 and 13 of docs/protocol.md's opening procedure on bare primitives."""
    value = json.loads(vector["envelope_text"])
    device = vector["device"]
    app_key = b64decode(value["app_key"]["public_key"])
    signed = {key: item for key, item in value.items() if key != "signature"}
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), app_key).verify(
        b64decode(value["signature"]), jcs(signed), ec.ECDSA(hashes.SHA256())
    )
    header = value["header"]
    entry = next(e for e in value["keys"] if e["device_id"] == device["device_id"])
    info = jcs(
        {
            "v": 1,
            "message_id": header["message_id"],
            "app": header["app"],
            "to": header["to"],
            "device_id": device["device_id"],
            "key_id": entry["key_id"],
        }
    )
    key = prekey_lookup(device)(entry["key_id"])
    content_key = SUITE.decrypt(b64decode(entry["sealed"]), key, info)
    padded = AESGCM(content_key).decrypt(
        b64decode(value["nonce"]), b64decode(value["payload"]), jcs(header)
    )
    return padded[: padded.rstrip(b"\x00").rindex(b"\x80")]


@each("open")
def test_open_vector(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    opened = open_with_context(vector["envelope_text"], vector)
    assert content_to_json(opened.content).decode() == expected["content_json"]
    assert opened.header.canonical().decode() == expected["header"]
    assert opened.key_id == expected["key_id"]
    assert opened.app_key.hex() == expected["app_public_hex"]
    assert opened.app_fingerprint == expected["app_fingerprint"]
    assert open_by_hand(vector) == bytes.fromhex(expected["plaintext_hex"])


def test_one_time_prekey_is_used_once() -> None:
    """The keyring deletes a one-time prekey after its first open: a replay fails.

    A message sealed to the signed prekey opens again: only the device's record of
    message ids it has shown stops a replay of it within its lifetime.
    """
    by_name = {v["name"]: v for v in VECTORS["open"]}
    phone = by_name["text-two-devices/phone-first-use"]
    ring = keyring(DEVICES[phone["device"]["name"]])
    ctx = phone["context"]
    ring.open(phone["envelope_text"], now_ms=ctx["now_ms"], pinned_app_key=None)
    assert phone["expected"]["key_id"] not in ring.one_time_prekeys
    with pytest.raises(UnknownKeyId):
        ring.open(phone["envelope_text"], now_ms=ctx["now_ms"], pinned_app_key=None)

    laptop = by_name["text-two-devices/laptop"]
    ring = keyring(DEVICES[laptop["device"]["name"]])
    for _ in range(2):
        ring.open(laptop["envelope_text"], now_ms=ctx["now_ms"], pinned_app_key=None)


# Negative vectors: exactly the named error


@each("negative")
def test_negative_vector(vector: dict[str, Any]) -> None:
    expected = getattr(envelope_errors, vector["expected_error"])
    assert [
        base.__name__
        for base in expected.__mro__[1:]
        if issubclass(base, EnvelopeError) and base is not expected
    ] == vector["error_ancestors"]

    def attempt() -> object:
        if vector["input"] == "bundle":
            return DeviceBundle.from_bytes(
                vector["bundle_text"], expected_jid=vector["expected_jid"]
            )
        if "envelope_hex" in vector:
            return open_with_context(bytes.fromhex(vector["envelope_hex"]), vector)
        return open_with_context(vector["envelope_text"], vector)

    with pytest.raises(EnvelopeError) as caught:
        attempt()
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"


# The document quotes the vectors


def test_document_quotes_the_vectors() -> None:
    doc = DOC_PATH.read_text("utf-8")
    first = VECTORS["seal"][0]
    quoted = [
        first["header"]["text"],
        first["key_entries"][0]["info"]["text"],
        VECTORS["devices"][0]["prekeys"][0]["signature_input"]["text"],
        VECTORS["keys"][0]["public_b64url"],
    ]
    quoted += [f"| {row['n']} | {row['padded_length']} |" for row in VECTORS["padding"]["lengths"]]
    missing = [text for text in quoted if text not in doc]
    assert not missing, missing
