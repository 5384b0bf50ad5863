"""An independent implementation opens what the Python library seals.

``interop/js-device/open.mjs`` is a device-side opener written from docs/protocol.md in
JavaScript on Node's WebCrypto and @hpke/core (an RFC 9180 implementation that shares
nothing with ``cryptography``). It must open every open vector to the exact content,
refuse every negative vector (with the same error class for every check after parsing),
and open fresh envelopes sealed here for 1, 2 and 5 devices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cmaas.envelope import (
    DeviceKeyring,
    OtpContent,
    TextContent,
    canonical_json,
    content_to_json,
    generate_private_key,
    point_bytes,
    private_scalar,
    seal,
)

ROOT = Path(__file__).resolve().parents[2]
OPENER = ROOT / "interop" / "js-device" / "open.mjs"
VECTORS = json.loads((ROOT / "docs" / "protocol-vectors.json").read_text())
# Parsing strictness (duplicate keys, floats, unknown fields...) is the Python library's;
# the JavaScript opener need only refuse those, not name them alike.
FORM_ERRORS = {"MalformedEncoding", "OversizeInput", "InvalidPoint"}


def run_opener(cases: list[dict[str, Any]]) -> list[dict[str, str]]:
    node = shutil.which("node")
    assert node, "node is missing: ./scripts/bootstrap installs it"
    assert (ROOT / "web-device" / "node_modules" / "@hpke" / "core").is_dir(), (
        "@hpke/core is missing: ./scripts/bootstrap installs it (scripts/build-web-device)"
    )
    done = subprocess.run(
        [node, str(OPENER)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, str]] = json.loads(done.stdout)["results"]
    assert len(results) == len(cases)
    return results


def vector_device(device: dict[str, Any]) -> dict[str, Any]:
    keys = next(d for d in VECTORS["devices"] if d["name"] == device["name"])
    prekeys = {
        str(p["key_id"]): {"private_hex": p["private_hex"], "public_hex": p["public_hex"]}
        for p in keys["prekeys"]
        if p["key_id"] in device["prekey_ids"]
    }
    return {"jid": device["jid"], "device_id": device["device_id"], "prekeys": prekeys}


def test_every_open_vector_opens_to_the_exact_content() -> None:
    vectors = VECTORS["open"]
    results = run_opener(
        [
            {
                "envelope_text": v["envelope_text"],
                "device": vector_device(v["device"]),
                "context": v["context"],
            }
            for v in vectors
        ]
    )
    for vector, result in zip(vectors, results, strict=True):
        assert result == {"content_json": vector["expected"]["content_json"]}, vector["name"]
    assert len(vectors) >= 9


def test_every_negative_envelope_vector_is_refused() -> None:
    # (One more vector is bytes that are not UTF-8, which a JSON text cannot carry here.)
    vectors = [v for v in VECTORS["negative"] if "envelope_text" in v]
    results = run_opener(
        [
            {
                "envelope_text": v["envelope_text"],
                "device": vector_device(v["device"]),
                "context": v["context"],
            }
            for v in vectors
        ]
    )
    semantic: set[str] = set()
    for vector, result in zip(vectors, results, strict=True):
        assert "content_json" not in result, f"{vector['name']} opened: {result}"
        assert result["error"] != "Crash", (vector["name"], result)
        if vector["expected_error"] not in FORM_ERRORS:
            semantic.add(vector["name"])
            assert result["error"] == vector["expected_error"], (vector["name"], result)
    assert len(vectors) >= 64
    assert len(semantic) >= 25
    # Step 6a with the gateway domain the vectors' context names (app_domain).
    assert {"foreign-app/ordinary-account", "foreign-app/subdomain-of-gateway"} <= semantic


def test_fresh_envelopes_for_one_two_and_five_devices_open() -> None:
    now = int(time.time() * 1000)
    app_key = generate_private_key()
    cases: list[dict[str, Any]] = []
    expected: list[bytes] = []
    for count in (1, 2, 5):
        keyrings = [
            DeviceKeyring.generate("alice@example.org", now_ms=now, one_time_prekeys=count % 2)
            for _ in range(count)
        ]
        content = OtpContent("482913", "login") if count == 2 else TextContent("é ✓ " * count)
        envelope = seal(
            content,
            message_id=f"m-{count}",
            app_jid="bank@gateway.example.org",
            recipient_jid="alice@example.org",
            bundles=[ring.bundle() for ring in keyrings],
            app_key=app_key,
            created_ms=now,
            expires_ms=now + 60_000,
            auto_delete_s=30 if count == 5 else None,
        )
        for ring in keyrings:
            prekeys = {
                str(ring.signed_prekey.key_id): ring.signed_prekey.private,
                **{str(k): s.private for k, s in ring.one_time_prekeys.items()},
            }
            cases.append(
                {
                    "envelope_text": envelope.to_bytes().decode(),
                    "device": {
                        "jid": ring.jid,
                        "device_id": ring.device_id,
                        "prekeys": {
                            key_id: {
                                "private_hex": private_scalar(key).hex(),
                                "public_hex": point_bytes(key.public_key()).hex(),
                            }
                            for key_id, key in prekeys.items()
                        },
                    },
                    "context": {
                        "now_ms": now,
                        "pinned_app_key_hex": point_bytes(app_key.public_key()).hex(),
                        "require_pinned": True,
                        "sender_jid": "bank@gateway.example.org",
                        "stanza_id": f"m-{count}",
                        "app_domain": "gateway.example.org",
                    },
                }
            )
            expected.append(content_to_json(content))
    results = run_opener(cases)
    for result, content_json in zip(results, expected, strict=True):
        assert result == {"content_json": content_json.decode()}, result
    # The same envelope seen from a foreign gateway is refused by the same step as in Python.
    foreign = {**cases[0], "context": {**cases[0]["context"], "app_domain": "gw.other.test"}}
    assert run_opener([foreign])[0]["error"] == "ForeignApp"
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
