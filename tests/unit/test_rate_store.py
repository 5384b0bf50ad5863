"""Rate buckets in the database, on both backends: a take in one transaction on the
key's row, refills in the database's time, concurrent instances that together grant no
more than one bucket holds, PostgreSQL's takes beside the global write lock, and the
purge of buckets that have refilled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from cmaas.delivery.maintenance import Housekeeper
from cmaas.delivery.ratelimit import SharedBuckets
from cmaas.keystore import MasterKeyring, Plan
from cmaas.keystore.postgres._connection import _WRITE_LOCK
from cmaas.lifecycle import Priority

from .conftest import AnyKeystore, Database, FakeClock, PostgresTestDatabase

KEY = "submit:bank"


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


@pytest.fixture
def postgres(postgres_database: PostgresTestDatabase, tmp_path: Path) -> Database:
    """The session's PostgreSQL test database alone, as migrated."""
    postgres_database.reset()
    return Database("postgres", tmp_path / "unused.sqlite3", postgres_database.url)


def age(database: Database, key: str, seconds: float) -> None:
    """Date the bucket's last take ``seconds`` earlier, as if that much time passed."""
    database.execute(
        "UPDATE rate_buckets SET updated_ms = updated_ms - ?, full_ms = full_ms - ? WHERE key = ?",
        (int(seconds * 1000), int(seconds * 1000), key),
    )


async def test_a_new_bucket_is_full_and_refills_at_the_rate(
    keystore: AnyKeystore, database: Database
) -> None:
    rates = keystore.rates
    # A slow rate: on PostgreSQL real time passes between the takes.
    first = await rates.take(KEY, 0.5, 5, 3)
    assert (first.granted, first.retry_after) == (3, 0.0)
    short = await rates.take(KEY, 0.5, 5, 4)
    assert short.granted == 2
    assert short.retry_after == pytest.approx(4.0, abs=0.5)  # two more at 0.5/s
    age(database, KEY, 6)  # three tokens refilled
    assert (await rates.take(KEY, 0.5, 5, 10)).granted == 3
    age(database, KEY, 3600)
    assert (await rates.take(KEY, 0.5, 5, 10)).granted == 5  # capped at the burst
    assert (await rates.take("submit:other", 0.5, 5, 10)).granted == 5  # a bucket per key


async def test_two_instances_taking_at_once_grant_one_burst_in_all(
    keystore: AnyKeystore, database: Database, other_keystore: AnyKeystore
) -> None:
    # A slow rate: what the takes themselves last refills less than one token.
    takes = await asyncio.gather(
        *(
            store.rates.take(KEY, 0.01, 20, 1)
            for _ in range(15)
            for store in (keystore, other_keystore)
        )
    )
    assert sum(took.granted for took in takes) == 20
    assert database.execute("SELECT count(*) FROM rate_buckets") == [(1,)]


async def test_the_shared_limiter_charges_the_plan(keystore: AnyKeystore) -> None:
    plan = Plan("small", 0.5, 2, None, frozenset(Priority))
    buckets = SharedBuckets(keystore.rates)
    assert await buckets.take(KEY, plan, 1) == (1, 0.0)
    granted, retry_after = await buckets.take(KEY, plan, 3)
    assert granted == 1
    assert 3.9 < retry_after <= 4.0  # two more at 0.5/s


async def test_buckets_that_refilled_are_purged_and_come_back_full(
    keystore: AnyKeystore, database: Database
) -> None:
    rates = keystore.rates
    await rates.take(KEY, 1.0, 10, 10)
    await rates.take("blob:bank", 1.0, 10, 1)  # full again a second later
    assert await rates.purge_full() == 0
    age(database, "blob:bank", 1.0)
    assert await rates.purge_full() == 1
    assert database.execute("SELECT key FROM rate_buckets") == [(KEY,)]
    age(database, KEY, 10.0)
    assert await rates.purge_full() == 1
    assert (await rates.take(KEY, 1.0, 10, 10)).granted == 10


async def test_postgres_takes_in_the_databases_time_whatever_the_instances_clock(
    postgres: Database, master_key: bytes
) -> None:
    # SQLite has one gateway process per file: its clock is the clock.
    database = postgres
    skewed = await database.open(MasterKeyring(master_key), FakeClock(time.time() + 3600))
    try:
        before_ms = time.time() * 1000
        await skewed.rates.take(KEY, 1.0, 10, 10)
        after_ms = time.time() * 1000
        # An hour ahead, the refill would have been a full burst: none was granted.
        assert (await skewed.rates.take(KEY, 1.0, 10, 1)).granted == 0
    finally:
        await skewed.close()
    ((updated_ms,),) = database.execute("SELECT updated_ms FROM rate_buckets")
    # The server runs on this machine's clock; the instance's was an hour ahead.
    assert before_ms - 1000 <= updated_ms <= after_ms + 1000


async def test_postgres_takes_do_not_wait_for_the_global_write_lock(
    postgres: Database, master_key: bytes
) -> None:
    # SQLite locks the whole file for every write: no such path there.
    keystore = await postgres.open(MasterKeyring(master_key))
    try:
        await _take_while_another_instance_writes(keystore, postgres.url)
    finally:
        await keystore.close()


async def _take_while_another_instance_writes(keystore: AnyKeystore, url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url) as holder:
        # Another instance's write transaction, in progress.
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
        took = await asyncio.wait_for(keystore.rates.take(KEY, 1.0, 10, 1), timeout=10)
        assert took.granted == 1
        writing = asyncio.create_task(keystore.set_plan(Plan("p", 1.0, 1, None, frozenset())))
        await asyncio.sleep(0.3)
        assert not writing.done()  # the global lock is held: ordinary writes wait
        await holder.rollback()
    await asyncio.wait_for(writing, timeout=10)


async def test_housekeeping_purges_the_buckets_that_refilled(
    keystore: AnyKeystore, database: Database
) -> None:
    await keystore.rates.take(KEY, 1.0, 10, 10)
    await keystore.rates.take("keys:bank", 1.0, 10, 10)
    age(database, KEY, 10.0)
    housekeeper = Housekeeper(keystore.messages, retention_s=86400, rates=keystore.rates)
    await housekeeper.tidy(purge=True)
    assert database.execute("SELECT key FROM rate_buckets") == [("keys:bank",)]
