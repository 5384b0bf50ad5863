"""Items e, g, h and i, which need no IM server: they run once, after the servers' items.

Each runs its own module (``bench.envelope``, ``bench.keylookup``, ``bench.omemo_sealing``,
``bench.pieces``, also usable alone) and its JSON becomes rows of the common table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bench import envelope, keylookup, omemo_sealing, pieces
from bench.report import PIECES_SUM, RESULTS_DIR, Row, say

__all__ = ["LOCAL", "gateway_pieces", "key_lookup", "omemo", "sealing"]

LOCAL = "local"
# Wall time: it includes the fsyncs of the state file, which the CPU time leaves out.
OMEMO_LATENCY = "one OmemoSender.encrypt (wall, state fsyncs included), one event loop"


def _run_module(
    item: str,
    description: str,
    main: Callable[[list[str]], int],
    output_name: str,
    planned: int,
    **options: object,
) -> dict[str, Any] | Row:
    """Run a bench module's ``main`` with ``--option value`` for each of ``options``, writing
    to ``output_name`` in the results directory: its JSON document, or the failed row of
    ``item`` (``planned`` runs) if it exits with another status than 0."""
    say(f"[{LOCAL}] {item}: {description}")
    output = RESULTS_DIR / output_name
    argv = [str(part) for name, value in options.items() for part in (f"--{name}", value)]
    status = main([*argv, "--output", str(output)])
    if status != 0:
        return Row.failed(LOCAL, item, description, planned, f"exit {status}")
    document: dict[str, Any] = json.loads(output.read_text())
    return document


def sealing(count: int, deadline: float) -> list[Row]:
    """(e) Seals per second per core of CPU time, for 1, 2 and 5 devices: the median of
    rounds interleaved with the raw primitives', whose rate and ratio go in the note."""
    document = _run_module(
        "e",
        "client-service sealing",
        envelope.main,
        "envelope.json",
        count,
        count=count,
        deadline=deadline,
    )
    if isinstance(document, Row):
        return [document]
    results = document["results"]
    rows = []
    for devices in envelope.DEVICE_COUNTS:
        sealed = results[envelope.seal_name(devices)]
        raw = results[envelope.raw_name(devices)]
        ratio = document["ratios"][f"seal_{devices}_vs_raw"]
        rows.append(
            _row(
                "e",
                f"seal + sign an OTP to {devices} device(s), per core",
                count,
                sealed,
                per_run_us="cpu_us_per_run",
                latency="one seal, single thread",
                extra={
                    "devices": devices,
                    "rounds": sealed["rounds"],
                    "per_core_slowest_round": round(1e6 / sealed["cpu_us_max"], 1),
                    "per_core_fastest_round": round(1e6 / sealed["cpu_us_min"], 1),
                    "raw_per_core": round(1e6 / raw["cpu_us_per_run"], 1),
                    "ratio_to_raw": round(ratio, 3),
                },
                note=(
                    f"rounds {1e6 / sealed['cpu_us_max']:,.0f}-{1e6 / sealed['cpu_us_min']:,.0f};"
                    f" raw {1e6 / raw['cpu_us_per_run']:,.0f}, seal/raw {ratio:.2f}"
                ),
            )
        )
    return rows


def omemo(count: int, first_count: int, deadline: float) -> list[Row]:
    """(h) Legacy-OMEMO encrypts per second per core of CPU time, sessions established, for
    1, 2 and 5 devices; and the first message to a new device."""
    document = _run_module(
        "h",
        "client-service legacy-OMEMO sealing",
        omemo_sealing.main,
        "omemo.json",
        count,
        count=count,
        first=first_count,
        deadline=deadline,
    )
    if isinstance(document, Row):
        return [document]
    results = document["results"]
    rows = [
        _row(
            "h",
            f"OMEMO encrypt an OTP to {devices} device(s), per core",
            count,
            results[omemo_sealing.steady_name(devices)],
            per_run_us="cpu_us_per_run",
            latency=OMEMO_LATENCY,
            extra={"devices": devices, "session": "established"},
        )
        for devices in omemo_sealing.DEVICE_COUNTS
    ]
    rows.append(
        _row(
            "h",
            "OMEMO first message to a new device (X3DH), per core",
            first_count,
            results[omemo_sealing.FIRST_MESSAGE],
            per_run_us="cpu_us_per_run",
            latency=OMEMO_LATENCY,
            extra={"devices": 1, "session": "new"},
        )
    )
    return rows


