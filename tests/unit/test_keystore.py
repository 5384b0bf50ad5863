"""The keystore against real databases: SQLite files and PostgreSQL."""

from __future__ import annotations

import ipaddress
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from cmaas.assembly import open_keystore
from cmaas.devservers import PostgresServer
from cmaas.keystore import (
    AppAlreadyExists,
    AppChanges,
    AppNotFound,
    AuthenticationFailed,
    JidAlreadyBound,
    MasterKeyMismatch,
    MasterKeyring,
    NewApp,
    NewMessage,
    Plan,
    PlanNotFound,
    SchemaTooNew,
    SqliteKeystore,
    issue_credentials,
)
from cmaas.keystore.migrations import MIGRATIONS
from cmaas.keystore.postgres import PostgresKeystore
from cmaas.keystore.postgres.migrations import MIGRATIONS as POSTGRES_MIGRATIONS
from cmaas.lifecycle import (
    MessageStatus,
    Priority,
    StatusChange,
)
from cmaas.settings import PostgresDatabase, Settings

from .conftest import AnyKeystore, Database, FakeClock, PostgresTestDatabase

NET = ipaddress.ip_network("203.0.113.0/24")


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


def new_app(app_id: str = "parichay-otp", **kwargs: object) -> NewApp:
    fields: dict[str, object] = {"display_name": "Parichay", "plan": "default"}
    fields.update(kwargs)
    return NewApp(app_id=app_id, **fields)  # type: ignore[arg-type]


async def test_open_applies_migrations_in_wal_mode_with_foreign_keys(
    db_path: Path, sqlite_keystore: SqliteKeystore
) -> None:
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [row[0] for row in raw.execute("SELECT version FROM schema_migrations")]
        tables = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert versions == [m.version for m in MIGRATIONS]
    assert db_path.stat().st_mode & 0o777 == 0o600
    assert {
        "apps",
        "plans",
        "app_credentials",
        "app_networks",
        "app_jids",
        "directory",
        "devices",
        "one_time_prekeys",
        "messages",
        "status_events",
    } <= tables


async def test_postgres_schema_has_sqlite_tables_and_columns(
    db_path: Path, sqlite_keystore: SqliteKeystore, postgres_server: PostgresServer
) -> None:
    """One schema version means one schema: every SQLite table and column exists in
    PostgreSQL, which adds only the ``rowid`` columns that SQLite has implicitly."""
    with sqlite3.connect(db_path) as raw:
        tables = [
            row[0]
            for row in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        ]
        sqlite_columns = {
            (table, row[1])
            for table in tables
            for row in raw.execute(f"PRAGMA table_info({table})")
        }
        (sqlite_version,) = raw.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert len(tables) > 20
    with psycopg.connect(postgres_server.url("cmaas_template")) as pg:
        postgres_columns = {
            (str(table), str(column))
            for table, column in pg.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            ).fetchall()
        }
        postgres_version = pg.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert postgres_columns - sqlite_columns == {("app_credentials", "rowid"), ("devices", "rowid")}
    assert sqlite_columns - postgres_columns == set()
    assert postgres_version == (sqlite_version,) == (POSTGRES_MIGRATIONS[-1].version,)


async def test_reopening_keeps_data_and_does_not_reapply(
    database: Database, master_key: bytes, keystore: AnyKeystore
) -> None:
    await keystore.create_app(new_app(), issue_credentials("cid-1"))
    again = await database.open(MasterKeyring(master_key))
    try:
        assert (await again.get_app("parichay-otp")).client_id == "cid-1"
    finally:
        await again.close()


async def test_newer_schema_is_refused(database: Database, master_key: bytes) -> None:
    store = await database.open(MasterKeyring(master_key))
    await store.close()
    database.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    with pytest.raises(SchemaTooNew):
        await database.open(MasterKeyring(master_key))


async def test_foreign_keys_are_enforced(keystore: AnyKeystore) -> None:
    with pytest.raises(PlanNotFound):
        await keystore.create_app(new_app(plan="gold"), issue_credentials("cid-1"))
    assert await keystore.list_apps() == []


async def test_create_and_read_back(keystore: AnyKeystore) -> None:
    app = await keystore.create_app(
        new_app(networks=(NET,), jids=("bot@cmaas.test",), callback_url="https://a.example/cb"),
        issue_credentials("cid-1"),
    )
    assert app.networks == (NET,)
    assert app.jids == ("bot@cmaas.test",)
    assert app.callback_url == "https://a.example/cb"
    assert not app.suspended
    assert len(app.credentials) == 1 and app.credentials[0].not_after is None
    assert await keystore.get_app("parichay-otp") == app
    assert await keystore.app_for_jid("bot@cmaas.test") == "parichay-otp"


