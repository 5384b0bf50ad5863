"""The outbox on both backends: idempotent submission, quotas, statuses that only move
forward, per-device events, resend candidates, expiry, nonces and cursors; gateway
instances' heartbeats, fencing and takeovers (one winner when two survivors race)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from cmaas.delivery import events
from cmaas.delivery.backlog import SharedDepth
from cmaas.delivery.notices import NoticeConsumer
from cmaas.delivery.tracker import Feedback, FeedbackKind, StatusTracker
from cmaas.keystore import (
    NOTICES_CONSUMER,
    AppChanges,
    CursorState,
    MasterKeyring,
    MessageConflict,
    MessageNotFound,
    MessageRecord,
    NewApp,
    NewMessage,
    NonceUsed,
    OutboxEntry,
    QuotaExhausted,
    RequestNonce,
    SealedPayload,
    SqliteKeystore,
    StatusEvent,
    issue_credentials,
)
from cmaas.keystore._db import Db, Params, Row, Work
from cmaas.keystore._sql import GroupCommit, SqliteThread
from cmaas.keystore.messages import _add_events, _apply_changes, _ChangeBatch
from cmaas.lifecycle import (
    MessageStatus,
    Priority,
    StatusChange,
)

from .conftest import AnyKeystore, Database, FakeClock

T = TypeVar("T")

APP = "bank"
ALICE = "alice@cmaas.test"


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


@pytest.fixture
async def app(keystore: AnyKeystore) -> str:
    await keystore.create_app(NewApp(APP, "Bank", "default"), issue_credentials("cid"))
    return APP


def message(
    message_id: str,
    *,
    priority: Priority = Priority.HIGH,
    expires_ms: int = 1_800_000_600_000,
    failure: str | None = None,
    body: bytes = b"{}",
) -> NewMessage:
    return NewMessage(
        APP,
        message_id,
        ALICE,
        ALICE,
        priority,
        b"sha:" + message_id.encode() + body,
        body,
        expires_ms,
        failure,
        sealed_to=() if failure else (1, 2),
    )


def change(message_id: str, status: MessageStatus, device: str = "", **kw: object) -> StatusChange:
    return StatusChange(APP, message_id, status, 1_800_000_100_000, device, **kw)  # type: ignore[arg-type]


async def submit(
    keystore: AnyKeystore, *messages: NewMessage, quota: int | None = None
) -> list[MessageRecord | MessageConflict | QuotaExhausted]:
    return await keystore.messages.submit(messages, daily_quota=quota)


async def test_submission_is_idempotent_and_a_changed_request_conflicts(
    keystore: AnyKeystore, app: str
) -> None:
    (first,) = await submit(keystore, message("m1"))
    assert isinstance(first, MessageRecord)
    assert (first.status, first.duplicate) == (MessageStatus.ACCEPTED, False)
    (again,) = await submit(keystore, message("m1"))
    assert isinstance(again, MessageRecord)
    assert (again.seq, again.duplicate) == (first.seq, True)
    (other,) = await submit(keystore, message("m1", body=b'{"other":1}'))
    assert isinstance(other, MessageConflict)
    _, history = await keystore.messages.get(APP, "m1")
    assert [e.status for e in history] == [MessageStatus.ACCEPTED]


async def test_daily_quota_counts_across_batches_and_plans(
    keystore: AnyKeystore, app: str, clock: FakeClock
) -> None:
    await submit(keystore, message("a"), message("b"))  # a plan without a quota still counts
    outcomes = await submit(keystore, message("c"), message("d"), quota=3)
    assert isinstance(outcomes[0], MessageRecord)
    assert isinstance(outcomes[1], QuotaExhausted)
    assert (await keystore.app_counters(APP)).submitted_today == 3
    clock.now += 86_400  # a new UTC day
    (fresh,) = await submit(keystore, message("e"), quota=3)
    assert isinstance(fresh, MessageRecord)


async def test_the_daily_quota_holds_across_processes(
    keystore: AnyKeystore, app: str, database: Database, master_key: bytes, clock: FakeClock
) -> None:
    """Separate keystores stand for separate processes on one database: their quota
    checks and counts never interleave, so none admits past the quota."""
    others = [await database.open(MasterKeyring(master_key), clock) for _ in range(2)]
    try:
        stores = [keystore, *others]
        outcomes = await asyncio.gather(
            *(submit(stores[n % 3], message(f"m{n}"), quota=10) for n in range(30))
        )
    finally:
        for other in others:
            await other.close()
    accepted = [o for (o,) in outcomes if isinstance(o, MessageRecord)]
    assert len(accepted) == 10
    assert sum(isinstance(o, QuotaExhausted) for (o,) in outcomes) == 20
    assert (await keystore.app_counters(APP)).submitted_today == 10
    events = await keystore.messages.events_after(APP, 0, 100)
    assert sorted(e.message_id for e in events) == sorted(r.message_id for r in accepted)


async def test_a_known_failure_is_stored_then_failed(keystore: AnyKeystore, app: str) -> None:
    (record,) = await submit(keystore, message("m", failure="unknown recipient: x"))
    assert isinstance(record, MessageRecord)
    assert (record.status, record.detail) == (MessageStatus.FAILED, "unknown recipient: x")
    epoch = await keystore.messages.register_instance("gw")
    taken = await keystore.messages.take_over(epoch, 15_000, dead_after_ms=None)
    assert (taken.accepted, taken.resend) == ([], [])


async def test_statuses_only_move_forward_per_message_and_per_device(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    (record,) = await submit(keystore, message("m"))
    assert isinstance(record, MessageRecord)
    await store.mark_dispatched([record.seq], 1_800_000_050_000)
    recorded = await store.record(
        [
            change("m", MessageStatus.DELIVERED, "1", reporter=ALICE),
            change("m", MessageStatus.DELIVERED, "1", reporter=ALICE),  # a repeated receipt
            change("m", MessageStatus.READ, "1", reporter=ALICE),
            change("m", MessageStatus.DELIVERED, "2", reporter=ALICE),  # a second device
            change("m", MessageStatus.DELIVERED, "3", reporter="mallory@cmaas.test"),
            change("m", MessageStatus.FAILED, detail="bounced"),  # too late to fail
            change("m", MessageStatus.DISPATCHED),  # backwards
            change("ghost", MessageStatus.DELIVERED, "1", reporter=ALICE),
        ]
    )
    assert [(e.status, e.device) for e in recorded] == [
        (MessageStatus.DELIVERED, "1"),
        (MessageStatus.READ, "1"),
        (MessageStatus.DELIVERED, "2"),
    ]
    stored, history = await store.get(APP, "m")
    assert stored.status is MessageStatus.READ
    assert [e.status.value for e in history] == [
        "accepted",
        "dispatched",
        "delivered",
        "read",
        "delivered",
    ]


async def test_envelopes_are_dropped_once_no_resend_needs_them(
    keystore: AnyKeystore, app: str, database: Database
) -> None:
    store = keystore.messages
    outcomes = await submit(keystore, message("a"), message("b"), message("c"))
    seqs = [r.seq for r in outcomes if isinstance(r, MessageRecord)]
    await store.mark_dispatched(seqs, 1_800_000_050_000)
    await store.record(
        [
            change("a", MessageStatus.DELIVERED, "1", reporter=ALICE),
            change("b", MessageStatus.FAILED, detail="bounced: service-unavailable"),
        ]
    )
    assert set(await store.sealed(seqs)) == {seqs[2]}
    kept = database.execute("SELECT message_id FROM messages WHERE envelope IS NOT NULL")
    assert kept == [("c",)]


async def test_pending_entries_come_in_the_order_asked_without_finished_or_foreign_ones(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    outcomes = await submit(keystore, message("a"), message("b"), message("c"), message("d"))
    a, b, c, d = (r.seq for r in outcomes if isinstance(r, MessageRecord))
    await store.mark_dispatched([a, b, c], 1_800_000_050_000)
    await store.record([change("b", MessageStatus.DELIVERED, "1", reporter=ALICE)])
    entries = await store.pending_entries([d, c, b, a, 10**9])
    assert entries == [
        OutboxEntry(seq, APP, message_id, ALICE, Priority.HIGH, 1_800_000_600_000)
        for seq, message_id in ((d, "d"), (c, "c"), (a, "a"))
    ]
    # Owned by nobody (no instances here): an owner's view holds none of them.
    assert await store.pending_entries([a, c, d], owner=7) == []


async def test_an_omemo_element_is_kept_beside_the_envelope_until_the_message_finishes(
    keystore: AnyKeystore, app: str, database: Database
) -> None:
    store = keystore.messages
    both = dataclasses.replace(message("both"), omemo=b"<encrypted-both/>")
    alone = dataclasses.replace(message("alone"), envelope=None, sealed_to=(), omemo=b"<e/>")
    outcomes = await submit(keystore, both, alone, message("plain"))
    seqs = [r.seq for r in outcomes if isinstance(r, MessageRecord)]
    entries = [
        OutboxEntry(seq, APP, message_id, ALICE, Priority.HIGH, 1_800_000_600_000)
        for seq, message_id in zip(seqs, ("both", "alone", "plain"), strict=True)
    ]
    assert await store.sealed(seqs) == {
        seqs[0]: SealedPayload(entries[0], b"{}", b"<encrypted-both/>"),
        seqs[1]: SealedPayload(entries[1], None, b"<e/>"),
        seqs[2]: SealedPayload(entries[2], b"{}", None),
    }
    await store.mark_dispatched(seqs, 1_800_000_050_000)
    # An OMEMO client's resource reports on what carries an OMEMO element, not on the rest.
    recorded = await store.record(
        [
            change(m, MessageStatus.DELIVERED, "profanity.ab12", reporter=ALICE)
            for m in ("both", "alone", "plain")
        ]
    )
    assert [e.message_id for e in recorded] == ["both", "alone"]
    assert await store.sealed(seqs) == {seqs[2]: SealedPayload(entries[2], b"{}", None)}
    kept = database.execute(
        "SELECT message_id FROM messages WHERE envelope IS NOT NULL OR omemo IS NOT NULL"
    )
    assert kept == [("plain",)]


async def test_a_restart_takes_over_and_resends_only_the_last_window(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    before = await store.register_instance("gw")
    outcomes = await store.submit(
        [message(f"m{n}") for n in range(4)], daily_quota=None, owner=before
    )
    seqs = [r.seq for r in outcomes if isinstance(r, MessageRecord)]
    await store.mark_dispatched([seqs[0]], 1_800_000_000_000)  # long before the last
    await store.mark_dispatched([seqs[1]], 1_800_000_050_000)
    await store.mark_dispatched([seqs[2]], 1_800_000_060_000)
    after = await store.register_instance("gw")
    taken = await store.take_over(after, 15_000, dead_after_ms=None)
    assert taken.fenced == [before]
    assert [e.message_id for e in taken.accepted] == ["m3"]
    assert [e.message_id for e in taken.resend] == ["m1", "m2"]
    assert not await store.heartbeat(before)


async def test_an_instance_is_taken_for_dead_after_the_longer_of_both_settings(
    keystore: AnyKeystore, clock: FakeClock
) -> None:
    store = keystore.messages
    await store.register_instance("gw-patient", dead_after_ms=60_000)
    hasty = await store.register_instance("gw-hasty", dead_after_ms=1)
    taker = await store.register_instance("gw-taker", dead_after_ms=1)
    # Both silent for 50 ms, on the database's clock (PostgreSQL) or this process's.
    clock.now += 0.05
    await asyncio.sleep(0.05)
    taken = await store.take_over(taker, 15_000, dead_after_ms=1)
    # The taker's own setting would fence both; the first declared a minute.
    assert taken.fenced == [hasty]


async def test_expiry_ends_pending_messages_only(keystore: AnyKeystore, app: str) -> None:
    store = keystore.messages
    outcomes = await submit(
        keystore,
        message("queued", expires_ms=1_000),
        message("sent", expires_ms=2_000),
        message("done", expires_ms=3_000),
        message("later", expires_ms=10_000),
    )
    seqs = [r.seq for r in outcomes if isinstance(r, MessageRecord)]
    await store.mark_dispatched(seqs[1:3], 500)
    await store.record([change("done", MessageStatus.DELIVERED, "1", reporter=ALICE)])
    expired = await store.expire_due(5_000)
    assert sorted(e.message_id for e in expired) == ["queued", "sent"]
    assert await store.expire_due(5_000) == []
    statuses = {m: (await store.get(APP, m))[0].status.value for m in ("queued", "done", "later")}
    assert statuses == {"queued": "expired", "done": "delivered", "later": "accepted"}


async def test_finished_messages_are_purged_after_retention(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    await submit(keystore, message("old", failure="unknown recipient"), message("open"))
    assert await store.purge_finished(before_ms=10**15) == 1
    assert [e.message_id for e in await store.events_after(APP, 0, 10)] == ["open"]


async def test_fenced_instances_are_forgotten_once_they_own_nothing(
    keystore: AnyKeystore, app: str, clock: FakeClock
) -> None:
    store = keystore.messages
    live = await store.register_instance("gw-live")
    fenced: list[int] = []
    for name in ("idle", "owning", "last"):
        epoch = await store.register_instance(f"gw-{name}")
        # Each fenced later than the one before (SQLite's clock is the test's; the
        # database's has millisecond steps).
        clock.now += 1
        await asyncio.sleep(0.005)
        taken = await store.take_over(live, 15_000, dead_after_ms=None)
        assert taken.fenced == [epoch]
        fenced.append(epoch)
    owning = fenced[1]
    # A fenced instance that still admits (before it learns it was fenced) owns that.
    await store.submit([message("late")], daily_quota=None, owner=owning)
    assert await store.purge_instances(before_ms=2**62) == 1  # the idle one only
    assert await store.purge_instances(before_ms=2**62) == 0
    taken = await store.take_over(live, 15_000, dead_after_ms=None)
    assert [e.message_id for e in taken.accepted] == ["late"]
    assert await store.purge_instances(before_ms=2**62) == 1  # owning, now it owns nothing
    assert await store.purge_instances(before_ms=2**62) == 0  # the last fenced stays
    assert await store.heartbeat(live)


async def test_nonces_are_refused_until_they_expire(keystore: AnyKeystore) -> None:
    store = keystore.messages
    assert await store.claim_nonce(RequestNonce("cid", "n-1234567", expires_at=100, now=50))
    assert not await store.claim_nonce(RequestNonce("cid", "n-1234567", expires_at=100, now=60))
    assert await store.claim_nonce(RequestNonce("other", "n-1234567", expires_at=100, now=60))
    assert await store.claim_nonce(RequestNonce("cid", "n-1234567", expires_at=200, now=100))
    assert await store.purge_nonces(now=150) == 1


async def test_listeners_hear_each_commit_and_cursors_persist(
    keystore: AnyKeystore, app: str
) -> None:
    heard: list[StatusEvent] = []
    keystore.messages.listen(heard.extend)
    await submit(keystore, message("m"))
    assert [e.status for e in heard] == [MessageStatus.ACCEPTED]
    assert await keystore.messages.last_event_id() == heard[0].event_id
    assert await keystore.messages.cursors("webhook") == [CursorState(APP, 0, 0, "")]
    await keystore.messages.save_cursor("webhook", CursorState(APP, heard[0].event_id, 2, "503"))
    assert await keystore.messages.cursors("webhook") == [
        CursorState(APP, heard[0].event_id, 2, "503")
    ]


async def test_concurrent_writers_share_transactions(keystore: AnyKeystore, app: str) -> None:
    outcomes = await asyncio.gather(*(submit(keystore, message(f"m{n}")) for n in range(200)))
    assert all(isinstance(o[0], MessageRecord) for o in outcomes)
    assert len({o[0].seq for o in outcomes if isinstance(o[0], MessageRecord)}) == 200
    assert (await keystore.messages.depth())[Priority.HIGH] == 200


class _NotedTransactions:
    """The group commit's database thread, noting each transaction it is given: the
    operations' bodies add their names to the last one."""

    def __init__(self, thread: SqliteThread) -> None:
        self.thread = thread
        self.started: list[list[str]] = []

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self.started.append([])
        return await self.thread.write(work)


