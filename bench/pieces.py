"""``python -m bench.pieces``: the CPU of each piece of the gateway's work on one message
of item c, every piece measured alone, in one process, on one thread (the store's own
thread aside).

Item i. c's gateway spends some 300 to 400 µs of CPU on a message; the pieces here are
what it cannot leave out: the admission check (the strict parse of the envelope and the
app's signature), the request's parse, the stanza, the receipt's parse and the durable
lifecycle on SQLite (stored, dispatched, delivered, with their events). Alone, none
waits for another, crosses a thread or a process, or shares the CPU's caches, so their
sum is what the gateway would spend with no scheduling, no hand-offs and no framework
at all. Set against what c's gateway may spend for c to match b (``c/b >= 1.0``), it
says how much of that budget the pieces leave to everything else. ECDSA P-256
verification in ``cryptography`` alone is the floor under the signature check.

The pieces run in interleaved rounds (:func:`bench.timing.measure_rounds`), each run a
batch of :data:`BATCH` messages; the figures are the median round's CPU time per
message. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from slixmpp import JID

from bench.gateway import _sealed
from bench.report import PIECES_SUM, RESULTS_DIR, write_document
from bench.timing import measure_rounds
from cmaas.component.outbound import sealed_message_xml
from cmaas.delivery.envelope_worker import EnvelopeClaim, check_envelope
from cmaas.envelope import DeviceKeyring, EnvelopeOutline, fingerprint, generate_private_key
from cmaas.envelope.keys import parse_public_key, public_point
from cmaas.keystore import MasterKeyring, NewApp, NewMessage, SqliteKeystore, issue_credentials
from cmaas.keystore._sql import WRITER_PRAGMAS
from cmaas.lifecycle import MessageStatus, Priority, StatusChange
from cmaas.wire.json import parse_json_body
from cmaas.wire.messages import Submission

__all__ = ["BATCH", "PARTS", "PIECES", "main"]

BATCH = 50
"""Messages per run: about what one of c's SQLite transactions carries."""
APP = "bench@cmaas.localhost"
RECIPIENT = "alice@localhost"
PIECES = (
    "admission check (strict parse + signature)",
    "request parse (JSON body, submission, digest)",
    "stanza",
    "receipt parse (XML, JIDs)",
    "lifecycle on SQLite (stored, dispatched, delivered)",
)
"""The pieces whose sum is compared with c's gateway."""
VERIFY = "ecdsa p-256 verify alone (cryptography)"
PARSE = "strict envelope parse alone (the outline admission reads)"
SQL = "lifecycle's SQL alone (sqlite3, one thread)"
PARTS = (VERIFY, PARSE, SQL)
"""Parts of two pieces, measured alone: the signature check in `cryptography` (the floor
under admission), our strict parse, and the lifecycle's SQL without the store around it."""


def _receipts(submissions: list[Submission]) -> bytes:
    return b"".join(
        f"<message from='{RECIPIENT}/phone' to='{APP}' id='r{index}'>"
        f"<received xmlns='urn:xmpp:receipts' id='{submission.message_id}'/></message>".encode()
        for index, submission in enumerate(submissions)
    )


