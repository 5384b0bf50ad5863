"""Progress lines while a measurement runs, the final table and the JSON file."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PIECES_SUM = "sum of the pieces"
"""The description of item i's row that adds its pieces up."""


@dataclass
class Row:
    """One measurement on one server. Rates are messages per second; latencies ms."""

    server: str
    item: str
    description: str
    count: int
    done: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    seconds: float
    complete: bool
    latency: str
    errors: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    memory_mib: float | None = None
    # The gateway's CPU time (all instances) over the timed part, per message delivered.
    cpu_s_per_message: float | None = None

    @classmethod
    def failed(cls, server: str, item: str, description: str, count: int, note: str) -> Row:
        """A measurement that produced nothing, with the reason in ``note``."""
        return cls(
            server=server,
            item=item,
            description=description,
            count=count,
            done=0,
            rate=0.0,
            p50_ms=None,
            p99_ms=None,
            seconds=0.0,
            complete=False,
            latency="-",
            note=note,
        )


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def say(line: str) -> None:
    print(line, flush=True)


async def ticker(label: str, total: int, done: Callable[[], int], every: float = 1.0) -> None:
    """Print ``label``'s progress every ``every`` seconds until cancelled."""
    start = time.perf_counter()
    before, then = 0, start
    while True:
        await asyncio.sleep(every)
        now, count = time.perf_counter(), done()
        recent = (count - before) / (now - then)
        say(
            f"  {label}: {count:,}/{total:,} after {now - start:.1f} s "
            f"({recent:,.0f} msg/s over the last {now - then:.1f} s)"
        )
        before, then = count, now


def round_of(row: Row) -> int:
    """Which round of its item ``row`` measured (1 unless ``--rounds`` repeated it)."""
    return int(row.extra.get("round", 1))


def label(row: Row) -> str:
    """The row's item, with its round when it has several."""
    return row.item if "round" not in row.extra else f"{row.item} round {round_of(row)}"


def round_ratios(rows: Sequence[Row]) -> dict[str, list[float]]:
    """Per round, b/a, c/a and c/b per server (and c against a and b carrying bodies as
    long as c's envelopes), each from the two rows of the same round that ran to
    completion; h/e per device count (one round)."""
    found: dict[str, list[float]] = {}

    def add(name: str, upper: Row | None, lower: Row | None) -> None:
        if upper and lower and lower.rate > 0 and upper.complete and lower.complete:
            found.setdefault(name, []).append(round(upper.rate / lower.rate, 3))

    for server in sorted({row.server for row in rows}):
        mine = [row for row in rows if row.server == server]
        for number in sorted({round_of(row) for row in mine}):
            by_item = {row.item: row for row in mine if round_of(row) == number}
            for top, bottom in (
                ("b", "a"),
                ("c", "a"),
                ("c", "b"),
                ("c", "a-env"),
                ("c", "b-env"),
            ):
                add(f"{server} {top}/{bottom}", by_item.get(top), by_item.get(bottom))
        envelope = {row.extra.get("devices"): row for row in mine if row.item == "e"}
        for row in mine:
            if row.item == "h" and row.extra.get("session") == "established":
                devices = row.extra["devices"]
                add(f"{server} h/e {devices} device(s)", row, envelope.get(devices))
    return found


def ratios(rows: Sequence[Row]) -> dict[str, float]:
    """The ratios of :func:`round_ratios`, each the median of its rounds (the lower
    middle one of an even number), and e's seal against its raw primitives per device
    count."""
    found = {name: statistics.median_low(values) for name, values in round_ratios(rows).items()}
    for row in rows:
        if row.item == "e" and row.complete and "ratio_to_raw" in row.extra:
            # Measured in interleaved rounds, not from two rows' rates.
            found[f"{row.server} e seal/raw {row.extra['devices']} device(s)"] = row.extra[
                "ratio_to_raw"
            ]
    return found


@dataclass(frozen=True)
class Target:
    """One target (issue 6's, as issue 16 revised them), checked against one server's
    (or the local) figures."""

    item: str
    server: str
    goal: str
    measured: float
    limit: float
    at_most: bool

    @property
    def met(self) -> bool:
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        return f"target {self.item} ({self.server}) {self.goal}: {self.measured:,.3g} {verdict}"


def targets(rows: Sequence[Row]) -> list[Target]:
    """Every target whose figures were measured completely in ``rows``."""
    found: list[Target] = []
    done = [row for row in rows if row.complete]
    for row in done:
        if row.item in ("d", "d-flood") and row.p99_ms is not None:
            found.append(Target(row.item, row.server, "p99 ms <= 50", row.p99_ms, 50.0, True))
        elif row.item == "e" and row.extra.get("devices", 1) == 1:
            # The target is for one device; 2 and 5 are measured beside OMEMO's (item h).
            goal = "msg/s per core >= 3,000 (1 device)"
            found.append(Target("e", row.server, goal, row.rate, 3000.0, False))
        elif row.item == "f" and row.memory_mib is not None:
            found.append(Target("f", row.server, "RSS MiB <= 150", row.memory_mib, 150.0, True))
        elif row.item == "g" and row.p99_ms is not None:
            found.append(Target("g", row.server, "p99 ms <= 1", row.p99_ms, 1.0, True))
    for name, value in ratios(rows).items():
        server, ratio = name.split(" ", 1)
        if ratio == "c/a" and server == "prosody":
            found.append(Target("c", server, "c/a >= 0.35", value, 0.35, False))
        elif ratio == "c/b":
            found.append(Target("c", server, "c/b >= 1.0", value, 1.0, False))
    return sorted(found, key=lambda t: (t.item, t.server))