async def test_group_commit_batches_and_rolls_back_only_the_failing_operation(
    tmp_path: Path,
) -> None:
    thread = SqliteThread(tmp_path / "group.sqlite3")
    noted = _NotedTransactions(thread)
    await thread.write(lambda db: db.execute("CREATE TABLE t (n INTEGER)"))
    commits = GroupCommit(noted)  # type: ignore[arg-type]

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def work(db: sqlite3.Connection) -> int:
            db.execute("INSERT INTO t VALUES (?)", (n,))
            if n == 13:
                raise ValueError("unlucky")
            return n

        return work

    outcomes = await asyncio.gather(
        *(commits.run(insert(n)) for n in range(100)), return_exceptions=True
    )
    await commits.close()
    assert isinstance(outcomes[13], ValueError)
    assert [o for o in outcomes if not isinstance(o, BaseException)] == [
        n for n in range(100) if n != 13
    ]
    stored = await thread.write(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0])
    assert stored == 99
    assert len(noted.started) <= 2  # a hundred operations, one or two shared commits
    await thread.close()


async def test_both_sqlite_writers_journal_in_memory_durably_and_overwrite_deletions(
    tmp_path: Path,
) -> None:
    keystore = await SqliteKeystore.open(tmp_path / "writers.sqlite3", MasterKeyring(b"k" * 32))
    names = ("temp_store", "synchronous", "secure_delete", "foreign_keys")

    def read(db: sqlite3.Connection) -> list[int]:
        return [db.execute(f"PRAGMA {name}").fetchone()[0] for name in names]

    try:
        on_thread = await keystore._thread.write(read)
        on_shared = []
        for name in names:
            cursor = await keystore._db.execute(f"PRAGMA {name}")
            row = await cursor.fetchone()
            assert row is not None
            on_shared.append(row[0])
    finally:
        await keystore.close()
    # temp_store 2: statement journals in memory; synchronous 2: FULL.
    assert on_thread == on_shared == [2, 2, 1, 1]


