"""Throwaway Prosody 0.12 servers on loopback."""

from __future__ import annotations

import functools
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cmaas.devservers._checks import check_username
from cmaas.devservers._files import find_config_dir, make_private_dir, render_template, write_config
from cmaas.devservers._processes import find_instance_pids, run, signal_pids, which
from cmaas.devservers._server import XmppServer, start_server

_USER = "prosody"
_TEMPLATE = "prosody.loopback.cfg.lua.in"
_CONFIG = "prosody.cfg.lua"
_TOOL_TIMEOUT = 30.0


@dataclass
class ProsodyServer(XmppServer):
    """A Prosody server started by :func:`start_prosody`.

    Prosody refuses to run as root, so it runs daemonized (``prosody -D``) as the user
    ``prosody`` through ``runuser``. A port it cannot bind is only logged, hence the
    log check during startup. The config is
    ``prosody-config/prosody.loopback.cfg.lua.in`` from the source checkout.
    """

    kind: ClassVar[Literal["prosody"]] = "prosody"
    _product: ClassVar[str] = "Prosody"
    _websocket_path: ClassVar[str] = "/xmpp-websocket"
    _fatal_markers: ClassVar[tuple[str, ...]] = (
        "Failed to open server port",
        "Error binding encrypted port",
        "Couldn't write pidfile",
        "Failed to daemonize",
    )

    @property
    def _config_path(self) -> Path:
        return self.workdir / _CONFIG

    def register_user(self, username: str, password: str) -> None:
        """Create ``username@domain`` with ``prosodyctl register`` (overwrites the password).

        Works whether or not the server is running: prosodyctl writes the account files
        that the server reads at login.

        Args:
            username: Lower-case localpart.
            password: Non-empty password.

        Raises:
            ValueError: If the username or password is unusable.
            DevServerError: If prosodyctl fails.
        """
        check_username(username)
        if not password:
            raise ValueError("password must not be empty (prosodyctl would prompt for one)")
        result = run(
            [
                *self._as_prosody(),
                which("prosodyctl"),
                "--config",
                str(self._config_path),
                "register",
                username,
                self.domain,
                password,
            ],
            what=f"registering {username}@{self.domain}",
            timeout=_TOOL_TIMEOUT,
            cwd=self.workdir,
        )
        self._check_exit(f"prosodyctl register {username}@{self.domain}", result)

    def _as_prosody(self) -> list[str]:
        return [which("runuser"), "-u", _USER, "--"]

    def _write_files(self) -> None:
        run_dir = make_private_dir(self.workdir / "run", _USER)
        data_dir = make_private_dir(self.workdir / "data", _USER)
        logs_dir = make_private_dir(self.workdir / "logs", _USER)
        config = render_template(
            find_config_dir("prosody-config") / _TEMPLATE,
            {
                **self._template_values(),
                "pidfile": run_dir / "prosody.pid",
                "admin_socket": run_dir / "prosody.sock",
                "data_dir": data_dir,
                "log_file": logs_dir / "prosody.log",
                "certs_dir": make_private_dir(self.workdir / "certs", _USER),
            },
        )
        write_config(self._config_path, config, _USER)

    def _log_path(self) -> Path:
        return self.workdir / "logs" / "prosody.log"

    def _server_pids(self) -> list[int]:
        # The daemon is "lua5.4 /usr/bin/prosody -D --config CFG"; the runuser and
        # prosodyctl processes carry the same --config but another argv[0].
        return find_instance_pids("lua", "--config", str(self._config_path))

    def _launch(self) -> None:
        # -D returns once the daemon has forked; config errors surface here with rc != 0.
        result = run(
            [*self._as_prosody(), which("prosody"), "-D", "--config", str(self._config_path)],
            what="starting prosody",
            timeout=_TOOL_TIMEOUT,
            cwd=self.workdir,
        )
        self._check_exit("prosody -D", result)

    def _request_stop(self, pids: Sequence[int]) -> None:
        signal_pids(pids, signal.SIGTERM)


# The one launcher, for Prosody; ProsodyServer holds what differs from ejabberd.
start_prosody = functools.partial(start_server, ProsodyServer)
