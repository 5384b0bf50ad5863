"""Unit-test fixtures: real SQLite files in a temporary directory, real PostgreSQL
databases on a throwaway server (one per session, one database per test), a
controllable clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cmaas.admin import AdminService
from cmaas.devservers import DevServerError, PostgresServer, start_postgres
from cmaas.keystore import App, MasterKeyring, NewApp, SqliteKeystore, issue_credentials
from cmaas.keystore.postgres import PostgresKeystore
from cmaas.wire import OmemoBundle
from tests.omemo_bundles import bundle_json

AnyKeystore = SqliteKeystore | PostgresKeystore
"""A keystore of either backend, as the tests that run against both see it."""

_TEMPLATE_DB = "cmaas_template"
_test_databases = itertools.count(1)

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, with a migrated template database."""
    try:
        server = start_postgres()
    except DevServerError as error:
        pytest.fail(f"PostgreSQL could not start (scripts/bootstrap installs it): {error}")
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {_TEMPLATE_DB}")

    async def migrate() -> None:
        store = await PostgresKeystore.open(server.url(_TEMPLATE_DB), MasterKeyring(os.urandom(32)))
        await store.close()

    # The session fixture is synchronous (one server for every event loop).
    asyncio.run(migrate())
    yield server
    server.remove()


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

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; returns its rows, if any."""
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as raw, raw:
                # As the keystore's own connections do.
                raw.execute("PRAGMA foreign_keys = ON")
                return list(raw.execute(sql, parameters).fetchall())
        with psycopg.connect(self.url, autocommit=True) as pg:
            cursor = pg.execute(sql.replace("?", "%s").encode(), parameters)
            return list(cursor.fetchall()) if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Database]:
    """A fresh database on each backend: SQLite's file at ``db_path``, or a PostgreSQL
    database copied from the migrated template."""
    if request.param == "sqlite":
        yield Database("sqlite", db_path, "")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"cmaas_test_{os.getpid()}_{next(_test_databases)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        # FILE_COPY copies the template's files after a checkpoint, where WAL_LOG (the
        # default) writes the whole copy, system catalogs included, through the WAL: 17 ms
        # against 180 ms on an idle server, about 0.15 s each after tests have written.
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE_DB} STRATEGY FILE_COPY".encode())
    yield Database("postgres", db_path, server.url(name))
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@pytest.fixture
async def any_keystore(
    database: Database, master_key: bytes, clock: FakeClock
) -> AsyncIterator[AnyKeystore]:
    """A keystore on each backend in turn (test ids ``sqlite`` and ``postgres``)."""
    store = await database.open(MasterKeyring(master_key), clock)
    yield store
    await store.close()
