"""``python -m bench``: start the servers, run the measurements, print and save the results.

Servers run one after the other, never side by side, so that each has the machine to
itself. Every server is stopped before the program exits, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench.footprint import footprint
from bench.gateway import Storage, envelope_chars, ingest, otp_latency, stop_postgres
from bench.local_items import gateway_pieces, key_lookup, omemo, sealing
from bench.measure import HTTP_SENDER, RECIPIENT, Measurement, Settings, peer, raw_limit, run_all
from bench.report import RESULTS_DIR, Row, say, table, write_json
from cmaas.devservers import DevServerError, XmppServer, start_ejabberd, start_prosody

# Two gateway instances share ejabberd's component domain, each with its ping reply host.
INSTANCE_HOSTS = ("a.gateway.cmaas.test", "b.gateway.cmaas.test")
STARTERS: dict[str, Callable[[Path], XmppServer]] = {
    "prosody": start_prosody,
    "ejabberd": functools.partial(start_ejabberd, instance_hosts=INSTANCE_HOSTS),
}


async def raw_limit_envelope_sized(server: XmppServer, settings: Settings) -> Row:
    """(a-env) item a with bodies as long as item c's envelopes."""
    size = envelope_chars(server, settings.count)
    return await raw_limit(server, dataclasses.replace(settings, body_size=size), item="a-env")


async def peer_envelope_sized(server: XmppServer, settings: Settings) -> Row:
    """(b-env) item b with bodies as long as item c's envelopes."""
    size = envelope_chars(server, settings.count)
    return await peer(server, dataclasses.replace(settings, body_size=size), item="b-env")


