"""Gateway instances sharing one database, on both backends: registration, heartbeats,
fencing, and the takeover of a dead instance's pending messages (one winner when two
survivors race)."""

from __future__ import annotations

import asyncio

import pytest

from cmaas.keystore import MasterKeyring, MessageRecord, NewApp, NewMessage, issue_credentials
from cmaas.lifecycle import MessageStatus, Priority, StatusChange

from .conftest import AnyKeystore, Database, FakeClock

APP = "bank"
ALICE = "alice@cmaas.test"
DEAD_AFTER_MS = 10_000
WINDOW_MS = 15_000


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


@pytest.fixture
async def app(keystore: AnyKeystore) -> str:
    await keystore.create_app(NewApp(APP, "Bank", "default"), issue_credentials("cid"))
    return APP


def message(message_id: str) -> NewMessage:
    return NewMessage(
        APP,
        message_id,
        ALICE,
        ALICE,
        Priority.NORMAL,
        b"sha:" + message_id.encode(),
        b"{}",
        1_900_000_000_000,
        sealed_to=(1,),
    )


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
    keystore: AnyKeystore, database: Database, master_key: bytes, clock: FakeClock, app: str
) -> None:
    other = await database.open(MasterKeyring(master_key), clock)
    try:
        dead = await keystore.messages.register_instance("gw-a")
        left = await keystore.messages.register_instance("gw-b")
        right = await other.messages.register_instance("gw-c")
        await submit_as(keystore, dead, *(f"m{n}" for n in range(20)))
        silence(database, dead)
        outcomes = await asyncio.gather(
            keystore.messages.take_over(left, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS),
            other.messages.take_over(right, WINDOW_MS, dead_after_ms=DEAD_AFTER_MS),
        )
    finally:
        await other.close()
    winners = [outcome for outcome in outcomes if outcome.fenced]
    losers = [outcome for outcome in outcomes if not outcome.fenced]
    assert len(winners) == len(losers) == 1
    assert winners[0].fenced == [dead]
    assert len(winners[0].accepted) == 20
    assert (losers[0].accepted, losers[0].resend) == ([], [])
    winner = left if outcomes[0].fenced else right
    assert set(owners(database).values()) == {winner}
