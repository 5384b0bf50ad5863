"""The delivery engine's parts on their own: dispatch order, token buckets, signatures,
authentication, client addresses, and the dispatcher's resend after a lost link."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from cmaas.api.addresses import ClientAddresses
from cmaas.delivery.auth import RequestAuthenticator, SignedRequest
from cmaas.delivery.dispatcher import Dispatcher, OutgoingSealed, WrittenLately
from cmaas.delivery.errors import AppSuspended, ForbiddenAddress, Unauthenticated
from cmaas.delivery.instances import Instance
from cmaas.delivery.queues import PriorityQueues
from cmaas.delivery.ratelimit import BucketState, TokenBuckets, take_tokens
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.submission import AdmissionLimits, SubmissionService
from cmaas.delivery.urgency import UrgentTraffic
from cmaas.identifiers import parse_network
from cmaas.keystore import (
    AppChanges,
    MessageRecord,
    NewApp,
    NewMessage,
    OutboxEntry,
    Plan,
    SqliteKeystore,
    StatusEvent,
    issue_credentials,
)
from cmaas.lifecycle import (
    MessageStatus,
    Priority,
    StatusChange,
)
from cmaas.wire.signing import (
    request_signature,
    webhook_signature,
    webhook_signature_matches,
)

from .conftest import FakeClock


def entry(seq: int, app: str, priority: Priority, expires_ms: int = 10**13) -> OutboxEntry:
    return OutboxEntry(seq, app, f"m{seq}", "alice@cmaas.test", priority, expires_ms)


def test_queues_serve_priorities_in_order_and_apps_in_turn() -> None:
    queues = PriorityQueues()
    for seq, app, priority in [
        (1, "big", Priority.BULK),
        (2, "big", Priority.NORMAL),
        (3, "big", Priority.NORMAL),
        (4, "big", Priority.NORMAL),
        (5, "small", Priority.NORMAL),
        (6, "small", Priority.NORMAL),
        (7, "bank", Priority.HIGH),
    ]:
        queues.push(entry(seq, app, priority))
    queues.push(entry(8, "big", Priority.NORMAL), front=True)  # a resend goes first
    assert queues.depth() == {Priority.HIGH: 1, Priority.NORMAL: 6, Priority.BULK: 1}
    order = []
    while (popped := queues.pop()) is not None:
        order.append(popped)
    assert order == [7, 8, 5, 2, 6, 3, 4, 1]
    assert len(queues) == 0


def finished(seq: int, message_id: str) -> StatusEvent:
    return StatusEvent(seq, seq, "bank", message_id, MessageStatus.DELIVERED, 1, "1", "")


def test_messages_written_lately_are_kept_by_sequence_number_until_the_window_passes() -> None:
    written = WrittenLately()
    written.add([entry(1, "bank", Priority.BULK), entry(2, "bank", Priority.HIGH)], 10.0)
    written.add([entry(3, "bank", Priority.BULK), entry(1, "bank", Priority.BULK)], 12.0)
    written.add([entry(4, "bank", Priority.NORMAL)], 14.0)
    assert len(written) == 4
    assert written.is_urgent(("bank", "m2")) and not written.is_urgent(("bank", "m1"))

    written.finished(finished(2, "m2"))  # a final report: nothing to resend or hurry
    assert len(written) == 3 and not written.is_urgent(("bank", "m2"))
    # The first round is forgotten, but not message 1, written again in the second.
    written.forget_before(11.0)
    assert len(written) == 3
    written.forget_before(13.0)
    assert len(written) == 1
    written.add([entry(5, "bank", Priority.HIGH)], 15.0)
    assert written.take_since(14.5) == [5]
    assert len(written) == 0 and not written.is_urgent(("bank", "m5"))


def test_a_resend_takes_each_message_once_in_the_order_last_written() -> None:
    written = WrittenLately()
    written.add([entry(1, "bank", Priority.BULK), entry(2, "bank", Priority.BULK)], 10.0)
    written.add([entry(3, "bank", Priority.BULK), entry(1, "bank", Priority.BULK)], 11.0)
    written.add([entry(4, "bank", Priority.BULK)], 12.0)
    written.finished(finished(4, "m4"))
    assert written.take_since(10.0) == [2, 3, 1]
    assert written.take_since(0.0) == []


def plan(rate: float, burst: int) -> Plan:
    return Plan("p", rate, burst, None, frozenset(Priority))


async def test_token_bucket_bursts_refills_and_follows_plan_changes() -> None:
    clock = FakeClock(0.0)
    buckets = TokenBuckets(clock)
    assert await buckets.take("app", plan(2, 3), 5) == (3, 1.0)  # two more in a second at 2/s
    assert await buckets.take("app", plan(2, 3), 1) == (0, 0.5)
    clock.now += 0.5
    assert await buckets.take("app", plan(2, 3), 1) == (1, 0.0)
    clock.now += 10
    assert (await buckets.take("app", plan(2, 3), 4))[0] == 3  # never more than the burst
    clock.now += 0.2  # the plan is raised: the new rate applies from now on
    assert await buckets.take("app", plan(100, 100), 10) == (10, 0.0)
    assert await buckets.take("other", plan(2, 3), 3) == (3, 0.0)  # one bucket per key


def test_the_bucket_arithmetic_is_one_pure_function() -> None:
    took = take_tokens(None, 100.0, 2.0, 3, 5)  # a new bucket is full
    assert (took.granted, took.retry_after, took.state) == (3, 1.0, BucketState(0.0, 100.0))
    later = take_tokens(took.state, 100.75, 2.0, 3, 1)  # 1.5 tokens refilled
    assert (later.granted, later.retry_after) == (1, 0.0)
    assert later.state == BucketState(0.5, 100.75)
    assert take_tokens(later.state, 1000.0, 2.0, 3, 0).state.tokens == 3.0  # capped


def test_request_signature_is_the_spec_formula() -> None:
    key = b"k" * 32
    body = b'{"a":1}'
    expected_input = b"POST\n/v1/messages?x=1\n1800000000\nnonce-123\n" + (
        hashlib.sha256(body).hexdigest().encode()
    )
    expected = base64.b64encode(hmac.new(key, expected_input, "sha256").digest()).decode()
    got = request_signature(key, "post", "/v1/messages?x=1", "1800000000", "nonce-123", body)
    assert got == expected


def test_webhook_signature_round_trip_and_tampering() -> None:
    key = b"w" * 32
    header = webhook_signature(key, 1_800_000_000, b'{"events":[]}')
    mac = hmac.new(key, b'1800000000.{"events":[]}', "sha256").hexdigest()
    assert header == f"t=1800000000,v1={mac}"
    assert webhook_signature_matches(key, header, b'{"events":[]}') == 1_800_000_000
    assert webhook_signature_matches(key, header, b'{"events":[1]}') is None
    assert webhook_signature_matches(b"x" * 32, header, b'{"events":[]}') is None
    assert webhook_signature_matches(key, "garbage", b"") is None


async def _app(
    keystore: SqliteKeystore, networks: Sequence[str] = ("127.0.0.0/8",)
) -> tuple[str, str, bytes]:
    issued = issue_credentials("cid-auth")
    await keystore.create_app(
        NewApp("auth", "Auth", "default", networks=tuple(parse_network(n) for n in networks)),
        issued,
    )
    return issued.client_id, issued.client_secret, issued.hmac_key


def signed(
    client_id: str,
    secret: str,
    key: bytes,
    *,
    timestamp: str = "1800000000",
    nonce: str = "nonce-0001",
    peer: str | None = "127.0.0.1",
    body: bytes = b"",
    sign_body: bytes | None = None,
) -> SignedRequest:
    signature = request_signature(
        key, "GET", "/v1/events", timestamp, nonce, body if sign_body is None else sign_body
    )
    return SignedRequest(
        "GET",
        "/v1/events",
        body,
        client_id,
        secret,
        timestamp,
        nonce,
        signature,
        None if peer is None else ipaddress.ip_address(peer),
    )


async def test_authentication_accepts_once_and_names_every_failure(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    client_id, secret, key = await _app(keystore)
    auth = RequestAuthenticator(keystore, clock=clock)
    assert (await auth.authenticate(signed(client_id, secret, key))).app.app_id == "auth"
    failures = {
        "used before": signed(client_id, secret, key),
        "unknown client id": signed("nobody", secret, key),
        "wrong secret": signed(client_id, "nope", key),
        "does not verify": signed(client_id, secret, b"x" * 32, nonce="nonce-0002"),
        "body": signed(client_id, secret, key, body=b"{}", sign_body=b"", nonce="nonce-0003"),
        "gateway's clock": signed(
            client_id, secret, key, timestamp="1799999000", nonce="nonce-0004"
        ),
        "unix seconds": signed(client_id, secret, key, timestamp="soon", nonce="nonce-0005"),
        "X-CMAAS-Nonce": signed(client_id, secret, key, nonce="short"),
    }
    for words, request in failures.items():
        with pytest.raises(Unauthenticated) as refused:
            await auth.authenticate(request)
        assert words in str(refused.value) or words == "body", words


async def test_allow_list_and_suspension(keystore: SqliteKeystore, clock: FakeClock) -> None:
    client_id, secret, key = await _app(keystore, ["203.0.113.0/24", "2001:db8::/32"])
    auth = RequestAuthenticator(keystore, clock=clock)
    for n, peer in enumerate(["203.0.113.9", "::ffff:203.0.113.9", "2001:db8::1"]):
        request = signed(client_id, secret, key, peer=peer, nonce=f"nonce-ok-{n}")
        assert (await auth.authenticate(request)).app.app_id == "auth"
    with pytest.raises(ForbiddenAddress):
        await auth.authenticate(signed(client_id, secret, key, peer="198.51.100.1"))
    await keystore.update_app("auth", AppChanges(suspended=True))
    with pytest.raises(AppSuspended):
        await auth.authenticate(
            signed(client_id, secret, key, peer="203.0.113.9", nonce="nonce-sus-1")
        )


def _request(peer: str, forwarded: str | None = None) -> object:
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 1234)
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/", headers=headers, transport=transport)


def test_forwarded_addresses_count_only_from_trusted_proxies() -> None:
    addresses = ClientAddresses([parse_network("10.0.0.0/8"), parse_network("192.0.2.1")])
    cases = [
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # untrusted peer: header ignored
        ("10.1.1.1", "203.0.113.1", "203.0.113.1"),
        ("10.1.1.1", "6.6.6.6, 203.0.113.1, 192.0.2.1", "203.0.113.1"),  # right-most untrusted
        ("10.1.1.1", None, "10.1.1.1"),
        ("10.1.1.1", "not-an-address", "0.0.0.0"),  # noqa: S104
        ("::ffff:10.1.1.1", "203.0.113.1", "203.0.113.1"),
    ]
    for peer, forwarded, client in cases:
        request = _request(peer, forwarded)
        assert str(addresses.client(request)) == client, (peer, forwarded)  # type: ignore[arg-type]


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.barriers = 0

    def send_sealed_many(self, messages: Sequence[OutgoingSealed]) -> bool:
        self.sent += [message.message_id for message in messages]
        return True

    async def barrier(self) -> None:
        self.barriers += 1


async def _stored(
    keystore: SqliteKeystore, *specs: tuple[str, Priority, int], owner: int | None = None
) -> list[OutboxEntry]:
    await keystore.create_app(NewApp("bank", "Bank", "default"), issue_credentials("cid-d"))
    outcomes = await keystore.messages.submit(
        [
            NewMessage(
                "bank", mid, "a@x", "a@x", priority, mid.encode(), b"{}", expires, sealed_to=(1,)
            )
            for mid, priority, expires in specs
        ],
        daily_quota=None,
        owner=owner,
    )
    return [
        OutboxEntry(r.seq, r.app_id, r.message_id, "a@x", r.priority, r.expires_ms)
        for r in outcomes
        if isinstance(r, MessageRecord)
    ]


async def _until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def _silence(db_path: Path, epoch: int) -> None:
    """Date an instance's last heartbeat a minute back."""
    with closing(sqlite3.connect(db_path)) as raw, raw:
        raw.execute(
            "UPDATE gateway_instances SET heartbeat_at = heartbeat_at - 60000 WHERE epoch = ?",
            (epoch,),
        )


