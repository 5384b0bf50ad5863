"""Unit-test fixtures: real SQLite files in a temporary directory, a controllable clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cmaas.admin import AdminService
from cmaas.keystore import App, MasterKeyring, NewApp, SqliteKeystore, issue_credentials
from cmaas.wire import OmemoBundle
from tests.omemo_bundles import bundle_json

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
async def keystore(
    db_path: Path, master_key: bytes, clock: FakeClock
) -> AsyncIterator[SqliteKeystore]:
    store = await SqliteKeystore.open(db_path, MasterKeyring(master_key), clock)
    yield store
    await store.close()


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
