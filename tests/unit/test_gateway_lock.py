"""One gateway process per SQLite file (an OS lock beside it); on PostgreSQL, one leader
among the instances (an advisory lock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmaas.keystore import DatabaseInUse, GatewayLock
from cmaas.keystore.postgres import PostgresLeaderLock

from .conftest import PostgresTestDatabase


def test_a_second_hold_is_refused_with_a_message_naming_the_file_and_postgresql(
    tmp_path: Path,
) -> None:
    database = tmp_path / "cmaas.sqlite3"
    first = GatewayLock.take(database)
    try:
        with pytest.raises(DatabaseInUse) as refused:
            GatewayLock.take(database)
        assert str(database) in str(refused.value)
        assert "CMAAS_DATABASE=postgresql://" in str(refused.value)
    finally:
        first.release()
    GatewayLock.take(database).release()


def test_the_hold_ends_with_the_process_that_took_it(tmp_path: Path) -> None:
    """A gateway killed by SIGKILL leaves no stale lock for its restart."""
    database = tmp_path / "cmaas.sqlite3"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from cmaas.keystore import GatewayLock\n"
            "GatewayLock.take(pathlib.Path(sys.argv[1]))\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(DatabaseInUse):
                GatewayLock.take(database)
        finally:
            holder.kill()
    GatewayLock.take(database).release()


async def test_one_leader_per_postgresql_database_until_its_connection_ends(
    postgres_database: PostgresTestDatabase,
) -> None:
    first, second = (PostgresLeaderLock(postgres_database.url) for _ in range(2))
    try:
        assert await first.try_take()
        assert not await second.try_take()
        assert await first.still_held()
        postgres_database.disconnect()  # as if the leader's server connection broke
        assert not await first.still_held()
        assert await second.try_take()
        assert await second.still_held()
    finally:
        await first.release()
        await second.release()