async def test_a_fenced_instance_stops_and_a_survivor_dispatches_its_messages(
    keystore: SqliteKeystore, db_path: Path, clock: FakeClock
) -> None:
    store = keystore.messages
    now_ms = int(clock.now * 1000)
    dead_epoch = await store.register_instance("gw-a")
    survivor_epoch = await store.register_instance("gw-b")
    specs = [(f"m{n}", Priority.NORMAL, now_ms + 60_000) for n in range(5)]
    entries = await _stored(keystore, *specs, owner=dead_epoch)
    sent_by: dict[str, FakeSender] = {"dead": FakeSender(), "survivor": FakeSender()}
    dead = Dispatcher(store, sent_by["dead"], owner=dead_epoch, clock_ms=lambda: now_ms)
    survivor = Dispatcher(store, sent_by["survivor"], owner=survivor_epoch, clock_ms=lambda: now_ms)
    instances = {
        name: Instance(
            store,
            dispatcher,
            epoch,
            heartbeat_s=0.02,
            dead_after_s=10.0,
            resend_window_s=15.0,
        )
        for name, dispatcher, epoch in (
            ("dead", dead, dead_epoch),
            ("survivor", survivor, survivor_epoch),
        )
    }
    # The first instance admitted the messages, then its link and heartbeat stalled.
    dead.enqueue(entries)
    _silence(db_path, dead_epoch)
    await instances["survivor"].take_over()
    stop = asyncio.Event()
    dead_dispatching = asyncio.create_task(dead.run(stop))
    dead_beating = asyncio.create_task(instances["dead"].run(stop))
    survivor_dispatching = asyncio.create_task(survivor.run(stop))
    try:
        # Its next heartbeat tells it: it stops on its own, with nothing written.
        async with asyncio.timeout(5):
            await instances["dead"].fenced.wait()
            await asyncio.gather(dead_beating, dead_dispatching)
        dead.link_up()
        survivor.link_up()
        await _until(lambda: len(sent_by["survivor"].sent) == len(specs))
        await _until(lambda: survivor.inflight == len(specs))
    finally:
        stop.set()
        await asyncio.gather(survivor_dispatching, return_exceptions=True)
    assert dead.fenced
    assert sent_by["dead"].sent == []
    assert sorted(sent_by["survivor"].sent) == [mid for mid, _, _ in specs]
    for mid, _, _ in specs:
        record, _ = await store.get("bank", mid)
        assert record.status is MessageStatus.DISPATCHED
    assert not instances["survivor"].fenced.is_set()


