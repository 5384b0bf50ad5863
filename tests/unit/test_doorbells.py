"""Doorbells: the poll floor under a reader that no ring reaches, wake-ups that keep
readers waiting, and the PostgreSQL relay that coalesces rings into notifications and
carries them between instances (on a real server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from cmaas.delivery.doorbells import Doorbells
from cmaas.keystore.postgres.bells import MAX_PAYLOAD_BYTES, PostgresBellRelay, payloads

from .conftest import PostgresTestDatabase


class Mailbox:
    """What a reader finds: nothing until ``fill``; counts its reads."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.reads = 0

    async def read(self) -> list[str]:
        self.reads += 1
        return list(self.items)


async def test_the_poll_floor_finds_what_no_ring_announced() -> None:
    bells = Doorbells(poll_floor_s=0.05)
    mailbox = Mailbox()
    reading = asyncio.create_task(bells.read("shop", mailbox.read, wait_s=30))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    mailbox.items.append("committed elsewhere, its ring lost")
    assert await asyncio.wait_for(reading, 5) == ["committed elsewhere, its ring lost"]
    assert time.monotonic() - started < 1.0
    assert mailbox.reads >= 2


async def test_without_a_floor_only_a_ring_or_the_wait_ends_a_read() -> None:
    bells = Doorbells()
    mailbox = Mailbox()
    mailbox.items.append("unannounced")
    # The first read finds it at once; a second reader, once it is gone, waits it out.
    assert await bells.read("shop", mailbox.read, wait_s=0.2) == ["unannounced"]
    mailbox.items.clear()
    started = time.monotonic()
    assert await bells.read("shop", mailbox.read, wait_s=0.2) == []
    assert time.monotonic() - started >= 0.2
    assert mailbox.reads == 3  # the first read, and the second reader's two


async def test_wake_all_rereads_and_keeps_waiting_and_a_ring_answers() -> None:
    bells = Doorbells()
    mailbox = Mailbox()
    reading = asyncio.create_task(bells.read("shop", mailbox.read, wait_s=30))
    await asyncio.sleep(0.02)
    bells.wake_all()  # a listener reconnected: read again, nothing yet
    await asyncio.sleep(0.02)
    assert mailbox.reads == 2 and not reading.done()
    bells.ring("other app")
    await asyncio.sleep(0.02)
    assert mailbox.reads == 2 and not reading.done()
    mailbox.items.append("answer")
    bells.ring("shop")
    assert await asyncio.wait_for(reading, 5) == ["answer"]


async def test_release_answers_every_reader_with_what_it_has() -> None:
    bells = Doorbells(poll_floor_s=10)
    mailbox = Mailbox()
    readers = [asyncio.create_task(bells.read(app, mailbox.read, wait_s=30)) for app in ("a", "b")]
    await asyncio.sleep(0.02)
    bells.release()
    assert await asyncio.wait_for(asyncio.gather(*readers), 5) == [[], []]


def test_payloads_stay_under_postgresqls_limit_and_carry_every_key() -> None:
    rings = {
        "events": {f"app-{n:04d}-" + "x" * 40 for n in range(400)},
        "omemo_inbound": {"shop", "bank"},
    }
    sent = list(payloads("17", rings))
    assert len(sent) > 1
    carried: dict[str, set[str]] = {}
    for payload in sent:
        assert len(payload.encode()) <= MAX_PAYLOAD_BYTES < 8000
        message = json.loads(payload)
        assert message["from"] == "17"
        for bells, keys in message["rings"].items():
            carried.setdefault(bells, set()).update(keys)
    assert carried == rings
    assert list(payloads("17", {"events": {"y" * 9000}})) == []


@asynccontextmanager
async def running(*relays: PostgresBellRelay) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        for relay in relays:
            await asyncio.wait_for(relay.listening.wait(), 10)
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _recorder(into: list[str]) -> Callable[[str], None]:
    return into.append


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_rings_coalesce_into_one_notification_and_reach_the_other_instance(
    postgres_database: PostgresTestDatabase,
) -> None:
    here = PostgresBellRelay(postgres_database.url, "1", coalesce_s=0.05)
    there = PostgresBellRelay(postgres_database.url, "2")
    rung_here: list[str] = []
    rung_there: list[str] = []
    here.subscribe("events", _recorder(rung_here), lambda: None)
    there.subscribe("events", _recorder(rung_there), lambda: None)
    there.subscribe("omemo_inbound", _recorder(rung_there), lambda: None)
    async with running(here, there):
        for n in range(50):
            here.publish("events", f"app-{n}")
        here.publish("events", "app-0")
        here.publish("omemo_inbound", "shop")
        await _until(lambda: len(rung_there) == 51)
        assert sorted(rung_there) == sorted([f"app-{n}" for n in range(50)] + ["shop"])
        assert here.sent == 1 and there.received == 1
        # An instance's own notification rings nothing there twice: "mine" is committed
        # before "theirs", and notifications arrive in commit order.
        there.publish("events", "mine")
        await _until(lambda: there.sent == 1)
        here.publish("events", "theirs")
        await _until(lambda: "theirs" in rung_there)
        assert "mine" not in rung_there and rung_here == ["mine"]


async def test_a_lost_listener_reconnects_and_wakes_every_reader(
    postgres_database: PostgresTestDatabase,
) -> None:
    relay = PostgresBellRelay(postgres_database.url, "1", retry_s=0.05)
    sender = PostgresBellRelay(postgres_database.url, "2", retry_s=0.05)
    bells = Doorbells("events", relay)
    mailbox = Mailbox()
    async with running(relay, sender):
        reading = asyncio.create_task(bells.read("shop", mailbox.read, wait_s=30))
        await _until(lambda: mailbox.reads == 1)
        postgres_database.disconnect()  # as a server restart would
        # The reader reads again once the listener is back, and goes on waiting.
        await _until(lambda: mailbox.reads == 2)
        await _until(lambda: relay.listening.is_set() and sender.listening.is_set())
        assert not reading.done()
        mailbox.items.append("answer")
        sender.publish("events", "shop")
        assert await asyncio.wait_for(reading, 10) == ["answer"]
        await _until(lambda: sender.sent == 1)
