"""``python -m bench.keylookup``: item g, keystore key lookup latency with many devices.

A fresh keystore (the real schema and migrations) is filled with raw SQL: one device
per JID, each with a small pool of one-time prekeys. Then, on the keystore's own
aiosqlite connection, it times what a sender's key lookup costs:

* ``take``: :meth:`SqlDeviceStore.take`, a write transaction that deletes one
  one-time prekey (``BEGIN IMMEDIATE`` ... ``COMMIT``, fsync with ``synchronous=FULL``,
  the product's setting), run in one hop on the keystore's SQLite worker thread;
* ``lookup``: :meth:`KeyDirectory.lookup`, the same plus building the bundles;
* a lookup of a JID that has no device;
* the raw limit: one ``SELECT`` of the device row by primary key on the same
  connection, and, to tell SQLite from aiosqlite, the same ``SELECT`` on a plain
  ``sqlite3`` connection and a bare 4 KiB write + ``fdatasync`` in the same directory.

Each write pass takes from JIDs no earlier pass touched. With fewer one-time prekeys
than the low-water mark (3 < 10 by default), every such take also marks the device as
told that its pool runs low: one statement more than in the steady state.

Every loop is bounded by a count and by a deadline; the temporary directory is removed
at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosqlite

from bench.report import RESULTS_DIR, write_document
from bench.timing import measure_async, measure_sync
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import MasterKeyring, SqliteKeystore

MAX_DEVICE_ID = 2**31 - 1
POINT = 65  # uncompressed P-256 point: identity key, signed and one-time prekeys
SIGNATURE = 72  # DER ECDSA P-256 signature, at its largest
BATCH = 50_000  # devices per fill transaction
LOW_WATER = 10  # the product's default (DeviceLimits.low_water)

DEVICE_SQL = (
    "INSERT INTO devices (jid, device_id, identity_key, suites, spk_id, spk_public,"
    " spk_signature, label, created_at, updated_at, revoked_at, low_notified_at)"
    " VALUES (?, ?, ?, 'p256', 1, ?, ?, NULL, ?, ?, NULL, NULL)"
)
PREKEY_SQL = (
    "INSERT INTO one_time_prekeys (jid, device_id, key_id, public_key, signature)"
    " VALUES (?, ?, ?, ?, ?)"
)
RAW_SQL = "SELECT * FROM devices WHERE jid = ? AND device_id = ?"


@dataclass
class Fill:
    """What the fill stored, and how fast."""

    devices: int
    prekeys_per_device: int
    rows: int
    seconds: float
    rows_per_second: float
    flush_seconds: float
    db_bytes: int
    complete: bool


@dataclass
class Population:
    """The stored JIDs (sorted) and each one's device id, by index."""

    jids: list[str]
    device_ids: list[int]