async def test_when_any_instance_is_fenced_the_others_resend_what_has_no_receipt(
    keystore: SqliteKeystore, db_path: Path, clock: FakeClock
) -> None:
    """Receipts for a live instance's messages may have gone to a dead one's link."""
    store = keystore.messages
    now_ms = int(clock.now * 1000)
    live_epoch = await store.register_instance("gw-a")
    dead_epoch = await store.register_instance("gw-b")
    taker_epoch = await store.register_instance("gw-c")
    entries = await _stored(
        keystore, *((f"m{n}", Priority.NORMAL, now_ms + 60_000) for n in range(3)), owner=live_epoch
    )
    sender = FakeSender()
    live = Dispatcher(store, sender, owner=live_epoch, clock_ms=lambda: now_ms)
    store.listen(live.on_events)
    instance = Instance(
        store, live, live_epoch, heartbeat_s=1.0, dead_after_s=10.0, resend_window_s=15.0
    )
    await instance.take_over()  # at start: nothing to take, nobody fenced
    stop = asyncio.Event()
    running = asyncio.create_task(live.run(stop))
    try:
        live.enqueue(entries)
        live.link_up()
        await _until(lambda: live.inflight == 3)
        await store.record(
            [StatusChange("bank", "m0", MessageStatus.DELIVERED, now_ms, "1", "a@x")]
        )
        await instance.take_over()  # nobody fenced since: nothing resent
        assert (sender.sent, live.resent) == (["m0", "m1", "m2"], 0)
        _silence(db_path, dead_epoch)
        taken = await store.take_over(taker_epoch, 15_000, dead_after_ms=10_000)
        assert taken.fenced == [dead_epoch]
        await instance.take_over()
        await _until(lambda: len(sender.sent) == 5)
    finally:
        stop.set()
        await running
    assert sender.sent == ["m0", "m1", "m2", "m1", "m2"]
    assert live.resent == 2


