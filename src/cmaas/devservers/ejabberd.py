"""Throwaway ejabberd 23.01 servers on loopback."""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from cmaas.devservers._checks import check_domain, check_username
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
    beam process, its log and its sockets instead. The configs are
    ``ejabberd-config/ejabberd.loopback.yml.in`` and ``ejabberdctl.cfg.in`` from the
    source checkout. Besides the three ports of the server, the node uses epmd
    (127.0.0.1:4369, shared by all Erlang nodes and left running) and a random Erlang
    distribution port on 127.0.0.1.
    """

    _node: str = field(default_factory=_new_node_name, repr=False)
    # The Erlang distribution cookie: the nodes of one cluster share theirs.
    _cookie: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    # Extra component hosts, one per gateway instance sharing the component domain
    # (their ping reply hosts); with any, the listener routes each connection its own.
    _instance_hosts: tuple[str, ...] = ()

    kind: ClassVar[Literal["ejabberd"]] = "ejabberd"
    _product: ClassVar[str] = "ejabberd"
    _websocket_path: ClassVar[str] = "/ws"
    # An Erlang node boots in several seconds, more on a busy machine.
    _start_timeout: ClassVar[float] = 60.0
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
            "cookie": self._cookie,
            "component_hosts": "\n".join(
                f'      "{host}":\n        password: "{self.component_secret}"'
                for host in (self.component_domain, *self._instance_hosts)
            ),
            "global_routes": "false" if self._instance_hosts else "true",
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
    timeout: float | None = None,
    instance_hosts: Sequence[str] = (),
) -> EjabberdServer:
    """Start one ejabberd node as :func:`~cmaas.devservers._server.start_server` starts a
    server; EjabberdServer holds what differs from Prosody.

    Args:
        instance_hosts: One host per gateway instance for its pings, for several
            instances sharing the component domain on this one node (the component
            listener then routes each connection its own hosts: ``global_routes: false``).

    Raises:
        ValueError: If a domain, an instance host or the secret is unusable.
        DevServerError: As :func:`~cmaas.devservers._server.start_server`.
    """
    for host in instance_hosts:
        check_domain(host, "instance host")
    return start_server(
        EjabberdServer,
        workdir,
        domain=domain,
        component_domain=component_domain,
        component_secret=component_secret,
        timeout=timeout,
        options={"_instance_hosts": tuple(instance_hosts)} if instance_hosts else None,
    )
