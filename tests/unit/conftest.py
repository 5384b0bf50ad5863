"""Unit-test fixtures: real SQLite files in a temporary directory, real PostgreSQL
databases on a throwaway server (one per session, one database per test), a
controllable clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cmaas.admin import AdminService
from cmaas.devservers import DevServerError, PostgresServer, start_postgres
from cmaas.keystore import App, MasterKeyring, NewApp, SqliteKeystore, issue_credentials
from cmaas.keystore.postgres import PostgresKeystore
from cmaas.wire import OmemoBundle
from tests.omemo_bundles import bundle_json

AnyKeystore = SqliteKeystore | PostgresKeystore
"""A keystore of either backend, as the tests that run against both see it."""

OMEMO_APP_DEVICE = 7
"""The OMEMO device the ``omemo_app`` fixture's app has published."""


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cmaas.sqlite3"


@pytest.fixture
async def sqlite_keystore(
    db_path: Path, master_key: bytes, clock: FakeClock
) -> AsyncIterator[SqliteKeystore]:
    store = await SqliteKeystore.open(db_path, MasterKeyring(master_key), clock)
    yield store
    await store.close()


@pytest.fixture
def keystore(sqlite_keystore: SqliteKeystore) -> SqliteKeystore:
    """The SQLite keystore; the store tests override this with :func:`any_keystore`."""
    return sqlite_keystore


@pytest.fixture
def service(keystore: SqliteKeystore) -> AdminService:
    return AdminService(keystore)


@pytest.fixture
async def omemo_app(keystore: SqliteKeystore) -> App:
    """App ``otp`` with OMEMO device :data:`OMEMO_APP_DEVICE` published."""
    await keystore.create_app(NewApp("otp", "OTP", "default"), issue_credentials("cid-otp"))
    bundle = OmemoBundle.from_json(bundle_json(), device_id=OMEMO_APP_DEVICE)
    await keystore.omemo.publish("otp", bundle, max_devices=4, max_prekeys=10)
    return await keystore.get_app("otp")


@dataclass(frozen=True)
class PostgresTestDatabase:
    """The session's PostgreSQL server, the migrated template database, and the one
    database the tests use, put back as the template before each test."""

    server: PostgresServer
    url: str
    _reset: bytes

    def reset(self) -> None:
        """Empty every table, restart every sequence and put the template's rows back.

        A few milliseconds, where ``CREATE DATABASE ... TEMPLATE`` takes 0.3 s here
        (it checkpoints, or writes the copy through the WAL).
        """
        # A test that failed may have left a connection open, holding locks.
        self.disconnect()
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(self._reset)

    def disconnect(self) -> None:
        """End every session on the test database, as a server restart would."""
        with psycopg.connect(self.server.url("postgres"), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid != pg_backend_pid()",
                (_TEST_DB,),
            )


_TEMPLATE_DB = "cmaas_template"
_TEST_DB = "cmaas_test"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresTestDatabase]:
    """A PostgreSQL server for the session, a migrated template database and the
    tests' database, made from the template."""
    try:
        server = start_postgres()
    except DevServerError as error:
        pytest.fail(f"PostgreSQL could not start (scripts/bootstrap installs it): {error}")
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {_TEMPLATE_DB}")

        async def migrate() -> None:
            store = await PostgresKeystore.open(
                server.url(_TEMPLATE_DB), MasterKeyring(os.urandom(32))
            )
            await store.close()

        # The session fixture is synchronous (one server for every event loop).
        asyncio.run(migrate())
        admin.execute(f"CREATE DATABASE {_TEST_DB} TEMPLATE {_TEMPLATE_DB}")
    with psycopg.connect(server.url(_TEMPLATE_DB)) as template:
        reset = _reset_script(template)
    yield PostgresTestDatabase(server, server.url(_TEST_DB), reset)
    server.remove()


@pytest.fixture(scope="session")
def postgres_server(postgres_database: PostgresTestDatabase) -> PostgresServer:
    return postgres_database.server


def _reset_script(template: psycopg.Connection[tuple[Any, ...]]) -> bytes:
    """One script that makes a database made from ``template`` as the template is."""
    tables = [
        str(row[0])
        for row in template.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    ]
    sequences = [
        str(row[0])
        for row in template.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        )
    ]
    # Foreign keys are not checked while everything goes: replica mode skips their
    # triggers.
    statements: list[sql.Composable] = [sql.SQL("SET LOCAL session_replication_role = replica")]
    statements += [sql.SQL("DELETE FROM {}").format(sql.Identifier(t)) for t in tables]
    statements += [
        sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(q)) for q in sequences
    ]
    for table in tables:
        for row in template.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
            statements.append(
                sql.SQL("INSERT INTO {} VALUES ({})").format(
                    sql.Identifier(table), sql.SQL(", ").join(sql.Literal(v) for v in row)
                )
            )
    script = sql.SQL("; ").join(statements).as_string(template)
    return f"BEGIN; {script}; COMMIT".encode()


@dataclass
class Database:
    """One test's database on one backend: keystores can be opened on it, and raw SQL
    (``?`` placeholders, SQLite style) run on it behind their backs."""

    backend: str
    path: Path
    url: str

    async def open(
        self, keyring: MasterKeyring, clock: Callable[[], float] = time.time
    ) -> AnyKeystore:
        if self.backend == "sqlite":
            return await SqliteKeystore.open(self.path, keyring, clock)
        return await PostgresKeystore.open(self.url, keyring, clock)

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; returns its rows, if any."""
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as raw, raw:
                # As the keystore's own connections do.
                raw.execute("PRAGMA foreign_keys = ON")
                return list(raw.execute(statement, parameters).fetchall())
        with psycopg.connect(self.url, autocommit=True) as pg:
            cursor = pg.execute(statement.replace("?", "%s").encode(), parameters)
            return list(cursor.fetchall()) if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, db_path: Path) -> Database:
    """A fresh database on each backend: SQLite's file at ``db_path``, or the session's
    PostgreSQL test database, as its migrated template is."""
    if request.param == "sqlite":
        return Database("sqlite", db_path, "")
    postgres: PostgresTestDatabase = request.getfixturevalue("postgres_database")
    postgres.reset()
    return Database("postgres", db_path, postgres.url)


@pytest.fixture
async def any_keystore(
    database: Database, master_key: bytes, clock: FakeClock
) -> AsyncIterator[AnyKeystore]:
    """A keystore on each backend in turn (test ids ``sqlite`` and ``postgres``)."""
    store = await database.open(MasterKeyring(master_key), clock)
    yield store
    await store.close()


@pytest.fixture
async def other_keystore(
    any_keystore: AnyKeystore, database: Database, master_key: bytes, clock: FakeClock
) -> AsyncIterator[AnyKeystore]:
    """A second keystore on :func:`any_keystore`'s database, as another gateway
    instance (or process) opens it."""
    store = await database.open(MasterKeyring(master_key), clock)
    yield store
    await store.close()
