"""``python -m bench.envelope``: the envelope's CPU cost against its raw primitives.

The raw limit is what ``cryptography`` itself takes for the primitives a message needs
(one HPKE seal of the content key per device, one AES-256-GCM payload, one ECDSA
signature); the ratio says what our framing (canonical JSON, base64url, checks) adds.
Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.report import RESULTS_DIR
from bench.timing import measure_sync
from cmaas.envelope import (
    DeviceBundle,
    DeviceKeyring,
    OtpContent,
    generate_private_key,
    pad,
    seal,
)
from cmaas.envelope.hpke_key import SUITE

RECIPIENT = "alice@example.org"
APP = "bank@gateway.example.org"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.envelope", description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="runs per measurement")
    parser.add_argument("--deadline", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "envelope.json")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100_000 or args.deadline <= 0:
        parser.error("--count must be 1 to 100,000 and --deadline positive")
    now = int(time.time() * 1000)
    app_key = generate_private_key()
    device = generate_private_key()
    content_key = os.urandom(32)
    results: dict[str, dict[str, float]] = {}

    def run(name: str, operation: Callable[[], object]) -> None:
        results[name] = measure_sync(name, operation, args.count, args.deadline)

    print("raw primitives (cryptography):")
    run("hpke seal 32 B", lambda: SUITE.encrypt(content_key, device.public_key(), b"info"))
    sealed_key = SUITE.encrypt(content_key, device.public_key(), b"info")
    run("hpke open 32 B", lambda: SUITE.decrypt(sealed_key, device, b"info"))
    run("ecdsa p-256 sign", lambda: app_key.sign(b"x" * 1200, ec.ECDSA(hashes.SHA256())))
    signature = app_key.sign(b"x" * 1200, ec.ECDSA(hashes.SHA256()))
    run(
        "ecdsa p-256 verify",
        lambda: app_key.public_key().verify(signature, b"x" * 1200, ec.ECDSA(hashes.SHA256())),
    )
    run("aes-256-gcm 256 B", lambda: AESGCM(content_key).encrypt(b"\0" * 12, pad(b"x"), b"h"))

    print("envelope v1:")
    sizes: dict[str, int] = {}
    for devices in (1, 2, 5):
        keyrings = [
            DeviceKeyring.generate(RECIPIENT, now_ms=now, one_time_prekeys=0)
            for _ in range(devices)
        ]
        bundles = [ring.bundle() for ring in keyrings]

        def seal_once(bundles: list[DeviceBundle] = bundles) -> bytes:
            return seal(
                OtpContent("123456", "login"),
                message_id="m-1",
                app_jid=APP,
                recipient_jid=RECIPIENT,
                bundles=bundles,
                app_key=app_key,
                created_ms=now,
                expires_ms=now + 60_000,
            ).to_bytes()

        run(f"seal OTP to {devices} device(s)", seal_once)
        envelope = seal_once()
        sizes[str(devices)] = len(envelope)
        ring = keyrings[0]

        def open_once(ring: DeviceKeyring = ring, envelope: bytes = envelope) -> object:
            return ring.open(envelope, now_ms=now, pinned_app_key=None)

        run(f"open OTP ({devices} device(s) in envelope)", open_once)
    full = DeviceKeyring.generate(RECIPIENT, now_ms=now, one_time_prekeys=100).bundle().to_bytes()
    run("verify a bundle with 100 one-time prekeys", lambda: DeviceBundle.from_bytes(full))

    raw_seal = results["hpke seal 32 B"]["p50_us"]
    raw_sign = results["ecdsa p-256 sign"]["p50_us"]
    raw_gcm = results["aes-256-gcm 256 B"]["p50_us"]
    raw_open = results["hpke open 32 B"]["p50_us"] + results["ecdsa p-256 verify"]["p50_us"]
    ratios = {
        f"seal_{n}_vs_raw": results[f"seal OTP to {n} device(s)"]["p50_us"]
        / (n * raw_seal + raw_sign + raw_gcm)
        for n in (1, 2, 5)
    }
    ratios["open_vs_raw"] = results["open OTP (1 device(s) in envelope)"]["p50_us"] / (
        raw_open + raw_gcm
    )
    print("ratios to the raw primitives:", ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("envelope bytes by device count:", sizes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"results": results, "ratios": ratios, "envelope_bytes": sizes}, indent=2)
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