async def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_it_free(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cancelled.sqlite3"
    keystore = await SqliteKeystore.open(path, MasterKeyring(b"k" * 32))
    store = keystore.messages
    other = sqlite3.connect(path, isolation_level=None)
    try:
        epoch = await store.register_instance("gw-a")
        assert await store.take_lead(epoch)
        # The worker thread's commit holds the lock while the heartbeat's BEGIN waits
        # for it, and shutdown cancels the heartbeat.
        other.execute("BEGIN IMMEDIATE")
        beating = asyncio.ensure_future(store.heartbeat(epoch))
        await asyncio.sleep(0)  # its BEGIN is on aiosqlite's thread
        beating.cancel()
        other.execute("COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await beating
        assert await store.heartbeat(epoch)
        await store.resign(epoch)  # on the worker thread, as the gateway stops
        assert not await store.leads(epoch)
    finally:
        other.close()
        await keystore.close()


async def test_a_write_that_cannot_take_the_lock_says_so(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    keystore = await SqliteKeystore.open(path, MasterKeyring(b"k" * 32))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        epoch = await keystore.messages.register_instance("gw-a")
        await keystore._db.execute("PRAGMA busy_timeout = 0")
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await keystore.messages.heartbeat(epoch)
        other.execute("COMMIT")
        assert await keystore.messages.heartbeat(epoch)
    finally:
        other.close()
        await keystore.close()


async def test_urgent_operations_commit_first_and_alone(tmp_path: Path) -> None:
    thread = SqliteThread(tmp_path / "urgent.sqlite3")
    noted = _NotedTransactions(thread)
    transactions = noted.started
    order: list[str] = []
    commits = GroupCommit(noted)  # type: ignore[arg-type]

    def note(name: str) -> Callable[[sqlite3.Connection], str]:
        def work(_db: sqlite3.Connection) -> str:
            order.append(name)
            transactions[-1].append(name)
            return name

        return work

    # The first operation starts a transaction; the rest queue up behind it.
    running = asyncio.ensure_future(commits.run(note("in progress")))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(commits.run(note(f"receipt {n}"))) for n in range(5)]
    otp = asyncio.ensure_future(commits.run(note("otp"), urgent=True))
    await asyncio.gather(running, *queued, otp)
    await commits.close()
    assert order[:2] == ["in progress", "otp"]
    assert ["otp"] in transactions, "an urgent operation commits without the queue"
    assert order[2:] == [f"receipt {n}" for n in range(5)]
    await thread.close()


async def test_an_urgent_operation_cuts_a_transaction_in_progress_short(
    tmp_path: Path,
) -> None:
    thread = SqliteThread(tmp_path / "cut.sqlite3")
    noted = _NotedTransactions(thread)
    transactions = noted.started
    first_running = threading.Event()
    otp_queued = threading.Event()
    await thread.write(lambda db: db.execute("CREATE TABLE t (name TEXT)"))
    commits = GroupCommit(noted)  # type: ignore[arg-type]

    def note(name: str) -> Callable[[sqlite3.Connection], str]:
        def work(db: sqlite3.Connection) -> str:
            db.execute("INSERT INTO t VALUES (?)", (name,))
            transactions[-1].append(name)
            if name == "receipt 0":
                # The OTP arrives while the receipts' transaction runs.
                first_running.set()
                assert otp_queued.wait(10)
            return name

        return work

    receipts = [asyncio.ensure_future(commits.run(note(f"receipt {n}"))) for n in range(10)]
    assert await asyncio.to_thread(first_running.wait, 10)
    otp = asyncio.ensure_future(commits.run(note("otp"), urgent=True))
    await asyncio.sleep(0)  # the OTP is queued as urgent
    otp_queued.set()
    assert await asyncio.gather(*receipts, otp) == [*(f"receipt {n}" for n in range(10)), "otp"]
    await commits.close()
    assert transactions == [
        ["receipt 0"],
        ["otp"],
        [f"receipt {n}" for n in range(1, 10)],
    ], "the receipts' transaction commits what it did and the rest waits for the OTP"
    stored = await thread.write(lambda db: [row[0] for row in db.execute("SELECT name FROM t")])
    assert stored == ["receipt 0", "otp", *(f"receipt {n}" for n in range(1, 10))]
    await thread.close()


async def test_notices_skip_an_app_without_jids_and_start_when_one_is_bound(
    keystore: AnyKeystore, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "APP_FRESHNESS_S", 0.0)
    sent: list[tuple[str, str]] = []

    class Sender:
        def send_status(self, app_id: str, to: str, event: StatusEvent) -> None:
            sent.append((to, event.message_id))

    notices = NoticeConsumer(keystore, Sender())
    keystore.messages.listen(lambda heard: notices.kick({e.app_id for e in heard}))
    notices.link_up()
    await asyncio.gather(*notices._resuming)  # the start that the link's coming up began

    async def settled() -> None:
        while notices._running:  # the drain tasks this test started
            await asyncio.sleep(0.01)

    await submit(keystore, message("before-1"), message("before-2"))
    await settled()
    # Nothing read or written for an app nobody hears: its cursor stays where it was.
    assert sent == []
    assert await keystore.messages.cursors(NOTICES_CONSUMER) == [CursorState(APP, 0, 0, "")]

    await keystore.update_app(APP, AppChanges(jids=(f"bot@{ALICE.split('@')[1]}",)))
    await submit(keystore, message("after"))
    await settled()
    assert sent == [("bot@cmaas.test", "after")], "history from before the JID is not replayed"
    await notices.stop()


async def test_a_kick_while_a_drain_is_finishing_is_not_lost(
    keystore: AnyKeystore, app: str
) -> None:
    await keystore.update_app(APP, AppChanges(jids=("bot@cmaas.test",)))
    sent: list[str] = []

    class Sender:
        def send_status(self, app_id: str, to: str, event: StatusEvent) -> None:
            sent.append(event.message_id)

    notices = NoticeConsumer(keystore, Sender())
    keystore.messages.listen(lambda heard: notices.kick({e.app_id for e in heard}))
    notices.link_up()
    await asyncio.gather(*notices._resuming)  # the start that the link's coming up began
    await submit(keystore, message("first"))
    drain = notices._running[APP]  # the drain tasks this test started
    await drain
    # The window in which the drain has returned and its done-callback has not yet run.
    notices._running[APP] = drain
    await submit(keystore, message("second"))
    async with asyncio.timeout(5):
        while sent != ["first", "second"]:
            await asyncio.sleep(0.01)
    await notices.stop()


# What comes back from the network: only devices the message is sealed to count, and only
# the IM server's own bounce fails a message.


class Resends:
    def __init__(self, answer: bool = True) -> None:
        self.asked: list[tuple[str, str]] = []
        self._answer = answer

    async def __call__(self, app_id: str, message_id: str) -> bool:
        self.asked.append((app_id, message_id))
        return self._answer


def feedback(kind: FeedbackKind, sender: str, device: str = "", condition: str = "") -> Feedback:
    return Feedback(kind, f"{APP}@gw.cmaas.test", sender, "m", condition, device)


async def test_only_a_device_the_message_is_sealed_to_makes_it_delivered(
    keystore: AnyKeystore, app: str
) -> None:
    await submit(keystore, message("m"))
    tracker = StatusTracker(keystore.messages, Resends())
    # A client that acknowledges what it cannot open (no CMaaS device: its resource).
    await tracker.report(feedback(FeedbackKind.DELIVERED, f"{ALICE}/gajim", "gajim"))
    await tracker.report(feedback(FeedbackKind.DELIVERED, f"{ALICE}/cli", "3"))  # not sealed to
    await tracker.report(feedback(FeedbackKind.DELIVERED, f"{ALICE}/phone", "2"))
    record, events = await keystore.messages.get(APP, "m")
    assert record.status is MessageStatus.DELIVERED
    assert [(e.status, e.device) for e in events] == [
        (MessageStatus.ACCEPTED, ""),
        (MessageStatus.DELIVERED, "2"),
    ]


async def test_a_high_priority_messages_receipt_is_recorded_as_urgent(
    keystore: AnyKeystore, app: str
) -> None:
    await submit(keystore, message("m"))
    await submit(keystore, message("bulk", priority=Priority.BULK))
    recorded: list[tuple[str, bool]] = []
    store = keystore.messages

    class Noting:
        async def record(
            self, changes: list[StatusChange], *, urgent: bool = False
        ) -> list[StatusEvent]:
            recorded.extend((change.message_id, urgent) for change in changes)
            return await store.record(changes, urgent=urgent)

    tracker = StatusTracker(
        Noting(),  # type: ignore[arg-type]
        Resends(),
        urgent=lambda app_id, message_id: (app_id, message_id) == (APP, "m"),
    )
    await tracker.report(feedback(FeedbackKind.DELIVERED, f"{ALICE}/phone", "1"))
    await tracker.report(
        Feedback(FeedbackKind.DELIVERED, f"{APP}@gw.cmaas.test", f"{ALICE}/phone", "bulk", "", "1")
    )
    assert recorded == [("m", True), ("bulk", False)]
    for message_id in ("m", "bulk"):
        record, _ = await store.get(APP, message_id)
        assert record.status is MessageStatus.DELIVERED


async def test_a_copy_returned_by_one_client_does_not_fail_the_message(
    keystore: AnyKeystore, app: str
) -> None:
    await submit(keystore, message("m"))
    resends = Resends()
    tracker = StatusTracker(keystore.messages, resends)
    await tracker.report(
        feedback(FeedbackKind.BOUNCED, f"{ALICE}/buggy", condition="undefined-condition")
    )
    await tracker.report(
        feedback(FeedbackKind.BOUNCED, f"{ALICE}/hibernated", condition="recipient-unavailable")
    )
    # Held by a session that timed out, reported from the bare JID: still only a copy.
    await tracker.report(feedback(FeedbackKind.BOUNCED, ALICE, condition="recipient-unavailable"))
    assert resends.asked == [(APP, "m"), (APP, "m")], "unavailable copies are written again"
    await tracker.report(feedback(FeedbackKind.DELIVERED, f"{ALICE}/phone", "1"))
    record, events = await keystore.messages.get(APP, "m")
    assert record.status is MessageStatus.DELIVERED
    assert MessageStatus.FAILED not in {e.status for e in events}


async def test_the_servers_bounce_fails_the_message_and_says_who_returned_it(
    keystore: AnyKeystore, app: str
) -> None:
    await submit(keystore, message("m"))
    resends = Resends()
    tracker = StatusTracker(keystore.messages, resends)
    await tracker.report(feedback(FeedbackKind.BOUNCED, ALICE, condition="service-unavailable"))
    record, _ = await keystore.messages.get(APP, "m")
    assert record.status is MessageStatus.FAILED
    assert record.detail == (
        f"bounced by {ALICE}: service-unavailable"
        " (the recipient's account does not exist or refuses messages)"
    )
    assert resends.asked == []


# Instances sharing the database: heartbeats, fencing and takeover

DEAD_AFTER_MS = 10_000
WINDOW_MS = 15_000


async def submit_as(keystore: AnyKeystore, owner: int, *message_ids: str) -> list[int]:
    outcomes = await keystore.messages.submit(
        [message(m) for m in message_ids], daily_quota=None, owner=owner
    )
    return [outcome.seq for outcome in outcomes if isinstance(outcome, MessageRecord)]


def silence(database: Database, epoch: int, for_ms: int = 60_000) -> None:
    """Date the instance's last heartbeat ``for_ms`` back, on either backend's clock."""
    database.execute(
        "UPDATE gateway_instances SET heartbeat_at = heartbeat_at - ? WHERE epoch = ?",
        (for_ms, epoch),
    )


def owners(database: Database) -> dict[str, int | None]:
    rows = database.execute("SELECT message_id, owner FROM messages ORDER BY message_id")
    return {str(message_id): owner for message_id, owner in rows}


async def test_instances_register_with_growing_epochs_and_heartbeat(
    keystore: AnyKeystore, database: Database
) -> None:
    store = keystore.messages
    first = await store.register_instance("gw-a")
    second = await store.register_instance("gw-b")
    assert second > first
    assert await store.heartbeat(first)
    assert await store.heartbeat(second)
    rows = database.execute("SELECT name, fenced_at FROM gateway_instances ORDER BY epoch")
    assert rows == [("gw-a", None), ("gw-b", None)]


async def test_a_live_instance_is_left_alone(keystore: AnyKeystore, app: str) -> None:
    store = keystore.messages
    alive = await store.register_instance("gw-a")
    survivor = await store.register_instance("gw-b")
    await submit_as(keystore, alive, "m1")
    taken = await store.take_over(survivor, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS)
    assert (taken.fenced, taken.accepted, taken.resend) == ([], [], [])
    assert await store.heartbeat(alive)


async def test_a_silent_instance_is_fenced_and_only_its_pending_messages_move(
    keystore: AnyKeystore, database: Database, app: str
) -> None:
    store = keystore.messages
    dead = await store.register_instance("gw-a")
    survivor = await store.register_instance("gw-b")
    queued, sent, done, _ = await submit_as(keystore, dead, "queued", "sent", "done", "failed")
    (own,) = await submit_as(keystore, survivor, "own")
    await store.mark_dispatched([sent, done], 1_800_000_000_000, owner=dead)
    await store.record(
        [
            StatusChange(APP, "done", MessageStatus.DELIVERED, 1_800_000_001_000, "1", ALICE),
            StatusChange(APP, "failed", MessageStatus.FAILED, 1_800_000_001_000, detail="x"),
        ]
    )
    silence(database, dead)

    taken = await store.take_over(survivor, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS)

    assert taken.fenced == [dead]
    assert [entry.message_id for entry in taken.accepted] == ["queued"]
    assert [entry.message_id for entry in taken.resend] == ["sent"]
    assert owners(database) == {
        "done": dead,
        "failed": dead,
        "own": survivor,
        "queued": survivor,
        "sent": survivor,
    }
    # The fenced instance, still running, finds out and can change nothing it owned.
    assert not await store.heartbeat(dead)
    assert await store.sealed([queued, sent], owner=dead) == {}
    assert await store.mark_dispatched([queued], 1_800_000_002_000, owner=dead) == []
    assert (await store.get(APP, "queued"))[0].status is MessageStatus.ACCEPTED
    assert set(await store.sealed([queued, sent, own], owner=survivor)) == {queued, sent, own}
    # Nothing is left to take the second time.
    again = await store.take_over(survivor, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS)
    assert (again.fenced, again.accepted, again.resend) == ([], [], [])


async def test_messages_of_nobody_and_late_ones_of_a_fenced_instance_are_taken_over(
    keystore: AnyKeystore, database: Database, app: str
) -> None:
    store = keystore.messages
    await store.submit([message("from-before")], daily_quota=None)  # no owner: as migrated
    dead = await store.register_instance("gw-a")
    survivor = await store.register_instance("gw-b")
    silence(database, dead)
    first = await store.take_over(survivor, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS)
    assert [entry.message_id for entry in first.accepted] == ["from-before"]
    # A submission the fenced instance committed after it was fenced.
    await submit_as(keystore, dead, "late")
    second = await store.take_over(survivor, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS)
    assert (second.fenced, [entry.message_id for entry in second.accepted]) == ([], ["late"])
    assert owners(database) == {"from-before": survivor, "late": survivor}


async def test_two_survivors_racing_for_a_dead_instance_one_wins(
    keystore: AnyKeystore, database: Database, other_keystore: AnyKeystore, app: str
) -> None:
    dead = await keystore.messages.register_instance("gw-a")
    left = await keystore.messages.register_instance("gw-b")
    right = await other_keystore.messages.register_instance("gw-c")
    await submit_as(keystore, dead, *(f"m{n}" for n in range(20)))
    silence(database, dead)
    outcomes = await asyncio.gather(
        keystore.messages.take_over(left, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS),
        other_keystore.messages.take_over(right, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS),
    )
    winners = [outcome for outcome in outcomes if outcome.fenced]
    losers = [outcome for outcome in outcomes if not outcome.fenced]
    assert len(winners) == len(losers) == 1
    assert winners[0].fenced == [dead]
    assert len(winners[0].accepted) == 20
    assert (losers[0].accepted, losers[0].resend) == ([], [])
    winner = left if outcomes[0].fenced else right
    assert set(owners(database).values()) == {winner}


async def test_one_instance_leads_until_it_is_fenced_or_resigns(keystore: AnyKeystore) -> None:
    store = keystore.messages
    first = await store.register_instance("gw-a")
    second = await store.register_instance("gw-b")
    assert await store.take_lead(first)
    assert await store.take_lead(first)  # taking it again keeps it
    assert not await store.take_lead(second)
    assert (await store.leads(first), await store.leads(second)) == (True, False)
    # Its heartbeat stopped: once fenced, it leads no more, and another may take it.
    taken = await store.take_over(second, 15_000, dead_after_ms=None)
    assert taken.fenced == [first]
    assert not await store.leads(first)
    assert await store.take_lead(second)
    await store.resign(first)  # a fenced instance's resignation changes nothing
    assert await store.leads(second)
    await store.resign(second)
    assert not await store.leads(second)
    third = await store.register_instance("gw-c")
    assert await store.take_lead(third)


async def test_a_deposed_leaders_cursor_writes_are_refused(keystore: AnyKeystore, app: str) -> None:
    store = keystore.messages
    first = await store.register_instance("gw-a")
    second = await store.register_instance("gw-b")
    assert await store.take_lead(first)
    assert await store.save_cursor("webhook", CursorState(APP, 5, 0, ""), leader=first)
    await store.take_over(second, 15_000, dead_after_ms=None)  # the first taken for dead
    assert await store.take_lead(second)
    assert not await store.save_cursor("webhook", CursorState(APP, 9, 0, ""), leader=first)
    assert await store.cursors("webhook") == [CursorState(APP, 5, 0, "")]
    assert await store.save_cursor("webhook", CursorState(APP, 7, 0, ""), leader=second)
    assert await store.cursors("webhook") == [CursorState(APP, 7, 0, "")]


async def test_back_pressure_reads_every_instances_queue_at_most_once_a_second(
    keystore: AnyKeystore, database: Database, other_keystore: AnyKeystore, app: str
) -> None:
    here = await keystore.messages.register_instance("gw-a")
    there = await other_keystore.messages.register_instance("gw-b")
    monotonic = FakeClock(100.0)
    depth = SharedDepth(keystore.messages, every_s=1.0, monotonic=monotonic)
    assert sum((await depth()).values()) == 0
    # Queued through the other instance, which this one's dispatcher never sees.
    await other_keystore.messages.submit(
        [message(f"b{n}", priority=Priority.BULK) for n in range(3)],
        daily_quota=None,
        owner=there,
    )
    await submit_as(keystore, here, "h1")
    monotonic.now += 0.5
    assert sum((await depth()).values()) == 0  # within the second: as read
    monotonic.now += 0.5
    assert await depth() == {Priority.HIGH: 1, Priority.NORMAL: 0, Priority.BULK: 3}
    await other_keystore.messages.mark_dispatched([1, 2, 3, 4], 1_800_000_100_000)
    monotonic.now += 1.0
    assert sum((await depth()).values()) == 0  # dispatched: no longer queued


def nonce(value: str = "n-1234567", now: int = 1_800_000_000) -> RequestNonce:
    return RequestNonce("cid", value, now + 301, now)


async def test_a_nonce_is_claimed_in_the_transaction_that_stores_the_messages(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    assert not await store.nonce_seen(nonce())
    (stored,) = await store.submit([message("m1")], daily_quota=None, nonce=nonce())
    assert isinstance(stored, MessageRecord)
    assert await store.nonce_seen(nonce())
    with pytest.raises(NonceUsed):
        await store.submit([message("m2")], daily_quota=None, nonce=nonce())
    with pytest.raises(MessageNotFound):
        await store.get(APP, "m2")  # the replay stored nothing
    assert not await store.claim_nonce(nonce())
    # A request that stores nothing claims its nonce all the same.
    assert await store.submit([], daily_quota=None, nonce=nonce("n-7654321")) == []
    assert await store.nonce_seen(nonce("n-7654321"))
    assert not await store.nonce_seen(nonce(now=1_800_000_301))  # expired by then


async def test_a_failed_submission_claims_no_nonce(keystore: AnyKeystore, app: str) -> None:
    store = keystore.messages
    orphan = dataclasses.replace(message("m1"), app_id="no-such-app")
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError), match=r"(?i)foreign key"):
        await store.submit([orphan], daily_quota=None, nonce=nonce())
    assert not await store.nonce_seen(nonce())
    (stored,) = await store.submit([message("m1")], daily_quota=None, nonce=nonce())
    assert isinstance(stored, MessageRecord)  # the retry, with the same nonce


async def test_one_nonce_submitted_at_two_instances_at_once_is_stored_once(
    keystore: AnyKeystore, database: Database, other_keystore: AnyKeystore, app: str
) -> None:
    outcomes = await asyncio.gather(
        keystore.messages.submit([message("here")], daily_quota=None, nonce=nonce()),
        other_keystore.messages.submit([message("there")], daily_quota=None, nonce=nonce()),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["NonceUsed", "list"]
    assert database.execute("SELECT count(*) FROM messages") == [(1,)]
    # Unique by the table's primary key, whatever inserts it.
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError), match=r"(?i)unique|dupl"):
        database.execute(
            "INSERT INTO request_nonces (client_id, nonce, expires_at) VALUES (?, ?, ?)",
            ("cid", "n-1234567", 1),
        )