def gateway_budgets(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Per server where b and c both ran with their CPU split: how many µs of CPU c's
    gateway may spend on a message for c to match b, what it spends (each the median
    over the rounds), and (when item i ran) what its pieces alone add up to.

    On shared cores a saturated path runs at a rate inversely proportional to the CPU
    the machine spends per message, so c matches b when c's machine spends what b's
    does: the gateway may have what b's machine spends less what c's IM server, bench
    and the rest (``other``) take.
    """
    pieces = next(
        (row for row in rows if row.item == "i" and row.description == PIECES_SUM),
        None,
    )
    found: dict[str, dict[str, float]] = {}
    for server in sorted({row.server for row in rows}):
        mine = [row for row in rows if row.server == server and row.complete]
        may_spend: list[float] = []
        spends: list[float] = []
        for number in sorted({round_of(row) for row in mine}):
            by_item = {row.item: row for row in mine if round_of(row) == number}
            b, c = by_item.get("b"), by_item.get("c")
            b_split = b.extra.get("cpu_us_per_message") if b else None
            c_split = c.extra.get("cpu_us_per_message") if c else None
            if not b_split or not c_split or "gateway" not in c_split:
                continue
            rest = sum(v for name, v in c_split.items() if name not in ("machine", "gateway"))
            may_spend.append(round(b_split["machine"] - rest, 1))
            spends.append(c_split["gateway"])
        if not may_spend:
            continue
        budget = {
            "gateway_may_spend": statistics.median_low(may_spend),
            "gateway_spends": statistics.median_low(spends),
            "rounds": len(may_spend),
        }
        if pieces is not None and pieces.complete:
            budget["pieces_alone"] = pieces.extra["us_per_message"]
        found[server] = budget
    return found


def budget_lines(rows: Sequence[Row]) -> list[str]:
    """:func:`gateway_budgets` as text."""
    lines = []
    for server, budget in gateway_budgets(rows).items():
        rounds = int(budget["rounds"])
        median = f" (median of {rounds} rounds)" if rounds > 1 else ""
        line = (
            f"budget {server} c/b = 1.0{median}: the gateway may spend"
            f" {budget['gateway_may_spend']:,.0f} us/msg; it spends {budget['gateway_spends']:,.0f}"
        )
        if "pieces_alone" in budget:
            line += f"; its pieces alone (item i) {budget['pieces_alone']:,.0f}"
        lines.append(line)
    return lines


def table(rows: Sequence[Row]) -> str:
    """The result table as fixed-width text."""

    def cell(value: float | None, scale: float = 1.0) -> str:
        return "-" if value is None else f"{value * scale:,.1f}"

    header = ("server", "item", "N", "msg/s", "p50 ms", "p99 ms", "RSS MiB", "CPU us/msg", "status")
    lines = [
        (
            row.server,
            f"{row.item} {row.description}"
            + (f" (round {round_of(row)})" if "round" in row.extra else ""),
            f"{row.count:,}",
            f"{row.rate:,.0f}",
            cell(row.p50_ms),
            cell(row.p99_ms),
            cell(row.memory_mib),
            cell(row.cpu_s_per_message, 1e6),
            ("ok " + row.note).strip()
            if row.complete
            else f"INCOMPLETE {row.done:,}/{row.count:,} {row.note}".strip(),
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 6, 7}

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    out = [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)]
    each = round_ratios(rows)
    for name, value in ratios(rows).items():
        rounds = each.get(name, [])
        detail = (
            f" (median of {len(rounds)} rounds: {', '.join(f'{r:.3f}' for r in rounds)})"
            if len(rounds) > 1
            else ""
        )
        out.append(f"ratio {name} = {value:.3f}{detail}")
    out.extend(target.line() for target in targets(rows))
    out.extend(cpu_lines(rows))
    out.extend(budget_lines(rows))
    notes = sorted({f"{row.item}: latency = {row.latency}" for row in rows})
    return "\n".join([*out, *notes])


def cpu_lines(rows: Sequence[Row]) -> list[str]:
    """Per measured row, the machine's CPU time per message and how it divides among
    the processes in the path (``extra["cpu_us_per_message"]``, from
    :class:`bench.cpu.CpuSplit`); and for c, how the gateway's divides among its event
    loop, its other threads and its admission workers."""
    lines = []
    for row in rows:
        split = row.extra.get("cpu_us_per_message")
        if not row.complete or not split:
            continue
        parts = " + ".join(
            f"{name.replace('_', ' ')} {value:,.0f}"
            for name, value in split.items()
            if name != "machine"
        )
        lines.append(
            f"cpu {row.server} {label(row)}: machine {split['machine']:,.0f} us/msg = {parts}"
        )
        gateway = row.extra.get("gateway_cpu_us_per_message")
        if gateway:
            inside = " + ".join(f"{name.replace('_', ' ')} {v:,.0f}" for name, v in gateway.items())
            first = " (first instance)" if row.extra.get("instances", 1) > 1 else ""
            lines.append(f"cpu {row.server} {label(row)} gateway{first}: {inside}")
    return lines


def write_json(rows: Sequence[Row], settings: dict[str, Any], path: Path) -> None:
    """Write the results (atomically, so a reader never sees half a file)."""
    document = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": settings,
        "complete": all(row.complete for row in rows) and bool(rows),
        "results": [asdict(row) for row in rows],
        "ratios": ratios(rows),
        "targets": [{**asdict(target), "met": target.met} for target in targets(rows)],
        "gateway_budgets": gateway_budgets(rows),
    }
    # The caller says where, with the run's duration.
    write_document(path, document, announce=False)


def write_document(path: Path, document: dict[str, Any], *, announce: bool = True) -> None:
    """Write a JSON document atomically (a reader never sees half of it), and say where
    unless told not to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document, indent=2) + "\n")
    scratch.replace(path)
    if announce:
        print(f"wrote {path}")
