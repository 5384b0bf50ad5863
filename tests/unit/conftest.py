"""Unit-test fixtures: real SQLite files in a temporary directory, a controllable clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cmaas.admin import AdminService
from cmaas.keystore import MasterKeyring, SqliteKeystore


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
async def keystore(
    db_path: Path, master_key: bytes, clock: FakeClock
) -> AsyncIterator[SqliteKeystore]:
    store = await SqliteKeystore.open(db_path, MasterKeyring(master_key), clock)
    yield store
    await store.close()


@pytest.fixture
def service(keystore: SqliteKeystore) -> AdminService:
    return AdminService(keystore)