async def test_an_instance_without_a_link_gives_its_messages_to_a_linked_one(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    """Its ejabberd node died: it lives on (its HTTP API serves), but sends nothing; what
    it owned, and what it accepts meanwhile, goes to a linked instance."""
    store = keystore.messages
    now_ms = int(clock.now * 1000)
    unlinked_epoch = await store.register_instance("gw-a")
    linked_epoch = await store.register_instance("gw-b")
    owned = await _stored(
        keystore,
        *((f"m{n}", Priority.NORMAL, now_ms + 60_000) for n in range(3)),
        owner=unlinked_epoch,
    )
    senders = {"unlinked": FakeSender(), "linked": FakeSender()}
    unlinked = Dispatcher(store, senders["unlinked"], owner=unlinked_epoch, clock_ms=lambda: now_ms)
    linked = Dispatcher(store, senders["linked"], owner=linked_epoch, clock_ms=lambda: now_ms)
    instances = [
        Instance(store, d, e, heartbeat_s=0.02, dead_after_s=10.0, resend_window_s=15.0)
        for d, e in ((unlinked, unlinked_epoch), (linked, linked_epoch))
    ]
    unlinked.enqueue(owned)
    linked.link_up()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(t) for t in (linked.run(stop), unlinked.run(stop))]
    tasks += [asyncio.create_task(i.run(stop)) for i in instances]
    try:
        await _until(lambda: unlinked.released)
        assert unlinked.owner_for_new() is None
        # Accepted while unlinked: owned by nobody, and queued nowhere yet.
        late = await store.submit(
            [
                NewMessage(
                    "bank",
                    "late",
                    "a@x",
                    "a@x",
                    Priority.HIGH,
                    b"l",
                    b"{}",
                    now_ms + 60_000,
                    sealed_to=(1,),
                )
            ],
            daily_quota=None,
            owner=unlinked.owner_for_new(),
        )
        assert isinstance(late[0], MessageRecord)
        unlinked.enqueue(
            [OutboxEntry(late[0].seq, "bank", "late", "a@x", Priority.HIGH, now_ms + 60_000)]
        )
        await _until(lambda: sorted(senders["linked"].sent) == ["late", "m0", "m1", "m2"])
        # The link comes back: it owns new messages again, and was given nothing twice.
        unlinked.link_up()
        await _until(lambda: not unlinked.released)
        assert unlinked.owner_for_new() == unlinked_epoch
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert senders["unlinked"].sent == []
    assert sorted(senders["linked"].sent) == ["late", "m0", "m1", "m2"]
    assert not any(i.fenced.is_set() for i in instances)