async def test_duplicate_app_and_bound_jid_are_refused_atomically(keystore: AnyKeystore) -> None:
    await keystore.create_app(new_app(jids=("bot@cmaas.test",)), issue_credentials("cid-1"))
    with pytest.raises(AppAlreadyExists):
        await keystore.create_app(new_app(), issue_credentials("cid-2"))
    with pytest.raises(JidAlreadyBound):
        await keystore.create_app(
            new_app("other", jids=("bot@cmaas.test",)), issue_credentials("cid-3")
        )
    assert [a.app_id for a in await keystore.list_apps()] == ["parichay-otp"]


async def test_secrets_are_not_stored_in_clear(
    db_path: Path, sqlite_keystore: SqliteKeystore
) -> None:
    issued = issue_credentials("cid-1")
    await sqlite_keystore.create_app(new_app(), issued)
    # The database file and its WAL, as they are on disk while the gateway runs.
    stored = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.is_file())
    assert b"cid-1" in stored  # the scan does see what was written
    assert issued.client_secret.encode() not in stored
    assert issued.hmac_key not in stored


async def test_authenticate(keystore: AnyKeystore) -> None:
    issued = issue_credentials("cid-1")
    await keystore.create_app(new_app(), issued)
    result = await keystore.authenticate("cid-1", issued.client_secret)
    assert result.app.app_id == "parichay-otp"
    assert result.hmac_key == issued.hmac_key
    with pytest.raises(AuthenticationFailed):
        await keystore.authenticate("cid-1", issued.client_secret + "x")
    with pytest.raises(AuthenticationFailed):
        await keystore.authenticate("cid-unknown", issued.client_secret)


async def test_rotation_keeps_old_credentials_for_the_grace_period(
    keystore: AnyKeystore, clock: FakeClock
) -> None:
    old = issue_credentials("cid-1")
    await keystore.create_app(new_app(), old)
    new = issue_credentials("cid-1")
    app = await keystore.rotate_credentials("parichay-otp", new, int(clock.now) + 60)
    assert len(app.credentials) == 2
    assert (await keystore.authenticate("cid-1", old.client_secret)).hmac_key == old.hmac_key
    assert (await keystore.authenticate("cid-1", new.client_secret)).hmac_key == new.hmac_key
    clock.now += 61
    with pytest.raises(AuthenticationFailed):
        await keystore.authenticate("cid-1", old.client_secret)
    assert (await keystore.authenticate("cid-1", new.client_secret)).hmac_key == new.hmac_key
    assert len((await keystore.get_app("parichay-otp")).credentials) == 1


async def test_rotation_of_unknown_app(keystore: AnyKeystore) -> None:
    with pytest.raises(AppNotFound):
        await keystore.rotate_credentials("nope", issue_credentials("x"), 0)


async def test_master_key_rotation(
    database: Database, master_key: bytes, keystore: AnyKeystore
) -> None:
    issued = issue_credentials("cid-1")
    await keystore.create_app(new_app(), issued)
    new_key = os.urandom(32)

    only_new = await database.open(MasterKeyring(new_key))
    try:
        with pytest.raises(MasterKeyMismatch):
            await only_new.authenticate("cid-1", issued.client_secret)
    finally:
        await only_new.close()

    both = await database.open(MasterKeyring(new_key, previous=master_key))
    try:
        assert await both.rewrap_hmac_keys() == 1
        assert await both.rewrap_hmac_keys() == 0  # idempotent
    finally:
        await both.close()

    rotated = await database.open(MasterKeyring(new_key))
    try:
        assert (
            await rotated.authenticate("cid-1", issued.client_secret)
        ).hmac_key == issued.hmac_key
    finally:
        await rotated.close()


async def test_wrapped_key_is_bound_to_its_row(database: Database, keystore: AnyKeystore) -> None:
    a, b = issue_credentials("cid-a"), issue_credentials("cid-b")
    await keystore.create_app(new_app("app-a"), a)
    await keystore.create_app(new_app("app-b"), b)
    ((wrapped_b,),) = database.execute(
        "SELECT hmac_key FROM app_credentials WHERE app_id = 'app-b'"
    )
    database.execute("UPDATE app_credentials SET hmac_key = ? WHERE app_id = 'app-a'", (wrapped_b,))
    with pytest.raises(MasterKeyMismatch):
        await keystore.authenticate("cid-a", a.client_secret)


async def test_update_app_changes_only_what_is_given(keystore: AnyKeystore) -> None:
    await keystore.set_plan(Plan("gold", 100, 200, None, frozenset(Priority)))
    await keystore.create_app(
        new_app(networks=(NET,), callback_url="https://a.example/cb"), issue_credentials("cid-1")
    )
    app = await keystore.update_app("parichay-otp", AppChanges(plan="gold", suspended=True))
    assert (app.plan, app.suspended, app.networks) == ("gold", True, (NET,))
    app = await keystore.update_app(
        "parichay-otp", AppChanges(networks=(), clear_callback_url=True)
    )
    assert (app.networks, app.callback_url, app.plan) == ((), None, "gold")
    with pytest.raises(PlanNotFound):
        await keystore.update_app("parichay-otp", AppChanges(plan="platinum"))
    with pytest.raises(AppNotFound):
        await keystore.update_app("nope", AppChanges(plan="gold"))


