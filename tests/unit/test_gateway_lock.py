"""One gateway process per SQLite file: an OS lock beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmaas.keystore import DatabaseInUse, GatewayLock


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