RAW: list[tuple[str, str, Measurement]] = [
    ("a", "raw component -> raw client", raw_limit),
    (
        "a-env",
        "raw component -> raw client, bodies as long as c's envelopes",
        raw_limit_envelope_sized,
    ),
]
OTP: list[tuple[str, str, Measurement]] = [
    ("d", "OTP latency while bulk drains", otp_latency),
    (
        "d-flood",
        "OTP latency while bulk is still submitted and drains",
        functools.partial(otp_latency, flood=True),
    ),
]
INGEST: list[tuple[str, str, Measurement]] = [
    ("c", "gateway on SQLite: signed HTTP batches -> raw client", ingest),
    (
        "c-pg1",
        "gateway on PostgreSQL, 1 instance: signed HTTP batches -> raw client",
        functools.partial(ingest, storage=Storage(postgres=True)),
    ),
]
ITEMS: dict[str, list[tuple[str, str, Measurement]]] = {
    # Prosody takes one component connection per domain: a second instance would only
    # stand by, so there is no c-pg2 on it.
    "prosody": [
        *RAW,
        *INGEST,
        *OTP,
        ("f", "gateway RSS: queued, then after a long run", footprint),
    ],
    "ejabberd": [
        *RAW,
        ("b", "send_message HTTP -> raw client", peer),
        (
            "b-env",
            "send_message HTTP -> raw client, bodies as long as c's envelopes",
            peer_envelope_sized,
        ),
        *INGEST,
        (
            "c-pg2",
            "gateway on PostgreSQL, 2 instances: signed HTTP batches -> raw client",
            functools.partial(
                ingest, storage=Storage(postgres=True, instances=2, instance_hosts=INSTANCE_HOSTS)
            ),
        ),
        *OTP,
        ("f", "gateway RSS: queued, then after a long run", footprint),
    ],
}
ALL_ITEMS = "abcdefghi"
# Items that need an IM server; the others (e, g, h, i) run once, after the servers. The
# letter selects an item with all its variants (c: c, c-pg1 and c-pg2).
SERVER_ITEMS = {item[0] for entries in ITEMS.values() for item, _, _ in entries}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--count", type=int, help="messages per measurement (default 20000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=2000")
    parser.add_argument("--servers", default="prosody,ejabberd", help="comma-separated")
    parser.add_argument("--window", type=int, default=2000, help="in-flight limit of (a)")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests of (b)")
    parser.add_argument("--body-size", type=int, default=100, help="body characters")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per item")
    parser.add_argument("--items", default=ALL_ITEMS, help="which items, e.g. 'acd' (default all)")
    parser.add_argument("--queue", type=int, help="(f) messages queued (default 100000)")
    parser.add_argument(
        "--processed", type=int, help="(f) messages processed in all (default 1000000)"
    )
    parser.add_argument(
        "--footprint-deadline", type=float, default=600.0, help="(f) seconds to process"
    )
    parser.add_argument("--devices", type=int, help="(g) devices (default 1000000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of a, b and c on each server; their ratios are the median round's",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = 2000 if args.quick else 20000
    if args.queue is None:
        args.queue = 5_000 if args.quick else 100_000
    if args.processed is None:
        args.processed = 10_000 if args.quick else 1_000_000
    if args.devices is None:
        args.devices = 20_000 if args.quick else 1_000_000
    args.items = "".join(sorted(set(args.items.replace(",", ""))))
    if not args.items or set(args.items) - set(ALL_ITEMS):
        parser.error(f"--items: letters among {ALL_ITEMS}")
    if not 1 <= args.queue <= 1_000_000 or not 1 <= args.processed <= 10_000_000:
        parser.error("--queue must be 1 to 1,000,000 and --processed 1 to 10,000,000")
    if args.footprint_deadline <= 0 or not 1 <= args.devices <= 5_000_000:
        parser.error("--footprint-deadline must be positive, --devices 1 to 5,000,000")
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(STARTERS))
    if unknown or not servers:
        parser.error(f"--servers: choose among {', '.join(STARTERS)}")
    args.server_list = servers
    if not 1 <= args.count <= 10_000_000:
        parser.error("--count must be between 1 and 10,000,000")
    if not 1 <= args.rounds <= 9:
        parser.error("--rounds must be 1 to 9")
    if args.window < 1 or args.concurrency < 1 or args.deadline <= 0:
        parser.error("--window, --concurrency and --deadline must be positive")
    if not 16 <= args.body_size <= 100_000:
        parser.error("--body-size must be between 16 and 100,000")
    return args


def chosen_items(kind: str, items: str) -> list[tuple[str, str, Measurement]]:
    """The measurements of ``kind`` that the letters ``items`` select, variants included."""
    return [entry for entry in ITEMS[kind] if entry[0][0] in items]


def failed_rows(kind: str, settings: Settings, items: str, reason: str) -> list[Row]:
    return [
        Row.failed(kind, item, description, settings.count, reason)
        for item, description, _ in chosen_items(kind, items)
    ]


ROUND_ITEMS = ("a", "b", "c")
"""The items measured again in later rounds (their variants are not): on this VM the
CPU's speed drifts by 20 % and more within a minute, so one b and one c, a minute
apart, gave c/b from 0.81 to 1.03 in four runs of the same code. Each later round runs
them again back to back, and the ratios between them are the median round's."""


def repeated_items(kind: str, items: str, rounds: int) -> list[list[tuple[str, str, Measurement]]]:
    """The measurements of rounds 2 to ``rounds``: the :data:`ROUND_ITEMS` among
    ``items`` that ``kind`` has, in order."""
    again = [entry for entry in ITEMS[kind] if entry[0] in ROUND_ITEMS and entry[0] in items]
    return [again for _ in range(rounds - 1)] if len(again) > 1 else []


async def _all_rounds(server: XmppServer, settings: Settings, items: str, rounds: int) -> list[Row]:
    rows = await run_all(server, settings, chosen_items(server.kind, items))
    later = repeated_items(server.kind, items, rounds)
    if not later:
        return rows
    for row in rows:
        if row.item in ROUND_ITEMS:
            row.extra["round"] = 1
    for number, measurements in enumerate(later, start=2):
        say(f"[{server.kind}] round {number} of {rounds}: {', '.join(m[0] for m in measurements)}")
        for row in await run_all(server, settings, measurements):
            row.extra["round"] = number
            rows.append(row)
    return rows


def bench_server(
    kind: str, settings: Settings, items: str, workdir: Path, rounds: int = 1
) -> list[Row]:
    """Start ``kind``, measure it (``rounds`` of :data:`ROUND_ITEMS`), and stop it
    (also on errors and Ctrl-C)."""
    say(f"[{kind}] starting")
    began = time.monotonic()
    try:
        server = STARTERS[kind](workdir)
    except DevServerError as exc:
        say(f"[{kind}] failed to start: {exc}")
        return failed_rows(kind, settings, items, f"server failed to start: {exc}")
    try:
        for user in (RECIPIENT, HTTP_SENDER):
            server.register_user(user, settings.password)
        say(
            f"[{kind}] up in {time.monotonic() - began:.1f} s: c2s {server.c2s_port}, "
            f"component {server.component_port}, http {server.http_port}"
        )
        return asyncio.run(_all_rounds(server, settings, items, rounds))
    except DevServerError as exc:
        say(f"[{kind}] setup failed: {exc}")
        return failed_rows(kind, settings, items, f"setup failed: {exc}")
    finally:
        say(f"[{kind}] stopping")
        server.stop()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM would otherwise end the interpreter without running the finally blocks
    # that stop the servers.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings(
        count=args.count,
        window=args.window,
        concurrency=args.concurrency,
        body_size=args.body_size,
        deadline=args.deadline,
        password=secrets.token_urlsafe(12),
        queue=args.queue,
        processed=args.processed,
        footprint_deadline=args.footprint_deadline,
    )
    workdir = Path(tempfile.mkdtemp(prefix="cmaas-bench-"))
    say(
        f"bench: N={settings.count:,} servers={','.join(args.server_list)} "
        f"(server logs are copied to {workdir} at exit)"
    )
    began = time.monotonic()
    rows: list[Row] = []
    interrupted = False
    try:
        if set(args.items) & SERVER_ITEMS:
            try:
                for kind in args.server_list:
                    rows.extend(bench_server(kind, settings, args.items, workdir, args.rounds))
            finally:
                # Started by the first PostgreSQL variant of c, shared by all of them.
                stop_postgres()
        if "e" in args.items:
            rows.extend(sealing(2000 if not args.quick else 300, settings.deadline))
        # h right after e, so that the two suites are compared under the same load.
        if "h" in args.items:
            rows.extend(omemo(50 if not args.quick else 10, 10 if not args.quick else 3, 10.0))
        if "i" in args.items:
            rows.extend(gateway_pieces(200 if not args.quick else 20, 60.0))
        if "g" in args.items:
            rows.extend(key_lookup(args.devices, 5000 if not args.quick else 500, 60.0))
    except KeyboardInterrupt:
        # The servers are stopped by then; keep what was measured.
        interrupted = True
        say("interrupted")
    say("")
    say(table(rows))
    write_json(
        rows,
        {
            "count": settings.count,
            "window": settings.window,
            "concurrency": settings.concurrency,
            "body_size": settings.body_size,
            "deadline_s": settings.deadline,
            "servers": args.server_list,
            "items": args.items,
            "queue": settings.queue,
            "processed": settings.processed,
            "footprint_deadline_s": settings.footprint_deadline,
            "devices": args.devices,
            "rounds": args.rounds,
            "interrupted": interrupted,
        },
        args.output,
    )
    say(f"\nwrote {args.output} ({time.monotonic() - began:.1f} s in all)")
    if interrupted:
        return 130
    return 0 if rows and all(row.complete for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