class _Lifecycle:
    """A SQLite store on a temporary file, and one batch's way through it as c's
    gateway takes it: stored in one call, read back, dispatched, and delivered in one
    call, as the receipts of one read of the stream are."""

    def __init__(self, directory: Path, envelopes: list[bytes]) -> None:
        self._loop = asyncio.new_event_loop()
        self._envelopes = envelopes
        self._batches = 0
        self._store = self._loop.run_until_complete(self._open(directory))

    async def _open(self, directory: Path) -> SqliteKeystore:
        store = await SqliteKeystore.open(
            directory / "pieces.sqlite3", MasterKeyring(os.urandom(32))
        )
        await store.create_app(NewApp("bench", "Bench", "default"), issue_credentials("bench"))
        return store

    def run(self) -> None:
        self._loop.run_until_complete(self._batch())

    async def _batch(self) -> None:
        self._batches += 1
        expires = int(time.time() * 1000) + 3_600_000
        messages = [
            NewMessage(
                "bench",
                f"m{self._batches}-{index}",
                RECIPIENT,
                RECIPIENT,
                Priority.NORMAL,
                os.urandom(32),
                envelope,
                expires,
                sealed_to=(7,),
            )
            for index, envelope in enumerate(self._envelopes)
        ]
        store = self._store.messages
        records = await store.submit(messages, daily_quota=None)
        seqs = [record.seq for record in records if not isinstance(record, Exception)]
        await store.sealed(seqs)
        now = int(time.time() * 1000)
        await store.mark_dispatched(seqs, now)
        await store.record(
            [
                StatusChange("bench", m.message_id, MessageStatus.DELIVERED, now, device="7")
                for m in messages
            ]
        )

    def close(self) -> None:
        self._loop.run_until_complete(self._store.close())
        self._loop.close()


class _LifecycleSql:
    """The statements of one batch's lifecycle on the same schema and settings, run by
    ``sqlite3`` directly on this thread: what SQLite itself spends, without the store's
    Python around it or its thread."""

    def __init__(self, path: Path, envelopes: list[bytes]) -> None:
        self._envelopes = envelopes
        self._batches = 0
        self._db = sqlite3.connect(path, isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            self._db.execute(pragma)

    def run(self) -> None:
        db = self._db
        self._batches += 1
        now = int(time.time() * 1000)
        ids = [f"s{self._batches}-{index}" for index in range(len(self._envelopes))]
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(
            "INSERT INTO messages (app_id, message_id, recipient, recipient_jid, priority,"  # noqa: S608
            " status, request_sha256, envelope, expires_ms, created_ms, updated_ms,"
            " sealed_to) VALUES "
            + ", ".join(["('bench', ?, ?, ?, 1, 'accepted', ?, ?, ?, ?, ?, '7')"] * len(ids))
            + " RETURNING seq",
            [
                value
                for message_id, envelope in zip(ids, self._envelopes, strict=True)
                for value in (
                    message_id,
                    RECIPIENT,
                    RECIPIENT,
                    os.urandom(32),
                    envelope,
                    now + 3_600_000,
                    now,
                    now,
                )
            ],
        ).fetchall()
        seqs = [row[0] for row in rows]
        self._events(seqs, ids, "accepted", "", now)
        db.execute(
            "INSERT INTO daily_usage (app_id, day, count) VALUES ('bench', 0, ?)"
            " ON CONFLICT (app_id, day) DO UPDATE SET count = excluded.count",
            (self._batches * len(ids),),
        )
        db.execute("COMMIT")
        marks = ", ".join("?" * len(seqs))
        db.execute(
            f"SELECT seq, envelope, omemo FROM messages WHERE seq IN ({marks})"  # noqa: S608
            " AND status IN ('accepted', 'dispatched')",
            seqs,
        ).fetchall()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE messages SET status = 'dispatched', dispatched_ms = ?, updated_ms = ?"  # noqa: S608
            f" WHERE seq IN ({marks}) AND status = 'accepted' RETURNING seq",
            (now, now, *seqs),
        ).fetchall()
        self._events(seqs, ids, "dispatched", "", now)
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "UPDATE messages SET status = 'delivered', updated_ms = ?, envelope = NULL,"
            " omemo = NULL WHERE seq = ?",
            [(now, seq) for seq in seqs],
        )
        self._events(seqs, ids, "delivered", "7", now)
        db.execute("COMMIT")

    def _events(self, seqs: list[int], ids: list[str], status: str, device: str, now: int) -> None:
        self._db.execute(
            "INSERT INTO status_events (seq, app_id, message_id, status, device, detail, at_ms)"  # noqa: S608
            " VALUES "
            + ", ".join(["(?, 'bench', ?, ?, ?, '', ?)"] * len(seqs))
            + " RETURNING event_id",
            [
                v
                for seq, message_id in zip(seqs, ids, strict=True)
                for v in (seq, message_id, status, device, now)
            ],
        ).fetchall()

    def close(self) -> None:
        self._db.close()


