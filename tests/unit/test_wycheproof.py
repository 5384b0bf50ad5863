"""Project Wycheproof vectors through the envelope's own key, signature and payload code.

The vectors live outside the project, in ``../shared/wycheproof/``; a missing file fails
the test (it never skips), so the checks cannot silently stop running. Each test walks
every case of one file, collects the failures by tcId and asserts exact counts, so the
number of cases checked is part of the test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cmaas.envelope import (
    BadSignature,
    EnvelopeError,
    InvalidPoint,
    PrivateKey,
    PublicKey,
    parse_private_scalar,
    parse_public_key,
    point_bytes,
    verify,
)
from cmaas.envelope.errors import TamperedPayload
from cmaas.envelope.payload import open_payload, seal_payload

WYCHEPROOF = Path(__file__).resolve().parents[2].parent / "shared" / "wycheproof"


def load(name: str) -> dict[str, Any]:
    path = WYCHEPROOF / name
    if not path.is_file():
        pytest.fail(f"Wycheproof vectors missing: {path}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def cases(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(group, case) for group in data["testGroups"] for case in group["tests"]]


def private_key(text: str) -> PrivateKey:
    """Wycheproof's private scalar: hex of a signed big-endian integer, any length."""
    data = bytes.fromhex(text)
    if len(data) == 33 and data[0] == 0:
        data = data[1:]
    return parse_private_scalar(data.rjust(32, b"\x00"))


def check_ecdh(case: dict[str, Any], public: PublicKey, failures: list[str]) -> None:
    shared = private_key(case["private"]).exchange(ec.ECDH(), public)
    if shared.hex() != case["shared"]:
        failures.append(f"tcId {case['tcId']}: shared secret differs")


def test_ecdh_ecpoint() -> None:
    data = load("ecdh_secp256r1_ecpoint_test.json")
    outcome: Counter[str] = Counter()
    failures: list[str] = []
    for _, case in cases(data):
        tc, result = case["tcId"], case["result"]
        try:
            public = parse_public_key(bytes.fromhex(case["public"]))
        except InvalidPoint:
            outcome[f"{result} rejected"] += 1
            if result == "valid":
                failures.append(f"tcId {tc}: valid point rejected ({case['comment']})")
            elif result == "acceptable" and "CompressedPoint" not in case["flags"]:
                failures.append(f"tcId {tc}: acceptable non-compressed point rejected")
            continue
        except Exception as error:
            failures.append(f"tcId {tc}: {type(error).__name__} instead of InvalidPoint")
            continue
        outcome[f"{result} accepted"] += 1
        if result != "valid":
            # Compressed points are acceptable to Wycheproof; the envelope refuses them
            # by design (one encoding per key), so nothing but a valid point may pass.
            failures.append(f"tcId {tc}: {result} point accepted ({case['comment']})")
            continue
        check_ecdh(case, public, failures)
    assert failures == []
    assert sum(outcome.values()) == len(cases(data)) == 355
    assert outcome == {"valid accepted": 330, "invalid rejected": 24, "acceptable rejected": 1}


def test_ecdh_spki() -> None:
    """X.509 SubjectPublicKeyInfo keys: cryptography parses the DER, the envelope parses
    the point. An invalid key must be refused somewhere on that path."""
    data = load("ecdh_secp256r1_test.json")
    outcome: Counter[str] = Counter()
    failures: list[str] = []
    for _, case in cases(data):
        tc, result = case["tcId"], case["result"]
        try:
            loaded = serialization.load_der_public_key(bytes.fromhex(case["public"]))
        except (ValueError, UnsupportedAlgorithm):
            loaded = None
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            outcome[f"{result} rejected by der"] += 1
            if result == "valid":
                failures.append(f"tcId {tc}: valid key rejected by the DER parser")
            continue
        try:
            public = parse_public_key(point_bytes(loaded))
        except InvalidPoint:
            outcome[f"{result} rejected by point"] += 1
            if result == "valid":
                failures.append(f"tcId {tc}: valid key rejected by parse_public_key")
            continue
        outcome[f"{result} accepted"] += 1
        if result == "invalid":
            failures.append(f"tcId {tc}: invalid key accepted ({case['comment']})")
            continue
        # Valid keys, and acceptable ones that got through (a compressed point in the
        # SPKI, which point_bytes() re-encodes uncompressed): the secret must be right.
        check_ecdh(case, public, failures)
    assert failures == []
    assert sum(outcome.values()) == len(cases(data)) == 612
    assert outcome["valid accepted"] == 330
    assert outcome["invalid rejected by der"] == 52
    assert outcome["acceptable accepted"] + outcome["acceptable rejected by der"] == 230


def test_ecdsa_p256_sha256() -> None:
    data = load("ecdsa_secp256r1_sha256_test.json")
    outcome: Counter[str] = Counter()
    failures: list[str] = []
    for group, case in cases(data):
        tc, result = case["tcId"], case["result"]
        key = parse_public_key(bytes.fromhex(group["publicKey"]["uncompressed"]))
        try:
            verify(key, bytes.fromhex(case["sig"]), bytes.fromhex(case["msg"]), what="vector")
        except BadSignature:
            outcome[f"{result} refused"] += 1
            if result != "invalid":
                failures.append(f"tcId {tc}: {result} signature refused ({case['comment']})")
            continue
        except Exception as error:
            failures.append(f"tcId {tc}: {type(error).__name__} instead of BadSignature")
            continue
        outcome[f"{result} verified"] += 1
        if result != "valid":
            failures.append(f"tcId {tc}: {result} signature verified ({case['comment']})")
    assert failures == []
    assert sum(outcome.values()) == len(cases(data)) == 484
    assert outcome == {"valid verified": 174, "invalid refused": 310}


def test_aes_256_gcm() -> None:
    data = load("aes_gcm_test.json")
    outcome: Counter[str] = Counter()
    failures: list[str] = []
    for group, case in cases(data):
        if (group["keySize"], group["ivSize"], group["tagSize"]) != (256, 96, 128):
            continue
        tc, result = case["tcId"], case["result"]
        key, iv, aad, msg = (bytes.fromhex(case[f]) for f in ("key", "iv", "aad", "msg"))
        sealed = bytes.fromhex(case["ct"] + case["tag"])
        try:
            opened = open_payload(key, iv, sealed, aad)
        except TamperedPayload:
            outcome[f"{result} refused"] += 1
            if result != "invalid":
                failures.append(f"tcId {tc}: {result} ciphertext refused ({case['comment']})")
            continue
        except EnvelopeError as error:
            failures.append(f"tcId {tc}: {type(error).__name__} instead of TamperedPayload")
            continue
        outcome[f"{result} opened"] += 1
        if result != "valid":
            failures.append(f"tcId {tc}: {result} ciphertext opened ({case['comment']})")
        elif opened != msg:
            failures.append(f"tcId {tc}: wrong plaintext")
        elif seal_payload(key, iv, msg, aad) != sealed:
            failures.append(f"tcId {tc}: seal_payload gives another ciphertext")
    assert failures == []
    assert sum(outcome.values()) == 66
    assert outcome == {"valid opened": 39, "invalid refused": 27}
