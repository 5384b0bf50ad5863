"""The web device's core (``web-device/src/core/``) against the Python side.

Its own Node tests (every protocol vector, keyring, inbox, files) must pass, and a device
it makes (keys generated in WebCrypto, private halves non-extractable) must interoperate
both ways: the gateway's bundle check accepts the bundle it publishes, senders accept the
bundle as looked up, and it opens exactly what the Python client service seals for it,
beside a Python device in the same envelope.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cmaas.clientservice.sealing import seal_submission
from cmaas.envelope import (
    Content,
    DeviceBundle,
    DeviceKeyring,
    FileContent,
    OtpContent,
    PrivateKey,
    TextContent,
    canonical_json,
    content_to_json,
    fingerprint,
    generate_private_key,
    open_envelope,
    point_bytes,
)
from cmaas.envelope.blob import encrypt_blob
from cmaas.lifecycle import Priority
from cmaas.wire import KeyLookup

ROOT = Path(__file__).resolve().parents[2]
WEB_DEVICE = ROOT / "web-device"
JID = "alice@example.org"
GATEWAY = "gateway.example.org"
APP_JID = f"bank@{GATEWAY}"


def node() -> str:
    path = shutil.which("node")
    assert path, "node is missing: ./scripts/bootstrap installs it"
    assert (WEB_DEVICE / "node_modules" / "@hpke" / "core").is_dir(), (
        "@hpke/core is missing: ./scripts/bootstrap installs it (scripts/build-web-device)"
    )
    return path


def test_the_node_tests_of_the_core_pass() -> None:
    done = subprocess.run(
        [node(), "--test", str(WEB_DEVICE / "test")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    counts = dict(
        re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", done.stdout, re.M)
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert counts["fail"] == counts["cancelled"] == counts["skipped"] == counts["todo"] == "0", (
        counts
    )
    assert int(counts["pass"]) >= 29, counts


@dataclass
class JsDevice:
    """A device made by web-core in a Node process that lives for the whole test."""

    process: subprocess.Popen[str]
    device_id: int
    fingerprint: str
    bundle: str

    def receive(self, envelope: str, *, message_id: str, blob: bytes | None = None) -> Any:
        request = {
            "envelope": envelope,
            "sender": APP_JID,
            "message_id": message_id,
            "now_ms": int(time.time() * 1000),
            "blob_hex": None if blob is None else blob.hex(),
        }
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read() if self.process.stderr else "no answer"
        return json.loads(line)


@pytest.fixture
def js_device() -> Iterator[JsDevice]:
    command = [node(), str(WEB_DEVICE / "test-support" / "device.mjs")]
    with subprocess.Popen(
        [*command, JID, GATEWAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin and process.stdout and process.stderr
        first = process.stdout.readline()
        assert first, process.stderr.read()
        made = json.loads(first)
        yield JsDevice(process, made["device_id"], made["fingerprint"], made["bundle"])
        process.stdin.close()
        assert process.wait(timeout=30) == 0, process.stderr.read()


def looked_up(bundle: DeviceBundle, *, one_time_prekey: int | None) -> dict[str, object]:
    """The bundle as a key lookup hands it to a sender: one OPK, or none."""
    value = bundle.to_json()
    value["one_time_prekeys"] = [
        prekey.to_json() for prekey in bundle.one_time_prekeys if prekey.key_id == one_time_prekey
    ]
    return value


def test_the_gateway_accepts_the_bundle_of_a_web_device(js_device: JsDevice) -> None:
    # What the key directory runs on device-publish (cmaas.keydirectory.service).
    bundle = DeviceBundle.from_bytes(js_device.bundle, expected_jid=JID)
    assert bundle.device_id == js_device.device_id
    assert bundle.signed_prekey.key_id == 1
    assert [p.key_id for p in bundle.one_time_prekeys] == list(range(2, 102))
    assert " ".join(re.findall(".{8}", bundle.fingerprint)) == js_device.fingerprint
    assert canonical_json(json.loads(js_device.bundle)).decode() == js_device.bundle
    # What a sender runs on the lookup's answer.
    lookup = KeyLookup.from_json({"jid": JID, "devices": [looked_up(bundle, one_time_prekey=2)]})
    assert lookup.devices[0].one_time_prekeys[0].key_id == 2


def test_python_seals_and_the_web_device_opens(js_device: JsDevice) -> None:
    bundle = DeviceBundle.from_bytes(js_device.bundle, expected_jid=JID)
    now = int(time.time() * 1000)
    python_device = DeviceKeyring.generate(JID, now_ms=now, one_time_prekeys=1)
    app_key = generate_private_key()

    def sealed(
        content: Content, message_id: str, opk: int | None, key: PrivateKey = app_key, **extra: Any
    ) -> str:
        lookup = KeyLookup.from_json(
            {
                "jid": JID,
                "devices": [
                    looked_up(bundle, one_time_prekey=opk),
                    python_device.bundle().to_json(),
                ],
            }
        )
        envelope = seal_submission(
            lookup,
            JID,
            content,
            message_id=message_id,
            app_jid=APP_JID,
            app_key=key,
            priority=Priority.HIGH,
            created_ms=now - 1000,
            expires_ms=now + 600_000,
            **extra,
        ).envelope
        assert envelope is not None
        return envelope

    otp = OtpContent("482913", "Sign in to the bank")
    first = sealed(otp, "m-otp", 2)
    opened = js_device.receive(first, message_id="m-otp")
    assert opened["kind"] == "accepted", opened
    assert opened["content_json"] == content_to_json(otp).decode()
    assert opened["newly_pinned"] is True
    # The Python device opens its own entry of the same envelope.
    mine = open_envelope(
        first,
        recipient_jid=JID,
        device_id=python_device.device_id,
        prekey=python_device.prekey,
        now_ms=now,
        pinned_app_key=None,
    )
    assert mine.content == otp
    # Shown once: a resend is a duplicate, whatever its one-time prekey.
    assert js_device.receive(first, message_id="m-otp") == {"kind": "duplicate"}

    text = TextContent("é ✓ 😀 " * 50)
    opened = js_device.receive(sealed(text, "m-text", None, auto_delete_s=30), message_id="m-text")
    assert opened["kind"] == "accepted", opened
    assert opened["content_json"] == content_to_json(text).decode()
    assert opened["delete_at_ms"] is not None
    assert opened["newly_pinned"] is False

    # A replay of the OTP under another stanza id is refused by the signed header; the
    # same envelope to a device whose OPK is gone would be UnknownKeyId (node tests).
    replay = js_device.receive(first, message_id="m-other")
    assert replay["kind"] == "refused" and replay["error"] == "TamperedHeader", replay

    data = secrets.token_bytes(200_000)
    file_key = secrets.token_bytes(32)
    blob = io.BytesIO()
    size, sha256 = encrypt_blob(io.BytesIO(data), blob, file_key)
    file = FileContent(
        "report.pdf", "application/pdf", size, "https://gw.example/b/1", file_key, sha256
    )
    opened = js_device.receive(sealed(file, "m-file", 3), message_id="m-file", blob=blob.getvalue())
    assert opened["kind"] == "accepted", opened
    assert bytes.fromhex(opened["file_hex"]) == data
    tampered = bytearray(blob.getvalue())
    tampered[-1] ^= 1
    refused = js_device.receive(
        sealed(file, "m-file-2", 4), message_id="m-file-2", blob=bytes(tampered)
    )
    assert refused["kind"] == "refused" and refused["error"] == "TamperedBlob", refused

    # A changed app key is refused and offered, with the new key's fingerprint.
    other_key = generate_private_key()
    changed = js_device.receive(sealed(otp, "m-new-key", 5, other_key), message_id="m-new-key")
    assert changed["kind"] == "refused" and changed["error"] == "AppKeyChanged", changed
    assert changed["offered_fingerprint"] == fingerprint(point_bytes(other_key.public_key()))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test's output for failures."""


def test_in_chromium_keys_survive_indexeddb_and_every_fresh_prekey_opens() -> None:
    """web-device/test-support/browser-check.mjs in Debian's Chromium: a device kept in
    IndexedDB reopens with non-extractable keys, and 40 fresh one-time prekeys (and the
    signed prekey) each open an envelope sealed to them, as only the whole CryptoKeyPair
    allows (protocol 10.4)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).is_file(), "chromium is missing: ./scripts/bootstrap installs it"
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(ROOT))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(
                    f"http://127.0.0.1:{server.server_port}/web-device/test-support/browser-check.html"
                )
                page.wait_for_function("document.title !== 'pending'", timeout=120_000)
                result = page.title()
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result == "ok opened 40/40 spk accepted left 0 keys keyring,pins,seen then -", result