def pieces(directory: Path) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    """Each piece as one run over :data:`BATCH` of c's messages, and what closes them."""
    now = int(time.time() * 1000)
    bundle = DeviceKeyring.generate(RECIPIENT, now_ms=now, one_time_prekeys=0).bundle()
    app_key = generate_private_key()
    submissions = [
        _sealed(bundle, APP, app_key, n, Priority.NORMAL, "c", now) for n in range(BATCH)
    ]
    texts = [(s.envelope or "").encode() for s in submissions]
    point = public_point(app_key)
    keys = {fingerprint(point): parse_public_key(point)}
    claims = [
        EnvelopeClaim(text, s.message_id, s.priority, None)
        for s, text in zip(submissions, texts, strict=True)
    ]
    outlines = [EnvelopeOutline.from_bytes(text) for text in texts]
    signed = [(outline.signature, outline.signed) for outline in outlines]
    public = app_key.public_key()
    body = json.dumps({"messages": [s.to_json() for s in submissions]}).encode()
    receipts = _receipts(submissions)
    lifecycle = _Lifecycle(directory, texts)
    # The statements alone on a database of their own, with the same schema.
    sql = _LifecycleSql(directory / "pieces.sqlite3", texts)
    algorithm = ec.ECDSA(hashes.SHA256())

    def verify() -> None:
        for signature, data in signed:
            public.verify(signature, data, algorithm)

    def parse() -> None:
        for text in texts:
            EnvelopeOutline.from_bytes(text)

    def check() -> None:
        for claim in claims:
            check_envelope(claim, app_jid=APP, signing_keys=keys, now_ms=now)

    def request() -> None:
        for value in parse_json_body(body)["messages"]:  # type: ignore[index]
            Submission.from_json(value).request_sha256()

    def stanza() -> None:
        for s in submissions:
            sealed_message_xml(APP, RECIPIENT, s.message_id, s.envelope, None)

    def receipt() -> None:
        parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
        parser.feed(b"<stream>")
        parser.feed(receipts)
        events = cast("Iterator[tuple[str, object]]", parser.read_events())
        for _, element in events:
            if isinstance(element, ET.Element) and element.tag == "message":
                JID(element.get("to", ""))
                JID(element.get("from", ""))

    operations: dict[str, Callable[[], object]] = {
        PIECES[0]: check,
        PIECES[1]: request,
        PIECES[2]: stanza,
        PIECES[3]: receipt,
        PIECES[4]: lifecycle.run,
        VERIFY: verify,
        PARSE: parse,
        SQL: sql.run,
    }

    def close() -> None:
        sql.close()
        lifecycle.close()

    return operations, close


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pieces", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help=f"runs of {BATCH} messages each")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds in all")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "pieces.json")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 10_000 or args.deadline <= 0:
        parser.error("--count must be 1 to 10,000 and --deadline positive")
    if not 1 <= args.rounds <= args.count:
        parser.error("--rounds must be 1 to --count")
    with tempfile.TemporaryDirectory(prefix="cmaas-bench-pieces-") as directory:
        operations, close = pieces(Path(directory))
        try:
            print(f"item i: the gateway's pieces alone, {BATCH} messages a run (CPU time):")
            results, _ = measure_rounds(operations, args.count, args.rounds, args.deadline, 2)
        finally:
            close()
    per_message = {name: result["cpu_us_per_run"] / BATCH for name, result in results.items()}
    total = sum(per_message[name] for name in PIECES)
    for name, value in per_message.items():
        print(f"  {name:<55} {value:7.1f} us/msg")
    print(f"  {PIECES_SUM:<55} {total:7.1f} us/msg")
    write_document(
        args.output,
        {
            "batch": BATCH,
            "us_per_message": per_message,
            "sum_us_per_message": total,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
