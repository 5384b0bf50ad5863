"""``python -m bench.envelope``: the envelope's CPU cost against its raw primitives.

Item e: a seal's CPU time (``time.process_time``) per run, in rounds interleaved with
rounds of the raw primitives that seal must do at minimum, in ``cryptography`` itself:
the fresh content key and nonce, one AES-256-GCM payload, one HPKE seal of the content
key per device (DHKEM(P-256) key generation, ECDH, HKDF and AES-256-GCM, one call), and
one deterministic ECDSA P-256 signature over as many bytes as the envelope signs. The
median round gives the rate, the fastest and slowest the spread, and the median of the
paired rounds' ratios says what our framing (canonical JSON, base64url, checks) adds
at whatever speed the CPU runs. Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.report import RESULTS_DIR, write_document
from bench.timing import measure_rounds, measure_sync
from cmaas.envelope import (
    DeviceBundle,
    DeviceKeyring,
    OtpContent,
    PrivateKey,
    SealedEnvelope,
    content_to_json,
    generate_private_key,
    key_entry_info,
    pad,
    seal,
)
from cmaas.envelope.hpke_key import SUITE

__all__ = ["DEVICE_COUNTS", "raw_name", "seal_name"]

RECIPIENT = "alice@example.org"
APP = "bank@gateway.example.org"
OTP = OtpContent("123456", "login")
DEVICE_COUNTS = (1, 2, 5)
# What the envelope signs with: RFC 6979 nonces, as keys.sign.
DETERMINISTIC_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def seal_name(devices: int) -> str:
    return f"seal OTP to {devices} device(s)"


def raw_name(devices: int) -> str:
    return f"raw primitives for {devices} device(s)"


def raw_primitives(
    envelope: SealedEnvelope, bundles: list[DeviceBundle], app_key: PrivateKey
) -> Callable[[], object]:
    """One run of the primitives that sealing ``envelope`` to ``bundles`` needs at least,
    with keys parsed beforehand and inputs of the envelope's sizes."""
    padded = pad(content_to_json(OTP))
    header = envelope.header.canonical()
    signed = envelope.signature_input()
    recipients = [
        (
            bundle.recipient_prekey()[1],
            key_entry_info(envelope.header, entry.device_id, entry.key_id),
        )
        for bundle, entry in zip(bundles, envelope.keys, strict=True)
    ]

    def run() -> object:
        content_key, nonce = os.urandom(32), os.urandom(12)
        AESGCM(content_key).encrypt(nonce, padded, header)
        for public, info in recipients:
            SUITE.encrypt(content_key, public, info)
        return app_key.sign(signed, DETERMINISTIC_ECDSA)

    return run


def wire_bytes(sealing: Callable[[], SealedEnvelope]) -> bytes:
    """A seal to the end: the bytes the client service submits."""
    return sealing().to_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.envelope", description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="runs per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of item e's seals")
    parser.add_argument("--deadline", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "envelope.json")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100_000 or args.deadline <= 0:
        parser.error("--count must be 1 to 100,000 and --deadline positive")
    if not 1 <= args.rounds <= args.count:
        parser.error("--rounds must be 1 to --count")
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
    run("ecdsa p-256 sign", lambda: app_key.sign(b"x" * 1200, DETERMINISTIC_ECDSA))
    signature = app_key.sign(b"x" * 1200, DETERMINISTIC_ECDSA)
    run(
        "ecdsa p-256 verify",
        lambda: app_key.public_key().verify(signature, b"x" * 1200, ec.ECDSA(hashes.SHA256())),
    )
    run("aes-256-gcm 256 B", lambda: AESGCM(content_key).encrypt(b"\0" * 12, pad(b"x"), b"h"))

    print("envelope v1:")
    sizes: dict[str, int] = {}
    paired: dict[str, Callable[[], object]] = {}
    for devices in DEVICE_COUNTS:
        keyrings = [
            DeviceKeyring.generate(RECIPIENT, now_ms=now, one_time_prekeys=0)
            for _ in range(devices)
        ]
        bundles = [ring.bundle() for ring in keyrings]

        def seal_once(bundles: list[DeviceBundle] = bundles) -> SealedEnvelope:
            """The envelope whose wire bytes item e measures."""
            return seal(
                OTP,
                message_id="m-1",
                app_jid=APP,
                recipient_jid=RECIPIENT,
                bundles=bundles,
                app_key=app_key,
                created_ms=now,
                expires_ms=now + 60_000,
            )

        sealed = seal_once()
        envelope = sealed.to_bytes()
        sizes[str(devices)] = len(envelope)
        paired[raw_name(devices)] = raw_primitives(sealed, bundles, app_key)
        paired[seal_name(devices)] = functools.partial(wire_bytes, seal_once)
        ring = keyrings[0]

        def open_once(ring: DeviceKeyring = ring, envelope: bytes = envelope) -> object:
            return ring.open(envelope, now_ms=now, pinned_app_key=None)

        run(f"open OTP ({devices} device(s) in envelope)", open_once)
    full = DeviceKeyring.generate(RECIPIENT, now_ms=now, one_time_prekeys=100).bundle().to_bytes()
    run("verify a bundle with 100 one-time prekeys", lambda: DeviceBundle.from_bytes(full))

    print(f"item e: seals and their raw primitives, {args.rounds} interleaved rounds (CPU time):")
    measured, cpu_rounds = measure_rounds(paired, args.count, args.rounds, args.deadline)
    results.update(measured)
    ratios: dict[str, float] = {}
    for n in DEVICE_COUNTS:
        pairs = zip(cpu_rounds[seal_name(n)], cpu_rounds[raw_name(n)], strict=True)
        ratios[f"seal_{n}_vs_raw"] = statistics.median(s / r for s, r in pairs)
        for name in (seal_name(n), raw_name(n)):
            result = results[name]
            print(
                f"  {name:<40} {1e6 / result['cpu_us_per_run']:>6,.0f} per core"
                f" (rounds {1e6 / result['cpu_us_max']:,.0f} to {1e6 / result['cpu_us_min']:,.0f})"
            )
    raw_gcm = results["aes-256-gcm 256 B"]["p50_us"]
    raw_open = results["hpke open 32 B"]["p50_us"] + results["ecdsa p-256 verify"]["p50_us"]
    ratios["open_vs_raw"] = results["open OTP (1 device(s) in envelope)"]["p50_us"] / (
        raw_open + raw_gcm
    )
    print("ratios to the raw primitives:", ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("envelope bytes by device count:", sizes)
    write_document(
        args.output,
        {
            "results": results,
            "cpu_us_rounds": cpu_rounds,
            "ratios": ratios,
            "envelope_bytes": sizes,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
