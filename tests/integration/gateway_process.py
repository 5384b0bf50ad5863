"""Runs ``cmaas gateway run`` as a real process, the way an operator does."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cmaas.devservers import XmppServer, cmaas_executable, free_port


class GatewayProcess:
    """One gateway process against ``server``, with its own database and log file."""

    def __init__(self, server: XmppServer, workdir: Path, *, admins: str, log_level: str = "INFO"):
        self.server = server
        self.workdir = workdir
        self.database = workdir / "cmaas.sqlite3"
        self.log_path = workdir / "gateway.log"
        self.master_key = os.urandom(32)
        self.http_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
            "CMAAS_COMPONENT_JID": server.component_domain,
            "CMAAS_COMPONENT_SECRET": server.component_secret,
            "CMAAS_XMPP_HOST": server.host,
            "CMAAS_XMPP_PORT": str(server.component_port),
            "CMAAS_DATABASE": str(self.database),
            "CMAAS_ADMINS": admins,
            "CMAAS_MASTER_KEY": base64.b64encode(self.master_key).decode(),
            "CMAAS_HTTP_HOST": "127.0.0.1",
            "CMAAS_HTTP_PORT": str(self.http_port),
            "CMAAS_LOG_LEVEL": log_level,
            "CMAAS_RECONNECT_MAX_DELAY": "2",
            # Tests take the webhook endpoint down and up again: retry within a second.
            "CMAAS_WEBHOOK_MAX_BACKOFF": "1",
        }
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 30.0, *, wait: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [cmaas_executable(), "--env-file", os.devnull, "gateway", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        if wait:
            self.wait_healthy(within)

    def wait_healthy(self, within: float = 30.0) -> dict[str, Any]:
        """Wait until ``/healthz`` says the component link is up.

        Raises:
            AssertionError: The process died, or the link did not come up in time.
        """
        deadline = time.monotonic() + within
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self._process.returncode}:\n{self.log()}"
                )
            last = self.health()
            if last.get("component_link") == "connected":
                return last
            time.sleep(0.1)
        raise AssertionError(f"gateway link not up after {within} s ({last}):\n{self.log()}")

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as error:
            with error:
                return dict(json.load(error))
        except OSError:
            return {}

    def stop(self, within: float = 15.0) -> int:
        """SIGTERM, as systemd does; returns the exit status."""
        if self._process is None:
            return 0
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"gateway ignored SIGTERM for {within} s:\n{self.log()}") from None

    def children(self) -> list[int]:
        """The gateway's child processes (its admission workers), by pid."""
        if self._process is None:
            return []
        pids: list[int] = []
        for task in Path(f"/proc/{self._process.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in task.read_text().split()]
        return pids

    @staticmethod
    def running(pid: int) -> bool:
        """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean-up runs."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``cmaas admin ...`` against this gateway's database, as an operator runs it."""
        return subprocess.run(
            [cmaas_executable(), "--env-file", os.devnull, "admin", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