async def test_change_is_seen_by_another_connection_at_once(
    database: Database, master_key: bytes, keystore: AnyKeystore
) -> None:
    await keystore.create_app(new_app(), issue_credentials("cid-1"))
    other = await database.open(MasterKeyring(master_key))
    try:
        assert (await other.get_app("parichay-otp")).plan == "default"
        await keystore.set_plan(Plan("gold", 5, 5, 10, frozenset({Priority.HIGH})))
        await keystore.update_app("parichay-otp", AppChanges(plan="gold"))
        assert (await other.get_app("parichay-otp")).plan == "gold"
        assert (await other.get_plan("gold")).priorities == frozenset({Priority.HIGH})
    finally:
        await other.close()


async def test_plans(keystore: AnyKeystore) -> None:
    default = await keystore.get_plan("default")
    assert default.priorities == frozenset(Priority)
    await keystore.set_plan(Plan("default", 1.5, 3, None, frozenset({Priority.BULK})))
    changed = await keystore.get_plan("default")
    assert (changed.sustained_per_second, changed.burst, changed.daily_quota) == (1.5, 3, None)
    with pytest.raises(PlanNotFound):
        await keystore.get_plan("gold")


async def test_directory(keystore: AnyKeystore) -> None:
    await keystore.set_directory("alice@example.org", "email", "alice@cmaas.test")
    assert await keystore.resolve_address("alice@example.org") == "alice@cmaas.test"
    await keystore.set_directory("alice@example.org", "email", "alice2@cmaas.test")
    assert await keystore.resolve_address("alice@example.org") == "alice2@cmaas.test"
    assert await keystore.remove_directory("alice@example.org")
    assert not await keystore.remove_directory("alice@example.org")
    assert await keystore.resolve_address("alice@example.org") is None


async def test_counters(keystore: AnyKeystore, clock: FakeClock) -> None:
    await keystore.create_app(new_app(), issue_credentials("cid-1"))

    def message(message_id: str) -> NewMessage:
        return NewMessage(
            "parichay-otp",
            message_id,
            "a@b.c",
            "a@b.c",
            Priority.HIGH,
            b"h" + message_id.encode(),
            b"{}",
            int(clock.now * 1000) + 60_000,
            sealed_to=(1,),
        )

    clock.now -= 86400 * 2
    await keystore.messages.submit([message("m3")], daily_quota=None)
    clock.now += 86400 * 2
    await keystore.messages.submit([message("m1"), message("m2")], daily_quota=None)
    read_ms = int(clock.now * 1000)
    for message_id in ("m2", "m3"):
        await keystore.messages.record(
            [StatusChange("parichay-otp", message_id, MessageStatus.READ, read_ms, "1")]
        )
    counters = await keystore.app_counters("parichay-otp")
    assert counters.messages_by_status == {"accepted": 1, "read": 2}
    assert counters.submitted_today == 2


async def test_open_keystore_opens_the_backend_cmaas_database_names(
    database: Database, master_key: bytes, keystore: AnyKeystore
) -> None:
    await keystore.create_app(new_app(), issue_credentials("cid-1"))
    location = database.path if database.backend == "sqlite" else PostgresDatabase(database.url)
    settings = Settings("gateway.example.org", "s3cret", master_key, database=location)
    opened = await open_keystore(settings)
    try:
        assert type(opened) is type(keystore)
        assert (await opened.get_app("parichay-otp")).client_id == "cid-1"
    finally:
        await opened.close()


async def test_a_broken_postgresql_connection_fails_one_call_and_is_opened_again(
    postgres_database: PostgresTestDatabase, master_key: bytes, clock: FakeClock
) -> None:
    postgres_database.reset()
    store = await PostgresKeystore.open(postgres_database.url, MasterKeyring(master_key), clock)
    try:
        await store.create_app(new_app(), issue_credentials("cid-1"))
        assert (await store.get_app("parichay-otp")).client_id == "cid-1"
        postgres_database.disconnect()
        with pytest.raises(psycopg.OperationalError):
            await store.get_app("parichay-otp")
        with pytest.raises(psycopg.OperationalError):
            await store.set_directory("alice@example.org", "email", "alice@cmaas.test")
        # The next reader and writer connect again.
        assert (await store.get_app("parichay-otp")).client_id == "cid-1"
        await store.set_directory("alice@example.org", "email", "alice@cmaas.test")
        assert await store.resolve_address("alice@example.org") == "alice@cmaas.test"
    finally:
        await store.close()


def test_a_dropped_database_is_gone_and_dropping_it_again_is_no_error(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.fresh_database("cmaas_dropped")
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE TABLE kept (n integer)")

    postgres_server.drop_database("cmaas_dropped")
    postgres_server.drop_database("cmaas_dropped")

    with psycopg.connect(postgres_server.url("postgres")) as admin:
        found = admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", ("cmaas_dropped",)
        ).fetchone()
    assert found == (0,)