class UnansweredBarriers(FakeSender):
    """A server that has not yet confirmed any round: every barrier waits."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()

    async def barrier(self) -> None:
        self.barriers += 1
        await self.answered.wait()


async def test_an_otp_skips_the_bound_on_rounds_at_the_server(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    """Bulk waits while rounds stand unconfirmed at the server; an OTP does not, and
    goes out alone: bulk in its round would stand at the server beyond the bound."""
    sender = UnansweredBarriers()
    now_ms = int(clock.now * 1000)
    moment = FakeClock(100.0)
    dispatcher = Dispatcher(
        keystore.messages,
        sender,
        batch=2,
        rounds_in_flight=2,
        clock_ms=lambda: now_ms,
        monotonic=moment,
    )
    specs = [(f"bulk-{n}", Priority.BULK, now_ms + 60_000) for n in range(12)]
    entries = await _stored(keystore, *specs, ("otp", Priority.HIGH, now_ms + 60_000))
    bulk, otp = entries[:-1], entries[-1]
    dispatcher.enqueue(bulk)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    dispatcher.link_up()
    try:
        # Rounds of 2 until 3 stand unconfirmed (2 may, and the one that found that out).
        await _until(lambda: sender.barriers == 3)
        await asyncio.sleep(0.05)
        assert len(sender.sent) == 6
        dispatcher.enqueue([otp])
        await _until(lambda: "otp" in sender.sent)
        assert sender.sent[6] == "otp"
        await asyncio.sleep(0.05)
        assert len(sender.sent) == 7  # alone in its round, and bulk waits again
        assert sender.barriers == 4
        sender.answered.set()
        await _until(lambda: len(sender.sent) == 13)
    finally:
        stop.set()
        sender.answered.set()
        await running
    assert sorted(sender.sent) == sorted(m for m, _, _ in [*specs, ("otp", 0, 0)])


async def test_rounds_are_short_for_a_while_after_an_otp(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    """Full rounds of 32 for bulk alone; for a second after an OTP, rounds of 8."""
    sender = FakeSender()
    now_ms = int(clock.now * 1000)
    moment = FakeClock(100.0)
    dispatcher = Dispatcher(
        keystore.messages, sender, batch=32, clock_ms=lambda: now_ms, monotonic=moment
    )
    later = now_ms + 60_000
    entries = await _stored(
        keystore,
        *((f"early-{n}", Priority.BULK, later) for n in range(40)),
        ("otp", Priority.HIGH, later),
        *((f"spell-{n}", Priority.BULK, later) for n in range(20)),
        *((f"after-{n}", Priority.BULK, later) for n in range(40)),
    )
    early, otp, spell, after = entries[:40], entries[40], entries[41:61], entries[61:]
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    dispatcher.link_up()
    try:
        dispatcher.enqueue(early)
        await _until(lambda: len(sender.sent) == 40)
        assert sender.barriers == 2  # rounds of 32 and 8
        dispatcher.enqueue([otp, *spell])
        await _until(lambda: len(sender.sent) == 61)
        assert sender.sent[40] == "otp"
        assert sender.barriers == 2 + 3  # rounds of 8, 8 and 5
        moment.now += 1.5  # the spell is over: full rounds again
        dispatcher.enqueue(after)
        await _until(lambda: len(sender.sent) == 101)
        assert sender.barriers == 5 + 2  # rounds of 32 and 8
    finally:
        stop.set()
        await running


async def _dispatching(
    keystore: SqliteKeystore,
    clock: FakeClock,
    urgent: UrgentTraffic,
    batch: int,
    *messages: tuple[str, Priority],
) -> tuple[FakeSender, Dispatcher, list[OutboxEntry]]:
    """A dispatcher with its urgent traffic, and ``messages`` stored (not yet queued)."""
    sender = FakeSender()
    now_ms = int(clock.now * 1000)
    dispatcher = Dispatcher(
        keystore.messages, sender, batch=batch, clock_ms=lambda: now_ms, urgent=urgent
    )
    entries = await _stored(
        keystore, *((mid, priority, now_ms + 60_000) for mid, priority in messages)
    )
    return sender, dispatcher, entries


async def test_other_rounds_wait_for_an_otps_receipt_and_a_new_otp_goes_first(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    """While an OTP written to the server has no report, bulk rounds wait for it; an OTP
    queued meanwhile goes out at once, and the report releases the bulk."""
    urgent = UrgentTraffic(max_wait_s=30.0, unanswered_s=30.0)
    # Rounds of one: an OTP's own round would otherwise take bulk along after it.
    sender, dispatcher, entries = await _dispatching(
        keystore,
        clock,
        urgent,
        1,
        ("otp-1", Priority.HIGH),
        *((f"bulk-{n}", Priority.BULK) for n in range(3)),
        ("otp-2", Priority.HIGH),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    dispatcher.link_up()
    try:
        dispatcher.enqueue(entries[:4])
        await _until(lambda: urgent.waiting == 1)
        assert sender.sent == ["otp-1"]  # the bulk waits for otp-1's report
        dispatcher.enqueue([entries[4]])
        await _until(lambda: "otp-2" in sender.sent)
        await _until(lambda: urgent.waiting == 1)
        assert sender.sent == ["otp-1", "otp-2"]
        assert dispatcher.reported("bank", "otp-1")
        assert urgent.waiting == 1  # otp-2 has no report yet
        assert dispatcher.reported("bank", "otp-2")
        await _until(lambda: len(sender.sent) == 5)
        assert sender.sent[2:] == ["bulk-0", "bulk-1", "bulk-2"]
    finally:
        stop.set()
        await running


async def test_an_otp_no_device_answers_holds_other_rounds_a_bounded_time(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    """Each wait for a report ends after max_wait_s, and a round of others goes before
    the next wait: an unanswered OTP slows bulk and never stops it."""
    urgent = UrgentTraffic(max_wait_s=0.05, unanswered_s=30.0)
    sender, dispatcher, entries = await _dispatching(
        keystore,
        clock,
        urgent,
        2,
        ("otp", Priority.HIGH),
        *((f"bulk-{n}", Priority.BULK) for n in range(6)),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    loop = asyncio.get_running_loop()
    began = loop.time()
    dispatcher.link_up()
    try:
        dispatcher.enqueue(entries)
        await _until(lambda: len(sender.sent) == 7)
        # Three rounds of bulk, each after one bounded wait.
        assert loop.time() - began >= 3 * 0.05
        assert not urgent.all_answered
    finally:
        stop.set()
        await running


async def test_dispatcher_sends_by_priority_skips_expired_and_resends_after_link_loss(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    sender = FakeSender()
    now_ms = int(clock.now * 1000)
    moment = FakeClock(100.0)
    dispatcher = Dispatcher(
        keystore.messages, sender, resend_window_s=10, clock_ms=lambda: now_ms, monotonic=moment
    )
    keystore.messages.listen(dispatcher.on_events)
    entries = await _stored(
        keystore,
        ("bulk-1", Priority.BULK, now_ms + 60_000),
        ("stale", Priority.HIGH, now_ms - 1),
        ("otp-1", Priority.HIGH, now_ms + 60_000),
        ("bulk-2", Priority.BULK, now_ms + 60_000),
    )
    dispatcher.enqueue(entries[:3])
    stop = asyncio.Event()

    # Nothing goes out while the link is down: a run that starts, and ends, without a
    # link has done all it ever would. One turn of the loop lets its first round begin
    # before the stop, so the check does not pass merely because it never ran.
    offline = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0)
    stop.set()
    await offline
    assert sender.sent == []

    stop.clear()
    running = asyncio.create_task(dispatcher.run(stop))
    dispatcher.link_up()
    await _until(lambda: len(sender.sent) == 2)
    assert sender.sent == ["otp-1", "bulk-1"]
    await _until(lambda: dispatcher.inflight == 2)
    record, _ = await keystore.messages.get("bank", "stale")
    assert record.status is MessageStatus.EXPIRED
    # Its receipt is to be recorded ahead of other writes; bulk-1's is not.
    assert dispatcher.reported("bank", "otp-1")
    assert not dispatcher.reported("bank", "bulk-1")

    # The receipt for otp-1 arrives; then the link falls: only bulk-1 is written again.
    await keystore.messages.record(
        [StatusChange("bank", "otp-1", MessageStatus.DELIVERED, now_ms, "1", reporter="a@x")]
    )
    assert not dispatcher.reported("bank", "otp-1")  # delivered: nothing to hurry
    dispatcher.link_down()
    moment.now += 5
    dispatcher.link_up()
    await _until(lambda: len(sender.sent) == 3)
    assert sender.sent[2] == "bulk-1"
    assert dispatcher.resent == 1

    # Written long before a later loss: the server had it, so no resend. A resend would
    # be queued by link_up itself, ahead of the app's later bulk message, so that
    # message going out next proves that none was queued.
    moment.now += 60
    dispatcher.link_down()
    dispatcher.link_up()
    dispatcher.enqueue(entries[3:])
    await _until(lambda: "bulk-2" in sender.sent)
    assert sender.sent[3:] == ["bulk-2"]
    assert dispatcher.resent == 1
    stop.set()
    await running


async def test_back_pressure_refuses_bulk_first_and_never_high(keystore: SqliteKeystore) -> None:
    await _app(keystore)
    app = await keystore.get_app("auth")
    depth = {Priority.HIGH: 0, Priority.NORMAL: 0, Priority.BULK: 0}

    async def shared_depth() -> dict[Priority, int]:
        return depth  # as instances sharing a database read theirs: a coroutine

    submissions = SubmissionService(
        keystore,
        RecipientResolver(keystore, frozenset({"cmaas.test"})),
        lambda entries: None,
        shared_depth,
        component_domain="gateway.cmaas.test",
        limits=AdmissionLimits(bulk_backlog=100, normal_backlog=1000),
    )

    def item(priority: str) -> dict[str, str]:
        return {
            "message_id": f"m-{priority}",
            "to": "a@cmaas.test",
            "priority": priority,
            "envelope": "{}",
        }

    async def outcomes() -> list[str]:
        found = await submissions.submit(app, [item(p) for p in ("high", "normal", "bulk")])
        return [type(outcome).__name__ for outcome in found]

    # Below both limits every message goes on to the envelope check (which fails here).
    assert await outcomes() == ["InvalidRequest"] * 3
    depth[Priority.BULK] = 100
    assert await outcomes() == ["InvalidRequest", "InvalidRequest", "Backpressure"]
    depth[Priority.BULK] = 1000
    assert await outcomes() == ["InvalidRequest", "Backpressure", "Backpressure"]


class StallingSender(FakeSender):
    """A server that never confirms the first round (the link falls before it answers)."""

    async def barrier(self) -> None:
        self.barriers += 1
        if self.barriers == 1:
            await asyncio.Event().wait()


async def test_dispatcher_survives_a_link_lost_while_it_waits_for_the_server(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    sender = StallingSender()
    now_ms = int(clock.now * 1000)
    dispatcher = Dispatcher(
        keystore.messages, sender, batch=1, rounds_in_flight=0, clock_ms=lambda: now_ms
    )
    entries = await _stored(
        keystore, *((f"m{n}", Priority.NORMAL, now_ms + 60_000) for n in range(3))
    )
    dispatcher.enqueue(entries[:1])
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    dispatcher.link_up()
    await _until(lambda: sender.sent == ["m0"] and sender.barriers == 1)
    # Now waiting for a confirmation that never comes.
    dispatcher.link_down()  # drops (cancels) the round it waits for
    dispatcher.link_up()
    dispatcher.enqueue(entries[1:])
    await _until(lambda: {"m1", "m2"} <= set(sender.sent))
    assert not running.done()
    stop.set()
    await running
