"""Throwaway PostgreSQL servers (Debian's packages) on a Unix socket, for tests and the demo.

Usage::

    server = start_postgres()
    url = server.url("postgres")       # postgresql://postgres@/postgres?host=<socket dir>
    server.remove()                    # stop and delete; done at interpreter exit anyway

The server listens on a Unix socket in its own directory and on no TCP port, so no other
user of the machine can reach it and nothing clashes with another instance. It runs as
the user ``postgres`` (``postgres`` refuses to run as root). Durability is switched off:
the data dies with the server, and tests need speed, not crash safety.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import make_private_dir, make_runtime_dir, with_log
from cmaas.devservers._processes import output_of, require_root, run, which
from cmaas.devservers._server import track

__all__ = ["PostgresServer", "find_postgres_bin", "start_postgres"]

_USER = "postgres"
_PORT = 5432
_TOOL_TIMEOUT = 60.0
# Debian installs the server programs per major version, off every PATH.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")


def find_postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb`` and ``pg_ctl``.

    Raises: DevServerError: Debian's ``postgresql`` package is not installed.
    """
    found = [
        path.parent
        for path in _DEBIAN_ROOT.glob("*/bin/pg_ctl")
        if (path.parent / "initdb").exists() and path.parent.parent.name.isdigit()
    ]
    if not found:
        raise DevServerError(
            f"no initdb/pg_ctl under {_DEBIAN_ROOT}: install Debian's postgresql package"
            " (scripts/bootstrap does)"
        )
    return max(found, key=lambda path: int(path.parent.name))


@dataclass
class PostgresServer:
    """A PostgreSQL server started by :func:`start_postgres`.

    Attributes:
        workdir: The server's directory (data, socket, log) under ``/tmp/cmaas-devservers``.
        socket_dir: Where the server's Unix socket is.
        startup_seconds: How long initdb and the first start took.
    """

    workdir: Path
    bin_dir: Path = field(repr=False)
    startup_seconds: float = 0.0

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def _data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "postgres.log"

    def url(self, database: str) -> str:
        """A ``postgresql://`` URL of ``database`` as the superuser, over the socket."""
        return (
            f"postgresql://{_USER}@/{quote(database, safe='')}"
            f"?host={quote(str(self.socket_dir), safe='')}&port={_PORT}"
        )

    def fresh_database(self, name: str) -> str:
        """An empty database ``name`` (dropped first if a former run left it); its URL.

        Raises: psycopg.Error: The server cannot be reached or refuses.
        """
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop the database ``name`` if it exists (PostgreSQL checkpoints as it does).

        Raises: psycopg.Error: The server cannot be reached or refuses.
        """
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def is_running(self) -> bool:
        if not self._data_dir.is_dir():
            return False
        result = self._ctl("status", what="asking whether postgres runs")
        # pg_ctl status: 0 running, 3 not running, 4 no data directory.
        return result.returncode == 0

    def start(self) -> None:
        """Start the server and return once it accepts connections.

        Raises: DevServerError: It did not start (the message ends with its log).
        """
        options = " ".join(
            (
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                f"-p {_PORT}",
                # A throwaway server: what a crash would lose does not matter.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Tests open a few keystores at once, each with up to four connections.
                "-c max_connections=200",
            )
        )
        result = self._ctl(
            "start", "-w", "-t", "30", "-l", str(self.log_path), "-o", options, what="starting"
        )
        if result.returncode != 0:
            raise DevServerError(
                with_log(
                    f"pg_ctl start exited with {result.returncode}: {output_of(result)}",
                    self.log_path,
                )
            )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended). Does nothing if stopped.

        Raises: DevServerError: pg_ctl could not stop it.
        """
        if not self.is_running():
            return
        result = self._ctl("stop", "-w", "-t", "30", "-m", "fast", what="stopping")
        if result.returncode != 0:
            raise DevServerError(
                with_log(
                    f"pg_ctl stop exited with {result.returncode}: {output_of(result)}",
                    self.log_path,
                )
            )

    def remove(self) -> None:
        """Stop the server and delete its directory.

        Raises: DevServerError: As :meth:`stop`.
        """
        self.stop()
        self._archive()

    def _archive(self) -> None:
        # Nothing to keep: the data and the log die with the server.
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _ctl(self, *args: str, what: str) -> subprocess.CompletedProcess[str]:
        return run(
            [
                which("runuser"),
                "-u",
                _USER,
                "--",
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self._data_dir),
                *args,
            ],
            what=f"{what} postgres in {self.workdir}",
            timeout=_TOOL_TIMEOUT,
            cwd=self.workdir,
        )


def start_postgres() -> PostgresServer:
    """Create a fresh cluster (``initdb --no-sync``) and start it on a Unix socket.

    Returns: the running server; it is stopped and removed at interpreter exit.
    Raises:
        DevServerError: Not root, PostgreSQL not installed, or initdb or the start failed.
    """
    require_root()
    bin_dir = find_postgres_bin()
    workdir = make_runtime_dir("postgres", _USER)
    server = PostgresServer(workdir=workdir, bin_dir=bin_dir)
    track(server)
    for name in ("data", "run", "logs"):
        make_private_dir(workdir / name, _USER)
    started = time.monotonic()
    result = run(
        [
            which("runuser"),
            "-u",
            _USER,
            "--",
            str(bin_dir / "initdb"),
            "--no-sync",
            "-D",
            str(workdir / "data"),
            "-U",
            _USER,
            # Trust: the socket's directory is the postgres user's, mode 0700, so only
            # root and postgres can reach the server at all.
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        what="initdb",
        timeout=_TOOL_TIMEOUT,
        cwd=workdir,
    )
    if result.returncode != 0:
        raise DevServerError(f"initdb exited with {result.returncode}: {output_of(result)}")
    server.start()
    server.startup_seconds = time.monotonic() - started
    return server