def _row(
    item: str,
    description: str,
    count: int,
    measured: dict[str, float],
    *,
    per_run_us: str,
    latency: str,
    extra: dict[str, object],
    complete: bool = True,
    note: str = "",
) -> Row:
    """A row from one ``bench.timing.summary``; the rate is one over ``per_run_us``."""
    runs = int(measured["runs"])
    return Row(
        server=LOCAL,
        item=item,
        description=description,
        count=count,
        done=runs,
        rate=round(1e6 / measured[per_run_us], 1),
        p50_ms=round(measured["p50_us"] / 1000, 3),
        p99_ms=round(measured["p99_us"] / 1000, 3),
        seconds=round(runs * measured[per_run_us] / 1e6, 3),
        complete=complete and runs == count,
        latency=latency,
        note=note,
        extra=extra,
    )


def key_lookup(devices: int, count: int, deadline: float) -> list[Row]:
    """(g) ``take`` of a recipient's keys from a keystore of ``devices`` devices."""
    document = _run_module(
        "g",
        f"keystore key lookup with {devices:,} devices",
        keylookup.main,
        "keylookup.json",
        count,
        devices=devices,
        count=count,
        deadline=deadline,
    )
    if isinstance(document, Row):
        return [document]
    take = document["results"]["take (synchronous=FULL)"]
    raw = document["results"]["raw SELECT by primary key (aiosqlite)"]
    stored = int(document["setup"]["devices"])
    return [
        _row(
            "g",
            f"keystore take() with {stored:,} devices",
            count,
            take,
            per_run_us="p50_us",
            latency="one take of a device's keys, one at a time",
            extra={
                "raw_select_p99_ms": round(raw["p99_us"] / 1000, 3),
                "p99_vs_raw": round(take["p99_us"] / raw["p99_us"], 2),
            },
            complete=stored == devices,
        )
    ]


def gateway_pieces(count: int, deadline: float) -> list[Row]:
    """(i) The CPU of each piece of c's gateway work on one message, alone
    (:mod:`bench.pieces`): a row per piece and per part measured alone, and one that adds
    the pieces up; the rate is messages per second of one core."""
    document = _run_module(
        "i",
        "the gateway's pieces alone",
        pieces.main,
        "pieces.json",
        count,
        count=count,
        rounds=min(10, count),
        deadline=deadline,
    )
    if isinstance(document, Row):
        return [document]
    per_message: dict[str, float] = document["us_per_message"]
    results = document["results"]
    batch = int(document["batch"])

    def row(description: str, us: float, runs: int, *, note: str = "", part: bool = False) -> Row:
        return Row(
            server=LOCAL,
            item="i",
            description=description,
            count=count * batch,
            done=runs * batch,
            rate=round(1e6 / us, 1),
            p50_ms=None,
            p99_ms=None,
            seconds=round(runs * batch * us / 1e6, 3),
            complete=runs == count,
            latency=f"CPU per message, runs of {batch}",
            note=f"{us:.1f} us/msg{note}",
            extra={"us_per_message": round(us, 1), "part": part},
        )

    rows = [row(name, per_message[name], int(results[name]["runs"])) for name in pieces.PIECES]
    rows += [
        row(name, per_message[name], int(results[name]["runs"]), note=" (part)", part=True)
        for name in pieces.PARTS
    ]
    runs = min(int(results[name]["runs"]) for name in pieces.PIECES)
    rows.append(row(PIECES_SUM, float(document["sum_us_per_message"]), runs))
    return rows
