"""What the documents state about outputs and data files, checked against them."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from cmaas.cli.main import main
from cmaas.envelope import parse_private_scalar, point_bytes

ROOT = Path(__file__).resolve().parents[2]
RFC9180_COPY = ROOT / "docs" / "rfc9180" / "hpke-p256-hkdf-sha256.json"
OPERATORS = ROOT / "docs" / "operators.md"
KEM_P256 = 0x0010
AEAD_AES_256_GCM = 0x0002
AEADS: dict[int, type[AESGCM] | type[ChaCha20Poly1305]] = {0x0001: AESGCM, 0x0003: ChaCha20Poly1305}


def _point(private_hex: str) -> str:
    return point_bytes(parse_private_scalar(bytes.fromhex(private_hex)).public_key()).hex()


def test_rfc9180_copy_is_consistent_and_lacks_the_envelope_suite() -> None:
    """docs/protocol.md 10.4: the copy holds DHKEM(P-256) suites only, none with
    AES-256-GCM; its keys and every encryption agree with `cryptography`."""
    vectors: list[dict[str, Any]] = json.loads(RFC9180_COPY.read_text("utf-8"))["vectors"]
    suites = {(v["kem_id"], v["kdf_id"], v["aead_id"]) for v in vectors}
    assert suites == {(KEM_P256, 1, 1), (KEM_P256, 3, 1), (KEM_P256, 1, 3)}
    assert AEAD_AES_256_GCM not in {aead for _, _, aead in suites}
    assert {v["mode"] for v in vectors} == {0, 1}
    for vector in vectors:
        assert _point(vector["skRm"]) == vector["pkRm"]
        assert _point(vector["skEm"]) == vector["pkEm"] == vector["enc"]
        base_nonce = int(vector["base_nonce"], 16)
        aead = AEADS[vector["aead_id"]](bytes.fromhex(vector["key"]))
        assert [e["seq"] for e in vector["encryptions"]] == [0, 1, 2, 4, 255, 256]
        for encryption in vector["encryptions"]:
            nonce = (base_nonce ^ encryption["seq"]).to_bytes(12, "big")
            assert nonce.hex() == encryption["nonce"]
            sealed = aead.encrypt(
                nonce, bytes.fromhex(encryption["pt"]), bytes.fromhex(encryption["aad"])
            )
            assert sealed.hex() == encryption["ct"]


def _documented_fields(heading_text: str) -> list[str]:
    """The field names of the first table after ``heading_text`` in docs/operators.md."""
    doc = OPERATORS.read_text("utf-8")
    after = doc[doc.index(heading_text) :]
    table = re.search(r"\| field \|.*?\n((?:\|.*\n)+)", after)
    assert table is not None
    return re.findall(r"^\| `([a-z_]+)` \|", table.group(1), re.MULTILINE)


def test_operators_guide_names_every_app_register_json_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CMAAS_COMPONENT_JID", "gateway.example.org")
    monkeypatch.setenv("CMAAS_COMPONENT_SECRET", "secret")
    monkeypatch.setenv("CMAAS_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("CMAAS_DATABASE", str(tmp_path / "cmaas.sqlite3"))
    status = main(
        ["--env-file", os.devnull, "admin", "--json", "app-register", "otp", "--name", "OTP"]
    )
    printed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert _documented_fields("`app-register` and `app-rotate` print one JSON object") == list(
        printed
    )


def test_ejabberd_snippet_offers_no_domain_balancing() -> None:
    """Measured on 23.01: domain_balancing breaks the handshake or drops stanzas."""
    snippet = (ROOT / "ejabberd-config" / "cmaas-component.yml").read_text("utf-8")
    assert not re.search(r"^\s*#?\s*domain_balancing\s*:", snippet, re.MULTILINE)
    assert "No domain_balancing" in snippet
    # Several instances: each connection is routed its own ping host only.
    assert re.search(r"^#\s+global_routes: false$", snippet, re.MULTILINE)