def scenario(prefix: str) -> list[list[StatusChange]]:
    """Receipts, markers and bounces as they arrive for the messages ``prefix`` 0 to 39:
    one call of ``record`` each, repeats, other devices and hostile reports included."""
    calls: list[list[StatusChange]] = []
    for n in range(40):
        m = f"{prefix}{n}"
        calls.append([change(m, MessageStatus.DELIVERED, "1", reporter=ALICE)])
        if n % 2:
            calls.append([change(m, MessageStatus.DELIVERED, "1", reporter=ALICE)])  # repeated
            calls.append([change(m, MessageStatus.READ, "1", reporter=ALICE)])
        if n % 3 == 0:
            calls.append([change(m, MessageStatus.DELIVERED, "2", reporter=ALICE)])
            calls.append([change(m, MessageStatus.DELIVERED, "9", reporter=ALICE)])  # not sealed to
        if n % 5 == 0:
            calls.append([change(m, MessageStatus.DELIVERED, "2", reporter="mallory@cmaas.test")])
            calls.append([change(m, MessageStatus.FAILED, detail="bounced")])  # too late
        if n % 7 == 0:
            calls.append(
                [change(f"{prefix}ghost{n}", MessageStatus.DELIVERED, "1", reporter=ALICE)]
            )
    # Reported before any receipt: fails the message, whose receipts then count for nothing.
    calls.insert(0, [change(f"{prefix}39", MessageStatus.FAILED, detail="bounced: gone")])
    calls.append(
        [
            change(f"{prefix}38", MessageStatus.READ, "2", reporter=ALICE),
            change(f"{prefix}38", MessageStatus.READ, "2", reporter=ALICE),
        ]
    )
    return calls


