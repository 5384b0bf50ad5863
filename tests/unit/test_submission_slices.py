"""A large request stored in slices (SQLite's group commit), on a real keystore: the
answers are those of one request; a replayed nonce stores no slice; a slice that fails
leaves the others queued; and an urgent write commits between the slices of a bulk
request instead of after all of them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import pytest

from cmaas.delivery.errors import MessageIdConflict, Unauthenticated
from cmaas.delivery.submission import SubmissionService
from cmaas.delivery.urgency import UrgentTraffic
from cmaas.keystore import (
    App,
    MessageRecord,
    NewMessage,
    OutboxEntry,
    Plan,
    RequestNonce,
    SqliteKeystore,
)
from cmaas.keystore.sqlite import SUBMIT_SLICE
from cmaas.lifecycle import MessageStatus, Priority
from tests.omemo_elements import encrypted_xml

from .conftest import OMEMO_APP_DEVICE, FakeClock
from .test_omemo_submission import Queued, queued, service

__all__ = ["queued", "service"]  # the fixtures, shared with the OMEMO submission tests

BOB = "bob@cmaas.test"


@pytest.fixture
async def app(omemo_app: App, keystore: SqliteKeystore) -> App:
    """The ``otp`` app on a plan whose burst admits a full batch."""
    await keystore.set_plan(Plan("default", 10_000, 10_000, None, frozenset(Priority)))
    return omemo_app


def item(clock: FakeClock, message_id: str, priority: str = "bulk") -> dict[str, object]:
    return {
        "message_id": message_id,
        "to": BOB,
        "priority": priority,
        "expires_at": int(clock.now) + 600,
        "omemo": encrypted_xml(OMEMO_APP_DEVICE, (11,)),
    }


async def stored_count(keystore: SqliteKeystore) -> int:
    async with keystore._shared.read() as db:
        row = await db.one("SELECT count(*) AS n FROM messages")
    assert row is not None
    return int(row["n"])


def test_the_sqlite_store_asks_for_slices(keystore: SqliteKeystore) -> None:
    assert keystore.messages.submit_slice == SUBMIT_SLICE


async def test_a_large_request_is_answered_as_one_and_queued_slice_by_slice(
    service: SubmissionService, app: App, clock: FakeClock, queued: Queued
) -> None:
    items = [item(clock, f"m{n}") for n in range(2 * SUBMIT_SLICE + 50)]
    # Across slice boundaries: the same message again, and the same id with other content.
    items[SUBMIT_SLICE + 10] = items[5]
    items[2 * SUBMIT_SLICE + 3] = {**items[7], "omemo": encrypted_xml(OMEMO_APP_DEVICE, (11,))}
    outcomes = await service.submit(app, items)

    assert len(outcomes) == len(items)
    first, again = outcomes[5], outcomes[SUBMIT_SLICE + 10]
    assert isinstance(first, MessageRecord) and isinstance(again, MessageRecord)
    assert again.duplicate and again.seq == first.seq
    assert isinstance(outcomes[2 * SUBMIT_SLICE + 3], MessageIdConflict)
    new = [o for o in outcomes if isinstance(o, MessageRecord) and not o.duplicate]
    assert len(new) == len(items) - 2
    assert all(o.status is MessageStatus.ACCEPTED for o in new)
    # Each new message queued once, in order, one call per slice.
    assert [e.seq for e in queued.entries] == [o.seq for o in new]
    assert queued.calls == 3


async def test_a_replayed_nonce_stores_none_of_the_slices(
    service: SubmissionService, app: App, keystore: SqliteKeystore, clock: FakeClock
) -> None:
    nonce = RequestNonce("cid-otp", "n-1", int(clock.now) + 300, int(clock.now))
    count = 2 * SUBMIT_SLICE + 1
    await service.submit(app, [item(clock, f"a{n}") for n in range(count)], nonce=nonce)
    assert await stored_count(keystore) == count
    with pytest.raises(Unauthenticated):
        await service.submit(app, [item(clock, f"b{n}") for n in range(count)], nonce=nonce)
    assert await stored_count(keystore) == count


async def test_a_slice_that_fails_leaves_the_others_stored_and_queued(
    service: SubmissionService,
    app: App,
    keystore: SqliteKeystore,
    clock: FakeClock,
    queued: Queued,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = keystore.messages
    submit = store.submit
    calls = 0

    async def second_slice_fails(messages: Sequence[NewMessage], **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return await submit(messages, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "submit", second_slice_fails)
    items = [item(clock, f"m{n}") for n in range(3 * SUBMIT_SLICE)]
    with pytest.raises(sqlite3.OperationalError):
        await service.submit(app, items)
    # The first and third slices are stored, and waiting for dispatch: none is stranded.
    assert await stored_count(keystore) == 2 * SUBMIT_SLICE
    assert len(queued.entries) == 2 * SUBMIT_SLICE
    queued_ids = {e.message_id for e in queued.entries}
    assert "m0" in queued_ids and f"m{2 * SUBMIT_SLICE}" in queued_ids
    assert f"m{SUBMIT_SLICE}" not in queued_ids
    # The request sent again stores the failed slice; the rest are duplicates.
    monkeypatch.setattr(store, "submit", submit)
    again = await service.submit(app, items)
    assert sum(isinstance(o, MessageRecord) and o.duplicate for o in again) == 2 * SUBMIT_SLICE
    assert await stored_count(keystore) == 3 * SUBMIT_SLICE


async def test_an_otp_commits_between_the_slices_of_a_bulk_request(
    service: SubmissionService, app: App, clock: FakeClock, queued: Queued
) -> None:
    otp: asyncio.Task[list[object]] | None = None
    enqueue = queued.__call__

    def first_slice_stored(entries: Sequence[OutboxEntry]) -> None:
        nonlocal otp
        enqueue(entries)
        if otp is None:
            # The OTP arrives while the bulk request's other slices wait to be written.
            otp = asyncio.create_task(service.submit(app, [item(clock, "otp", "high")]))  # type: ignore[arg-type]

    service._enqueue = first_slice_stored
    bulk = await service.submit(app, [item(clock, f"m{n}") for n in range(1000)])
    assert otp is not None
    (stored,) = await otp
    assert isinstance(stored, MessageRecord)
    bulk_seqs = [o.seq for o in bulk if isinstance(o, MessageRecord)]
    # Stored in one operation, the bulk request held the OTP until its last message.
    later = [seq for seq in bulk_seqs if seq > stored.seq]
    assert len(later) >= SUBMIT_SLICE, (stored.seq, max(bulk_seqs))


async def test_bulk_slices_wait_for_an_urgent_admission_for_a_bounded_time() -> None:
    urgent = UrgentTraffic(max_wait_s=0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await urgent.make_way()  # nothing urgent: one turn of the loop
    assert loop.time() - began < 0.1
    with urgent.admission():
        waiting = asyncio.create_task(urgent.make_way())
        await asyncio.sleep(0.05)
        assert not waiting.done() and urgent.waiting == 1
    await asyncio.wait_for(waiting, 0.1)  # released as the admission ends
    with urgent.admission():
        began = loop.time()
        await urgent.make_way()  # an admission that lasts: the wait is bounded
        assert loop.time() - began >= 0.2
    assert urgent.waiting == 0


async def test_admissions_keep_pausing_for_a_while_after_an_otp_is_stored() -> None:
    urgent = UrgentTraffic(max_wait_s=10.0, linger_s=0.1, unanswered_s=10.0)
    loop = asyncio.get_running_loop()
    urgent.stored([("bank", "otp")])
    began = loop.time()
    await urgent.make_way()  # released when the linger ends, not at max_wait_s
    assert 0.09 <= loop.time() - began < 5.0
    began = loop.time()
    await urgent.make_way()
    assert loop.time() - began < 0.05  # quiet again: one turn of the loop
    assert not urgent.all_answered  # dispatch still waits for the report


async def test_dispatch_waits_for_every_report_or_until_a_message_no_longer_counts() -> None:
    urgent = UrgentTraffic(max_wait_s=10.0, linger_s=0.01, unanswered_s=0.2)
    loop = asyncio.get_running_loop()
    urgent.stored([("bank", "otp-1"), ("bank", "otp-2")])
    waiting = asyncio.create_task(urgent.until_answered())
    await asyncio.sleep(0)
    urgent.answered(("bank", "otp-1"))
    await asyncio.sleep(0)
    assert not waiting.done() and urgent.waiting == 1  # otp-2 still has none
    urgent.answered(("bank", "otp-2"))
    await asyncio.wait_for(waiting, 1.0)
    assert urgent.all_answered

    urgent.stored([("bank", "otp-3")])  # never answered: it counts for unanswered_s
    began = loop.time()
    await urgent.until_answered()
    assert 0.15 <= loop.time() - began < 5.0
    assert urgent.all_answered
    urgent.answered(("bank", "otp-3"))  # a late report changes nothing
    assert urgent.all_answered


async def test_a_wait_for_reports_ends_when_told_to() -> None:
    urgent = UrgentTraffic(max_wait_s=10.0, unanswered_s=10.0)
    urgent.stored([("bank", "otp")])
    another_otp = asyncio.Event()
    waiting = asyncio.create_task(urgent.until_answered(or_until=another_otp))
    await asyncio.sleep(0)
    another_otp.set()
    await asyncio.wait_for(waiting, 1.0)
    assert not urgent.all_answered and urgent.waiting == 0


async def test_a_bulk_request_steps_aside_while_an_otp_is_admitted(
    service: SubmissionService,
    app: App,
    keystore: SqliteKeystore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urgent = UrgentTraffic(max_wait_s=10.0)
    service._urgent = urgent
    store = keystore.messages
    submit = store.submit
    otp_may_commit = asyncio.Event()
    order: list[str] = []

    async def recorded(messages: Sequence[NewMessage], **kwargs: object) -> object:
        if messages and messages[0].priority is Priority.HIGH:
            await otp_may_commit.wait()
        order.append(messages[0].message_id if messages else "-")
        return await submit(messages, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "submit", recorded)
    otp = asyncio.create_task(service.submit(app, [item(clock, "otp", "high")]))
    while not urgent.admitting:
        await asyncio.sleep(0)
    bulk = asyncio.create_task(service.submit(app, [item(clock, f"m{n}") for n in range(100)]))
    # The bulk request parses its first slice, then waits: it stores nothing meanwhile.
    while not urgent.waiting and not order:
        await asyncio.sleep(0.001)
    assert urgent.waiting == 1 and order == []
    otp_may_commit.set()
    await otp
    await bulk
    assert order == ["otp", "m0"]