def batch_rows(
    population: Population, start: int, end: int, prekeys: int, blob: bytes, now: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The device and prekey rows of devices ``start`` to ``end``, keys cut from ``blob``."""
    at = 0

    def cut(size: int) -> bytes:
        nonlocal at
        at += size
        return blob[at - size : at]

    device_rows: list[tuple[object, ...]] = []
    prekey_rows: list[tuple[object, ...]] = []
    for i in range(start, end):
        jid, device_id = population.jids[i], population.device_ids[i]
        device_rows.append((jid, device_id, cut(POINT), cut(POINT), cut(SIGNATURE), now, now))
        for key_id in range(2, prekeys + 2):  # 1 is the signed prekey's id
            prekey_rows.append((jid, device_id, key_id, cut(POINT), cut(SIGNATURE)))
    return device_rows, prekey_rows


def fill(path: Path, devices: int, prekeys: int, deadline: float, rng: random.Random) -> Population:
    """Insert ``devices`` devices with ``prekeys`` one-time prekeys each, in batches.

    JIDs are inserted in key order so that every B-tree grows at its right edge.
    Foreign keys are not checked (the rows are consistent by construction) and the
    fill runs with ``synchronous=OFF``: the file is a throwaway. See :func:`flush`.
    """
    jids = sorted(f"user{i}@example.org" for i in range(devices))
    population = Population(jids, [rng.randint(1, MAX_DEVICE_ID) for _ in range(devices)])
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -262144")  # 256 MiB
        now = int(time.time())
        per_device = 2 * POINT + SIGNATURE + prekeys * (POINT + SIGNATURE)
        done = rows = 0
        began = last_report = time.monotonic()
        stop_at = began + deadline
        while done < devices:
            end = min(devices, done + BATCH)
            device_rows, prekey_rows = batch_rows(
                population, done, end, prekeys, rng.randbytes(per_device * (end - done)), now
            )
            connection.execute("BEGIN")
            connection.executemany(DEVICE_SQL, device_rows)
            connection.executemany(PREKEY_SQL, prekey_rows)
            connection.execute("COMMIT")
            done = end
            rows += len(device_rows) + len(prekey_rows)
            moment = time.monotonic()
            if moment - last_report >= 1.0 or done == devices:
                last_report = moment
                print(
                    f"  filled {done:>9,} devices, {rows:>10,} rows"
                    f"  {rows / (moment - began):>9,.0f} rows/s",
                    flush=True,
                )
            if moment > stop_at and done < devices:
                print(f"  fill deadline reached after {done:,} of {devices:,} devices")
                break
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return Population(jids[:done], population.device_ids[:done])


def flush(path: Path) -> float:
    """``fsync`` the filled file, so that the first checkpoint measured does not pay for
    writing back the whole fill (about 0.6 s for 1M devices). Returns the seconds taken.
    """
    began = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - began


async def create_schema(path: Path) -> None:
    keystore = await SqliteKeystore.open(path, MasterKeyring(os.urandom(32)))
    await keystore.close()


class Picker:
    """Random stored JIDs; for the passes that write, ones no pass has touched yet."""

    def __init__(self, population: Population, fresh: int, rng: random.Random) -> None:
        self.population = population
        self._rng = rng
        self._fresh = rng.sample(range(len(population.jids)), min(fresh, len(population.jids)))

    def any(self) -> tuple[str, int]:
        i = self._rng.randrange(len(self.population.jids))
        return self.population.jids[i], self.population.device_ids[i]

    def untouched(self) -> str:
        if self._fresh:
            return self.population.jids[self._fresh.pop()]
        return self.any()[0]


async def measure_lookups(
    path: Path, population: Population, count: int, deadline: float, rng: random.Random
) -> dict[str, dict[str, float]]:
    keystore = await SqliteKeystore.open(path, MasterKeyring(os.urandom(32)))
    plain = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    results: dict[str, dict[str, float]] = {}
    try:
        db: aiosqlite.Connection = keystore._db
        store = keystore.devices
        directory = KeyDirectory(keystore)
        picker = Picker(population, 3 * count, rng)

        async def run(name: str, operation: Callable[[], Awaitable[object]]) -> None:
            results[name] = await measure_async(name, operation, count, deadline)

        async def raw() -> object:
            jid, device_id = picker.any()
            return await db.execute_fetchall(RAW_SQL, (jid, device_id))

        def raw_plain() -> object:
            jid, device_id = picker.any()
            return plain.execute(RAW_SQL, (jid, device_id)).fetchone()

        async def take() -> object:
            keys = await store.take(picker.untouched(), low_water=LOW_WATER)
            if len(keys.devices) != 1:
                raise RuntimeError("a stored JID came back without its device")
            return keys

        async def lookup() -> object:
            return await directory.lookup(picker.untouched())

        missing = iter(range(10**9))

        async def lookup_missing() -> object:
            bundles = await directory.lookup(f"nobody{next(missing)}@example.org")
            if bundles:
                raise RuntimeError("an unknown JID came back with devices")
            return bundles

        print("raw limit:", flush=True)
        # Also warms SQLite's page cache with the upper levels of the B-trees.
        await run("raw SELECT by primary key (aiosqlite)", raw)
        results["raw SELECT, plain sqlite3, no thread hop"] = measure_sync(
            "raw SELECT, plain sqlite3, no thread hop", raw_plain, count, deadline
        )
        with fsync_probe(path.parent) as probe:
            results["4 KiB pwrite + fdatasync"] = measure_sync(
                "4 KiB pwrite + fdatasync", probe, count, deadline
            )
        print("keystore (synchronous=FULL, as shipped):", flush=True)
        await run("take (synchronous=FULL)", take)
        await run("KeyDirectory.lookup (synchronous=FULL)", lookup)
        await run("lookup of a JID with no device", lookup_missing)
    finally:
        plain.close()
        await keystore.close()
    return results


@contextmanager
def fsync_probe(directory: Path) -> Iterator[Callable[[], object]]:
    """A 4 KiB write at a rotating offset, then ``fdatasync``: the disk's commit floor."""
    fd = os.open(directory / "fsync-probe", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, bytes(4096 * 64), 0)
        os.fsync(fd)
        page = os.urandom(4096)
        offsets = itertools.cycle(range(0, 4096 * 64, 4096))

        def once() -> None:
            os.pwrite(fd, page, next(offsets))
            os.fdatasync(fd)

        yield once
    finally:
        os.close(fd)


def db_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keylookup", description=__doc__)
    parser.add_argument("--devices", type=int, default=1_000_000, help="devices (one per JID)")
    parser.add_argument("--prekeys", type=int, default=3, help="one-time prekeys per device")
    parser.add_argument("--count", type=int, default=5_000, help="lookups per measurement")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument(
        "--fill-deadline", type=float, default=600.0, help="seconds for the fill at most"
    )
    parser.add_argument("--tmpdir", type=Path, help="where the database goes (default: $TMPDIR)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the JIDs picked")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "keylookup.json")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 5_000_000:
        parser.error("--devices must be 1 to 5,000,000")
    if not 0 <= args.prekeys <= 100:
        parser.error("--prekeys must be 0 to 100")
    if not 1 <= args.count <= 100_000 or args.deadline <= 0 or args.fill_deadline <= 0:
        parser.error("--count must be 1 to 100,000 and the deadlines positive")
    # Which JIDs are picked and their key bytes: no secret, a reproducible sample.
    rng = random.Random(args.seed)  # noqa: S311
    workdir = Path(tempfile.mkdtemp(prefix="cmaas-keylookup-", dir=args.tmpdir))
    try:
        path = workdir / "keystore.sqlite3"
        asyncio.run(create_schema(path))
        print(
            f"filling {args.devices:,} devices x {args.prekeys} one-time prekeys into {path}",
            flush=True,
        )
        began = time.monotonic()
        population = fill(path, args.devices, args.prekeys, args.fill_deadline, rng)
        seconds = time.monotonic() - began
        flush_seconds = flush(path)
        stored = len(population.jids)
        rows = stored * (1 + args.prekeys)
        setup = Fill(
            devices=stored,
            prekeys_per_device=args.prekeys,
            rows=rows,
            seconds=seconds,
            rows_per_second=rows / seconds,
            flush_seconds=flush_seconds,
            db_bytes=db_bytes(path),
            complete=stored == args.devices,
        )
        print(
            f"setup: {stored:,} devices, {rows:,} rows in {seconds:.1f} s"
            f" ({setup.rows_per_second:,.0f} rows/s), fsync {flush_seconds:.1f} s,"
            f" database {setup.db_bytes / 2**20:,.0f} MiB"
        )
        results = asyncio.run(measure_lookups(path, population, args.count, args.deadline, rng))
    except KeyboardInterrupt:
        print("interrupted; the temporary database is removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw = results["raw SELECT by primary key (aiosqlite)"]
    ratios = {
        name: {
            "p50": result["p50_us"] / raw["p50_us"],
            "p99": result["p99_us"] / raw["p99_us"],
        }
        for name, result in results.items()
    }
    take_p99 = results["take (synchronous=FULL)"]["p99_us"]
    target_met = take_p99 <= 1000.0
    print()
    print(
        f"{'measurement':<42} {'p50 us':>8} {'p99 us':>8} {'max us':>8} {'cpu us':>7}"
        f" {'p50/raw':>8} {'p99/raw':>8}"
    )
    for name, result in results.items():
        print(
            f"{name:<42} {result['p50_us']:>8.0f} {result['p99_us']:>8.0f}"
            f" {result['max_us']:>8.0f} {result['cpu_us_per_run']:>7.0f}"
            f" {ratios[name]['p50']:>8.2f} {ratios[name]['p99']:>8.2f}"
        )
    verdict = "met" if target_met else "MISSED"
    print(f"target p99 <= 1 ms for take (synchronous=FULL): {verdict} ({take_p99:,.0f} us)")
    write_document(
        args.output,
        {
            "setup": asdict(setup),
            "settings": {
                "count": args.count,
                "deadline_s": args.deadline,
                "low_water": LOW_WATER,
                "seed": args.seed,
            },
            "results": results,
            "ratios_to_raw": ratios,
            "target_p99_us": 1000.0,
            "target_met": target_met,
            "sqlite": sqlite3.sqlite_version,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d"),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