async def test_changes_recorded_together_come_out_as_one_at_a_time(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    outcomes = await submit(
        keystore, *(message(f"{prefix}{n}") for prefix in "ab" for n in range(40))
    )
    await store.mark_dispatched(
        [o.seq for o in outcomes if isinstance(o, MessageRecord)], 1_800_000_050_000
    )
    commits: list[int] = []
    store.listen(lambda events: commits.append(len(events)))
    one_at_a_time = [await store.record(calls) for calls in scenario("a")]
    assert len(commits) == sum(1 for events in one_at_a_time if events)
    commits.clear()
    together = await asyncio.gather(*(store.record(calls) for calls in scenario("b")))
    assert len(commits) <= 2, "the concurrent calls share one or two transactions"
    assert sum(commits) == sum(len(events) for events in together)

    def seen(events: list[StatusEvent], prefix: str) -> list[tuple[str, str, str, str]]:
        return [
            (e.message_id.removeprefix(prefix), e.status.value, e.device, e.detail) for e in events
        ]

    assert [seen(events, "a") for events in one_at_a_time] == [
        seen(events, "b") for events in together
    ]
    # 40 receipts of device 1, 20 reads, 14 receipts of device 2, the failure and one
    # read of device 2; message 39 failed first, so its 3 reports count for nothing.
    assert sum(len(events) for events in together) == 40 + 20 + 14 + 1 + 1 - 3
    for n in range(40):
        (a, a_history), (b, b_history) = [await store.get(APP, f"{p}{n}") for p in "ab"]
        assert (a.status, a.detail) == (b.status, b.detail)
        assert seen(a_history, "a") == seen(b_history, "b")
    ids = [e.event_id for events in together for e in events]
    assert len(set(ids)) == len(ids)


class CountingDb:
    """A :class:`Db` that notes each statement it is given."""

    def __init__(self, db: Db, statements: list[str]) -> None:
        self.db = db
        self.statements = statements

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        self.statements.append(sql)
        return await self.db.one(sql, params)

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        self.statements.append(sql)
        return await self.db.all(sql, params)

    async def run(self, sql: str, params: Params = ()) -> int:
        self.statements.append(sql)
        return await self.db.run(sql, params)

    async def many(self, sql: str, rows: Iterable[Params]) -> None:
        self.statements.append(sql)
        await self.db.many(sql, rows)


async def test_a_batch_of_changes_takes_a_few_statements(keystore: AnyKeystore, app: str) -> None:
    store = keystore.messages
    outcomes = await submit(keystore, *(message(f"m{n}") for n in range(300)))
    await store.mark_dispatched(
        [o.seq for o in outcomes if isinstance(o, MessageRecord)], 1_800_000_050_000
    )
    statements: list[str] = []
    changes = [change(f"m{n}", MessageStatus.DELIVERED, "1", reporter=ALICE) for n in range(300)]
    async with store._tx.write() as db:
        recorded = await _apply_changes(CountingDb(db, statements), changes)
    assert [len(events) for events in recorded] == [1] * 300
    # The messages, the devices' events and the inserts in chunks of 200; the moves in one.
    assert len(statements) == 2 + 2 + 1 + 2
    stored, history = await store.get(APP, "m299")
    assert stored.status is MessageStatus.DELIVERED
    assert [e.status.value for e in history][-1] == "delivered"


async def test_events_alike_in_a_batch_are_inserted_one_by_one(
    keystore: AnyKeystore, app: str
) -> None:
    (record,) = await submit(keystore, message("m"))
    assert isinstance(record, MessageRecord)
    twice = [
        (0, record.seq, change("m", MessageStatus.DELIVERED, "1", detail="first")),
        (1, record.seq, change("m", MessageStatus.DELIVERED, "1", detail="second")),
    ]
    async with keystore.messages._tx.write() as db:
        recorded = await _add_events(db, twice)
    assert [recorded[n].detail for n in (0, 1)] == ["first", "second"]
    assert recorded[0].event_id < recorded[1].event_id


def test_a_closed_batch_takes_no_more_changes() -> None:
    """Its transaction has read what it holds (on another thread, for SQLite): a change
    joining later goes to the next batch, never into one already being recorded."""
    loop = asyncio.new_event_loop()
    try:
        batch = _ChangeBatch(loop.create_future())
        first = change("a", MessageStatus.DELIVERED, "1")
        assert batch.join([first]) == 0
        assert batch.join([first, first]) == 1
        taken = batch.close()
        assert batch.join([change("b", MessageStatus.DELIVERED, "1")]) is None
        assert taken == (first, first, first)
        assert batch.close() == taken
    finally:
        loop.close()


async def test_a_batch_submitted_together_comes_out_as_one_at_a_time(
    keystore: AnyKeystore, app: str
) -> None:
    """Ids used before, ids repeated within the request (the same request, or another),
    known failures and the quota running out midway: a request's outcomes, records and
    events are those of its messages submitted one call at a time (by another app)."""
    other = "shop"
    await keystore.create_app(NewApp(other, "Shop", "default"), issue_credentials("cid2"))

    def scenario(app_id: str) -> list[NewMessage]:
        def m(name: str, **kw: object) -> NewMessage:
            return dataclasses.replace(message(name, **kw), app_id=app_id)  # type: ignore[arg-type]

        return [
            m("new1"),
            m("old"),  # the same request as before: a duplicate
            m("old", body=b'{"x":1}'),  # another request under that id: a conflict
            m("gone", failure="unknown recipient: x"),
            m("new1"),  # again within the request: a duplicate of the one just stored
            m("new1", body=b'{"y":2}'),  # and a conflict
            m("new2"),
            m("gone"),  # the failed one's request again: its record
            m("new3"),  # over the quota
            m("new4"),
        ]

    def seen(outcome: object) -> tuple[object, ...]:
        if isinstance(outcome, MessageRecord):
            return ("record", outcome.message_id, outcome.status, outcome.detail, outcome.duplicate)
        return (type(outcome).__name__, str(outcome))

    quota = 4  # "old", then new1, gone and new2
    for app_id in (other, app):
        await submit(keystore, scenario(app_id)[1])
    one_at_a_time = [
        outcome
        for single in scenario(other)
        for outcome in await submit(keystore, single, quota=quota)
    ]
    together = await submit(keystore, *scenario(app), quota=quota)
    assert [seen(o) for o in together] == [seen(o) for o in one_at_a_time]
    reused = "was used before with a different request"
    assert [seen(o) for o in together] == [
        ("record", "new1", MessageStatus.ACCEPTED, "", False),
        ("record", "old", MessageStatus.ACCEPTED, "", True),
        ("MessageConflict", f"message id 'old' {reused}"),
        ("record", "gone", MessageStatus.FAILED, "unknown recipient: x", False),
        ("record", "new1", MessageStatus.ACCEPTED, "", True),
        ("MessageConflict", f"message id 'new1' {reused}"),
        ("record", "new2", MessageStatus.ACCEPTED, "", False),
        ("record", "gone", MessageStatus.FAILED, "unknown recipient: x", True),
        ("QuotaExhausted", f"the plan's daily quota of {quota} is used up"),
        ("QuotaExhausted", f"the plan's daily quota of {quota} is used up"),
    ]
    first, again = together[0], together[4]
    assert isinstance(first, MessageRecord) and isinstance(again, MessageRecord)
    assert again.seq == first.seq
    for name in ("new1", "gone", "new2"):
        (a, a_history), (b, b_history) = [
            await keystore.messages.get(app_id, name) for app_id in (other, app)
        ]
        assert (a.status, a.detail, a.priority) == (b.status, b.detail, b.priority)
        assert [(e.status, e.detail) for e in a_history] == [
            (e.status, e.detail) for e in b_history
        ]
    _, failed = await keystore.messages.get(app, "gone")
    assert [e.status for e in failed] == [MessageStatus.ACCEPTED, MessageStatus.FAILED]
    for app_id in (other, app):
        assert (await keystore.app_counters(app_id)).submitted_today == quota


async def test_a_batch_of_submissions_takes_a_few_statements(
    keystore: AnyKeystore, app: str
) -> None:
    store = keystore.messages
    statements: list[str] = []
    write = store._write

    async def counted(work: Work[T], *, urgent: bool = False) -> T:
        return await write(lambda db: work(CountingDb(db, statements)), urgent=urgent)

    store._write = counted
    outcomes = await submit(keystore, *(message(f"m{n}") for n in range(300)))
    assert len({o.seq for o in outcomes if isinstance(o, MessageRecord)}) == 300
    # Ids used before and today's count; the messages and their events in chunks of
    # 200; the count written back.
    assert len(statements) == 2 + 1 + 2 + 2 + 1
    events = await store.events_after(APP, 0, 1000)
    assert sorted(e.message_id for e in events) == sorted(f"m{n}" for n in range(300))
    assert all(e.status is MessageStatus.ACCEPTED for e in events)
