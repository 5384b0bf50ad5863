"""Ad-hoc command sessions in the keystore (SQLite and PostgreSQL): bounds counted in
the opening transaction, claims, the owner check, idle and lifetime, and purging."""

from __future__ import annotations

import hashlib

import pytest

from cmaas.component.adhoc.access import AccessPolicy
from cmaas.component.adhoc.engine import AdhocEngine
from cmaas.delivery.maintenance import Housekeeper
from cmaas.keystore import (
    AdhocSession,
    AdhocSessionBounds,
    AdhocSessionLimit,
    AdhocSessionRefusal,
)

from .conftest import AnyKeystore, Database, FakeClock

NOW = 1_800_000_000_000
NODE = "urn:cmaas:cmd:app-update"
ALICE = "alice@cmaas.test/phone"
BOUNDS = AdhocSessionBounds(idle_ms=300_000, lifetime_ms=900_000, per_account=2, per_class=3)


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


def session(owner: str = ALICE, step: str = "start", state: str = "{}") -> AdhocSession:
    return AdhocSession(owner, NODE, step, state)


async def test_a_session_is_claimed_by_its_owner_and_saved_at_its_next_step(
    keystore: AnyKeystore,
) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("id-1", session(), "admin", NOW, BOUNDS)
    claimed = await sessions.claim("id-1", ALICE, NODE, NOW + 1, BOUNDS)
    assert claimed == session()
    # A step runs: the session cannot be claimed again until it is saved.
    assert await sessions.claim("id-1", ALICE, NODE, NOW + 2, BOUNDS) is AdhocSessionRefusal.UNKNOWN
    assert await sessions.save("id-1", "editing", '{"app_id":"otp"}', NOW + 3)
    again = await sessions.claim("id-1", ALICE, NODE, NOW + 4, BOUNDS)
    assert again == session(step="editing", state='{"app_id":"otp"}')
    await sessions.end("id-1")
    assert await sessions.claim("id-1", ALICE, NODE, NOW + 5, BOUNDS) is AdhocSessionRefusal.UNKNOWN
    assert not await sessions.save("id-1", "editing", "{}", None)  # ended meanwhile
    assert await sessions.count() == 0


async def test_only_a_digest_of_the_id_is_stored(keystore: AnyKeystore, database: Database) -> None:
    await keystore.adhoc_sessions.open("secret-session-id", session(), "admin", NOW, BOUNDS)
    stored = database.execute("SELECT session_key, owner, state FROM adhoc_sessions")
    assert stored == [(hashlib.sha256(b"secret-session-id").hexdigest(), ALICE, "{}")]


async def test_another_jid_or_command_is_refused_and_changes_nothing(
    keystore: AnyKeystore,
) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("id-1", session(), "admin", NOW, BOUNDS)
    for intruder in ("alice@cmaas.test/laptop", "alice@cmaas.test", "mallory@cmaas.test/x"):
        refusal = await sessions.claim("id-1", intruder, NODE, NOW, BOUNDS)
        assert refusal is AdhocSessionRefusal.FOREIGN
    other = await sessions.claim("id-1", ALICE, "urn:cmaas:cmd:app-show", NOW, BOUNDS)
    assert other is AdhocSessionRefusal.OTHER_NODE
    # Neither marked it busy: the owner takes the step.
    assert await sessions.claim("id-1", ALICE, NODE, NOW, BOUNDS) == session()


async def test_idle_and_lifetime_bounds(keystore: AnyKeystore) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("idle", session(), "user", NOW, BOUNDS)
    expired = await sessions.claim("idle", ALICE, NODE, NOW + 300_000, BOUNDS)
    assert expired is AdhocSessionRefusal.EXPIRED
    assert await sessions.count() == 0  # deleted by the claim that found it expired

    await sessions.open("busy", session(), "user", NOW, BOUNDS)
    for minutes in (4, 8, 12):  # a submitted form every four minutes keeps it from idling
        assert await sessions.claim("busy", ALICE, NODE, NOW + minutes * 60_000, BOUNDS)
        assert await sessions.save("busy", "start", "{}", NOW + minutes * 60_000)
    # ... but not past its lifetime.
    late = await sessions.claim("busy", ALICE, NODE, NOW + 900_000, BOUNDS)
    assert late is AdhocSessionRefusal.EXPIRED

    await sessions.open("shown", session(), "user", NOW, BOUNDS)
    assert await sessions.claim("shown", ALICE, NODE, NOW + 200_000, BOUNDS)
    assert await sessions.save("shown", "start", "{}", None)  # no form submitted: no activity
    shown = await sessions.claim("shown", ALICE, NODE, NOW + 300_000, BOUNDS)
    assert shown is AdhocSessionRefusal.EXPIRED


