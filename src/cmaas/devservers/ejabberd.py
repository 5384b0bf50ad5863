"""Throwaway ejabberd 23.01 servers on loopback."""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cmaas.devservers._checks import check_username
from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import find_config_dir, make_private_dir, render_template, write_config
from cmaas.devservers._processes import find_instance_pids, output_of, run, signal_pids, which
from cmaas.devservers._server import XmppServer, start_server

_USER = "ejabberd"
_CONFIG = "ejabberd.yml"
_CTL_CONFIG = "ejabberdctl.cfg"
_CTL_TIMEOUT = 60.0
# ejabberdctl points ERL_INETRC at <config dir>/inetrc; without it "localhost" (the host
# part of the node name) is resolved through DNS, which a sandbox may not have.
_INETRC = '{lookup, ["file", "native"]}.\n{host, {127,0,0,1}, ["localhost"]}.\n'


def _new_node_name() -> str:
    # Nodes register their name with the shared epmd, so each instance needs its own.
    return f"cmaas{secrets.token_hex(6)}@localhost"


@dataclass
class EjabberdServer(XmppServer):
    """An ejabberd server started by :func:`start_ejabberd`.

    Runs as the Erlang node ``_node`` (unique per instance), controlled with
    ``ejabberdctl --config-dir <workdir>``, which switches to the user ``ejabberd``.
    ``ejabberdctl start`` exits 0 even when the boot fails, so startup watches the
    beam process, its log and its sockets instead.
    """

    _node: str = field(default_factory=_new_node_name, repr=False)

    _product: ClassVar[str] = "ejabberd"
    # Logged (at critical) when the boot fails, e.g. a port in use or a config error;
    # the node then halts, but only after a few seconds.
    _fatal_markers: ClassVar[tuple[str, ...]] = ("Failed to start ejabberd application",)

    # ejabberdctl stop takes 2 to 4 s; leave room before falling back to SIGKILL.
    _stop_grace: ClassVar[float] = 20.0

    def register_user(self, username: str, password: str) -> None:
        """Create ``username@domain`` with ``ejabberdctl register``, or reset its password.

        The server must be running.

        Args:
            username: Lower-case localpart.
            password: Non-empty password.

        Raises:
            ValueError: If the username or password is unusable.
            DevServerError: If ejabberdctl fails (e.g. the node is not running).
        """
        check_username(username)
        if not password:
            raise ValueError("password must not be empty")
        if not self.is_running():
            raise DevServerError(f"cannot register {username}: ejabberd is not running")
        result = self._ctl("register", username, self.domain, password)
        if result.returncode != 0 and "already registered" in self._tool_output(result):
            result = self._ctl("change_password", username, self.domain, password)
        self._check_exit(f"ejabberdctl register {username}@{self.domain}", result)

    def _ctl(self, *args: str, timeout: float = _CTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        # --config-dir, not --config/--spool: the Debian default file sourced from the
        # config dir would override those.
        return run(
            [which("ejabberdctl"), "--config-dir", str(self.workdir), *args],
            what=f"ejabberdctl {args[0]}",
            timeout=timeout,
            cwd=self.workdir,
        )

    def _tool_output(self, result: subprocess.CompletedProcess[str]) -> str:
        # On usage errors and failed RPCs ejabberdctl appends its whole help text.
        return output_of(result).split("\nCommands to start an ejabberd node:")[0].strip()

    def _write_files(self) -> None:
        config_dir = find_config_dir("ejabberd-config")
        values = {
            **self._template_values(),
            "node": self._node,
            "cookie": secrets.token_hex(16),
            "config_path": self.workdir / _CONFIG,
            "spool_dir": make_private_dir(self.workdir / "spool", _USER),
            "logs_dir": make_private_dir(self.workdir / "logs", _USER),
            "pid_path": make_private_dir(self.workdir / "run", _USER) / "ejabberd.pid",
        }
        write_config(
            self.workdir / _CONFIG,
            render_template(config_dir / "ejabberd.loopback.yml.in", values),
            _USER,
        )
        write_config(
            self.workdir / _CTL_CONFIG,
            render_template(config_dir / "ejabberdctl.cfg.in", values),
            _USER,
        )
        write_config(self.workdir / "inetrc", _INETRC, _USER)

    def _log_path(self) -> Path:
        return self.workdir / "logs" / "ejabberd.log"

    def _server_pids(self) -> list[int]:
        # The node is "beam.smp ... -sname NODE ..."; ejabberdctl's helper nodes carry
        # NODE after -extra and su/erl wrappers have another argv[0].
        return find_instance_pids("beam", "-sname", self._node)

    def _launch(self) -> None:
        self._check_exit("ejabberdctl start", self._ctl("start"))

    def _request_stop(self, pids: Sequence[int]) -> None:
        try:
            stopped = self._ctl("stop", timeout=15.0).returncode == 0
        except DevServerError:
            stopped = False
        if not stopped:
            # The node may not answer RPCs (e.g. still booting or wedged): SIGTERM makes
            # the Erlang VM run init:stop(), the same clean shutdown.
            signal_pids(pids, signal.SIGTERM)


def start_ejabberd(
    workdir: Path,
    *,
    domain: str = "cmaas.test",
    component_domain: str = "gateway.cmaas.test",
    component_secret: str | None = None,
    timeout: float = 60.0,
) -> XmppServer:
    """Start a throwaway ejabberd on 127.0.0.1 with free ports, and wait until it listens.

    The server's files live in a fresh directory under ``/tmp/cmaas-devservers`` (which
    the user ``ejabberd`` can reach, unlike pytest's 0700 tmp dirs); ``workdir`` gets a
    symlink to it and, at interpreter exit, a copy of its logs. The configs are
    ``ejabberd-config/ejabberd.loopback.yml.in`` and ``ejabberdctl.cfg.in`` from the
    source checkout. Besides the three ports of the result, the node uses epmd
    (127.0.0.1:4369, shared by all Erlang nodes and left running) and a random Erlang
    distribution port on 127.0.0.1.

    Args:
        workdir: Caller's directory (created if needed), e.g. a pytest ``tmp_path``.
        domain: User virtual host.
        component_domain: XEP-0114 component domain; must differ from ``domain``.
        component_secret: Component secret; random if None.
        timeout: Seconds to wait for the server to listen, on this and later starts.

    Returns:
        The running server.

    Raises:
        ValueError: If a domain or the secret is unusable.
        DevServerError: If ejabberd is missing and cannot be installed, if not running
            as root, or if the server fails to start (the message ends with the log tail).
    """
    return start_server(
        EjabberdServer, "ejabberd", workdir, domain, component_domain, component_secret, timeout
    )
