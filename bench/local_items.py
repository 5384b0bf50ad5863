"""Items e and g, which need no IM server: they run once, after the servers' items.

Each runs its own module (``bench.envelope``, ``bench.keylookup``, also usable alone)
and its JSON becomes rows of the common table.
"""

from __future__ import annotations

import json

from bench import envelope, keylookup
from bench.report import RESULTS_DIR, Row, say

__all__ = ["LOCAL", "key_lookup", "sealing"]

LOCAL = "local"


def sealing(count: int, deadline: float) -> list[Row]:
    """(e) Seals per second per core of CPU time, for 1, 2 and 5 devices."""
    output = RESULTS_DIR / "envelope.json"
    say(f"[{LOCAL}] e: client-service sealing")
    status = envelope.main(
        ["--count", str(count), "--deadline", str(deadline), "--output", str(output)]
    )
    if status != 0:
        return [Row.failed(LOCAL, "e", "client-service sealing", count, f"exit {status}")]
    results = json.loads(output.read_text())["results"]
    rows = []
    for devices in (1, 2, 5):
        measured = results[f"seal OTP to {devices} device(s)"]
        rows.append(
            Row(
                server=LOCAL,
                item="e",
                description=f"seal + sign an OTP to {devices} device(s), per core",
                count=count,
                done=int(measured["runs"]),
                rate=round(1e6 / measured["cpu_us_per_run"], 1),
                p50_ms=round(measured["p50_us"] / 1000, 3),
                p99_ms=round(measured["p99_us"] / 1000, 3),
                seconds=round(measured["runs"] * measured["cpu_us_per_run"] / 1e6, 3),
                complete=int(measured["runs"]) == count,
                latency="one seal, single thread",
                extra={"devices": devices},
            )
        )
    return rows


def key_lookup(devices: int, count: int, deadline: float) -> list[Row]:
    """(g) ``take`` of a recipient's keys from a keystore of ``devices`` devices."""
    output = RESULTS_DIR / "keylookup.json"
    say(f"[{LOCAL}] g: key lookup with {devices:,} devices")
    status = keylookup.main(
        [
            "--devices",
            str(devices),
            "--count",
            str(count),
            "--deadline",
            str(deadline),
            "--output",
            str(output),
        ]
    )
    if status != 0:
        return [Row.failed(LOCAL, "g", "keystore key lookup", count, f"exit {status}")]
    document = json.loads(output.read_text())
    take = document["results"]["take (synchronous=FULL)"]
    raw = document["results"]["raw SELECT by primary key (aiosqlite)"]
    stored = int(document["setup"]["devices"])
    return [
        Row(
            server=LOCAL,
            item="g",
            description=f"keystore take() with {stored:,} devices",
            count=count,
            done=int(take["runs"]),
            rate=round(1e6 / take["p50_us"], 1),
            p50_ms=round(take["p50_us"] / 1000, 3),
            p99_ms=round(take["p99_us"] / 1000, 3),
            seconds=round(take["runs"] * take["p50_us"] / 1e6, 3),
            complete=stored == devices and int(take["runs"]) == count,
            latency="one take of a device's keys, one at a time",
            extra={
                "raw_select_p99_ms": round(raw["p99_us"] / 1000, 3),
                "p99_vs_raw": round(take["p99_us"] / raw["p99_us"], 2),
            },
        )
    ]