async def test_bounds_per_account_and_per_class_count_live_sessions_only(
    keystore: AnyKeystore,
) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("a1", session(), "user", NOW, BOUNDS)
    await sessions.open("a2", session("alice@cmaas.test/laptop"), "user", NOW, BOUNDS)
    with pytest.raises(AdhocSessionLimit) as refused:
        await sessions.open("a3", session("alice@cmaas.test/tablet"), "user", NOW, BOUNDS)
    assert (refused.value.per_account, refused.value.open_sessions) == (True, 2)
    await sessions.open("b1", session("bob@cmaas.test/x"), "user", NOW, BOUNDS)
    with pytest.raises(AdhocSessionLimit) as full:
        await sessions.open("c1", session("carol@cmaas.test/x"), "user", NOW, BOUNDS)
    assert (full.value.per_account, full.value.open_sessions) == (False, 3)
    # Another class has room of its own.
    await sessions.open("c2", session("carol@cmaas.test/x"), "admin", NOW, BOUNDS)
    # Sessions past their idle time count no more, though not yet purged; one whose
    # step runs still counts.
    assert await sessions.claim("a1", ALICE, NODE, NOW + 1, BOUNDS)
    later = NOW + 300_000
    await sessions.open("a3", session("alice@cmaas.test/tablet"), "user", later, BOUNDS)
    await sessions.open("d1", session("dana@cmaas.test/x"), "user", later, BOUNDS)
    with pytest.raises(AdhocSessionLimit) as running:
        await sessions.open("e1", session("erin@cmaas.test/x"), "user", later, BOUNDS)
    assert (running.value.per_account, running.value.open_sessions) == (False, 3)
    assert await sessions.count() == 6


async def test_forget_a_resource_or_an_account(keystore: AnyKeystore) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("phone", session(), "user", NOW, BOUNDS)
    await sessions.open("laptop", session("alice@cmaas.test/laptop"), "user", NOW, BOUNDS)
    await sessions.open("bob", session("bob@cmaas.test/x"), "user", NOW, BOUNDS)
    assert await sessions.forget(ALICE) == 1
    assert await sessions.claim("phone", ALICE, NODE, NOW, BOUNDS) is AdhocSessionRefusal.UNKNOWN
    assert await sessions.forget("alice@cmaas.test") == 1
    assert await sessions.count() == 1


async def test_purge_deletes_expired_sessions_only(keystore: AnyKeystore) -> None:
    sessions = keystore.adhoc_sessions
    await sessions.open("old", session(), "user", NOW, BOUNDS)
    await sessions.open("stuck", session("bob@cmaas.test/x"), "user", NOW, BOUNDS)
    assert await sessions.claim("stuck", "bob@cmaas.test/x", NODE, NOW, BOUNDS)
    await sessions.open("new", session("carol@cmaas.test/x"), "user", NOW + 200_000, BOUNDS)
    # Idle: "old". A step still running ("stuck") is not idle, until its lifetime ends.
    assert await sessions.purge(NOW + 300_000, BOUNDS) == 1
    assert await sessions.purge(NOW + 900_000, BOUNDS) == 2
    assert await sessions.count() == 0


async def test_housekeeping_purges_the_engines_expired_sessions(keystore: AnyKeystore) -> None:
    sessions = keystore.adhoc_sessions
    clock = FakeClock(NOW / 1000)
    engine = AdhocEngine(
        [], AccessPolicy(frozenset(), frozenset(), keystore), sessions, 300, clock=clock
    )
    await sessions.open("old", session(), "user", NOW, BOUNDS)
    await sessions.open("new", session(), "user", NOW + 100_000, BOUNDS)
    housekeeper = Housekeeper(
        keystore.messages, retention_s=86400.0, purge_sessions=engine.purge_expired
    )
    clock.now += 300
    await housekeeper.tidy(purge=False)  # the frequent rounds leave sessions alone
    assert await sessions.count() == 2
    await housekeeper.tidy(purge=True)
    assert await sessions.count() == 1
    assert await sessions.claim("new", ALICE, NODE, NOW + 300_000, BOUNDS) == session()
