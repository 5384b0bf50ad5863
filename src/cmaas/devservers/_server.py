"""The server handle shared by both launchers, and cleanup at interpreter exit."""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypeVar

from cmaas.devservers._checks import check_domain, check_secret
from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import make_runtime_dir, tail_file, with_log
from cmaas.devservers._install import ensure_installed
from cmaas.devservers._ports import free_ports, listening_ports, port_is_free, xmpp_answers
from cmaas.devservers._processes import output_of, require_root, signal_pids, wait_dead

# How long a server process may be missing during startup before we call it a crash:
# a daemon forks, so the process we look for appears a moment after the launcher exits.
_VANISH_GRACE = 3.0
_KILL_TIMEOUT = 5.0
_PORT_CLOSE_TIMEOUT = 5.0
_HOST = "127.0.0.1"


class Tracked(Protocol):
    """A server that :func:`track` cleans up at interpreter exit."""

    workdir: Path

    def stop(self) -> None: ...

    def _archive(self) -> None: ...


_tracked: list[Tracked] = []
_atexit_registered = False


@dataclass
class XmppServer(ABC):
    """A throwaway Prosody or ejabberd server on loopback.

    Created (and started) by :func:`start_prosody` or :func:`start_ejabberd`. The
    process runs detached, as the user ``prosody`` or ``ejabberd``; it is stopped, and its
    directory removed (after copying its logs next to the caller's ``workdir``), when the
    Python interpreter exits, unless stopped earlier.

    Attributes:
        kind: ``"prosody"`` or ``"ejabberd"``.
        domain: The user virtual host, e.g. ``cmaas.test``.
        component_domain: The XEP-0114 component domain (not a virtual host).
        component_secret: The component handshake secret (left out of ``repr``).
        host: The loopback address everything listens on.
        c2s_port: Client-to-server port.
        component_port: XEP-0114 component port.
        http_port: Plain HTTP port. ejabberd: ``/api`` (mod_http_api, open to loopback),
            ``/bosh``, ``/ws``; Prosody: ``/http-bind``, ``/xmpp-websocket``.
        workdir: The server's private directory (config, data, logs, pid file), under
            ``/tmp/cmaas-devservers``; the caller's workdir holds a symlink to it.
    """

    domain: str
    component_domain: str
    component_secret: str = field(repr=False)
    host: str
    c2s_port: int
    component_port: int
    http_port: int
    workdir: Path
    _timeout: float = field(default=30.0, repr=False)
    _caller_dir: Path | None = field(default=None, repr=False)

    kind: ClassVar[Literal["prosody", "ejabberd"]]
    # The product name as spelled in messages; kind is always lower-case.
    _product: ClassVar[str]
    # Where the HTTP port serves XMPP over WebSocket (RFC 7395).
    _websocket_path: ClassVar[str]
    # Seconds a start may take unless the caller says otherwise.
    _start_timeout: ClassVar[float] = 30.0
    _stop_grace: ClassVar[float] = 10.0
    # Log lines that mean the server will never be fully up although its process lives.
    _fatal_markers: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def register_user(self, username: str, password: str) -> None:
        """Create the account ``username@domain``, or reset its password if it exists.

        Args:
            username: Lower-case localpart.
            password: Non-empty password.

        Raises:
            ValueError: If the username or password is unusable.
            DevServerError: If the server's admin tool fails (the message includes its
                output and the log tail).
        """

    @abstractmethod
    def _write_files(self) -> None:
        """Create the config files and directories in workdir, once, before the first start.

        Raises:
            OSError: If a file or directory cannot be created.
            DevServerError: If a config template is missing or broken.
        """

    @abstractmethod
    def _log_path(self) -> Path: ...

    @abstractmethod
    def _server_pids(self) -> list[int]:
        """Pids of this instance's server process (normally one)."""

    @abstractmethod
    def _launch(self) -> None:
        """Start the server process; readiness is checked by the caller."""

    @abstractmethod
    def _request_stop(self, pids: Sequence[int]) -> None:
        """Ask the server to shut down cleanly; the caller waits and kills if needed."""

    @property
    def websocket_url(self) -> str:
        """The RFC 7395 WebSocket endpoint, plain ``ws://`` as everything on loopback."""
        return f"ws://{self.host}:{self.http_port}{self._websocket_path}"

    @property
    def _ports(self) -> tuple[int, int, int]:
        return (self.c2s_port, self.component_port, self.http_port)

    def _template_values(self) -> dict[str, object]:
        """The placeholders that both servers' config templates have."""
        return {
            "host": self.host,
            "domain": self.domain,
            "component_domain": self.component_domain,
            "component_secret": self.component_secret,
            "c2s_port": self.c2s_port,
            "component_port": self.component_port,
            "http_port": self.http_port,
        }

    def _tool_output(self, result: subprocess.CompletedProcess[str]) -> str:
        return output_of(result)

    def _check_exit(self, command: str, result: subprocess.CompletedProcess[str]) -> None:
        """Raise unless ``command``, which gave ``result``, exited with 0.

        Raises:
            DevServerError: If it did not; the message has its output and the log tail.
        """
        if result.returncode != 0:
            raise DevServerError(
                with_log(
                    f"{command} exited with {result.returncode}: {self._tool_output(result)}",
                    self._log_path(),
                )
            )

    def is_running(self) -> bool:
        """Whether the server process of this instance is alive (zombies do not count)."""
        return bool(self._server_pids())

    def pids(self) -> list[int]:
        """Pids of the running server process (empty when it is stopped)."""
        return self._server_pids()

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the server's main log ("" if there is none yet)."""
        return tail_file(self._log_path(), lines)

    def start(self) -> None:
        """Start the server with the ports, config and data it had before.

        Returns when the server process listens on the c2s, component and HTTP ports and
        answers an XMPP stream header on the c2s port (ejabberd binds its ports early in
        the boot but accepts connections only once fully started). Does nothing if the
        server is already running.

        Raises:
            DevServerError: If a port is taken by another program, if the server process
                exits or logs a fatal error during startup, or if it is not listening
                within the timeout given to ``start_prosody``/``start_ejabberd``. A
                half-started process is killed first; the message ends with the log tail.
        """
        if self.is_running():
            return
        busy = [port for port in self._ports if not port_is_free(self.host, port)]
        if busy:
            raise DevServerError(
                f"cannot start {self.kind} in {self.workdir}: port(s) "
                f"{', '.join(map(str, busy))} on {self.host} already in use"
            )
        log = self._log_path()
        log_offset = log.stat().st_size if log.exists() else 0
        deadline = time.monotonic() + self._timeout
        try:
            self._launch()
            self._wait_ready(log_offset, deadline)
        except BaseException as exc:
            # Never leave a half-started server behind (also on KeyboardInterrupt).
            try:
                self._kill()
            except DevServerError as kill_error:
                exc.add_note(str(kill_error))
            raise

    def stop(self) -> None:
        """Stop the server and wait until its process is gone and its ports are free.

        Asks for a clean shutdown first and kills the process if that takes too long.
        Does nothing if the server is not running.

        Raises:
            DevServerError: If the process survives SIGKILL or a port stays in use.
        """
        pids = self._server_pids()
        if pids:
            self._request_stop(pids)
            if not wait_dead(pids, self._stop_grace):
                self._kill()
        deadline = time.monotonic() + _PORT_CLOSE_TIMEOUT
        while busy := [p for p in self._ports if not port_is_free(self.host, p)]:
            if time.monotonic() >= deadline:
                raise DevServerError(
                    f"{self.kind} in {self.workdir} stopped but port(s) "
                    f"{', '.join(map(str, busy))} are still in use by another process"
                )
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop the server, then start it again with the same ports, config and data.

        Raises:
            DevServerError: As :meth:`stop` and :meth:`start`.
        """
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: nothing is flushed or closed cleanly.

        Raises:
            DevServerError: If the process survives SIGKILL.
        """
        self._kill()

    def _kill(self) -> None:
        pids = self._server_pids()
        signal_pids(pids, signal.SIGKILL)
        if not wait_dead(pids, _KILL_TIMEOUT):
            raise DevServerError(f"{self.kind} pid(s) {pids} survive SIGKILL")

    def _wait_ready(self, log_offset: int, deadline: float) -> None:
        log = self._log_path()
        missing_since: float | None = None
        while True:
            now = time.monotonic()
            for marker in self._fatal_markers:
                if marker in _read_from(log, log_offset):
                    raise DevServerError(
                        with_log(f"{self.kind} failed to start: its log says {marker!r}", log)
                    )
            pids = self._server_pids()
            if pids:
                missing_since = None
                if listening_ports(pids, self.host) >= set(self._ports) and xmpp_answers(
                    self.host, self.c2s_port, self.domain
                ):
                    return
            elif missing_since is None:
                missing_since = now
            elif now - missing_since > _VANISH_GRACE:
                raise DevServerError(with_log(f"{self.kind} exited during startup", log))
            if now >= deadline:
                listening = listening_ports(pids, self.host) if pids else set()
                waiting = sorted(set(self._ports) - listening)
                problem = (
                    f"not listening on {self.host} port(s) {waiting}"
                    if waiting
                    else f"no XMPP stream answer on c2s port {self.c2s_port}"
                )
                raise DevServerError(
                    with_log(f"{self.kind} not ready after {self._timeout:g} s: {problem}", log)
                )
            time.sleep(0.05)

    def _archive(self) -> None:
        """Copy the logs next to the caller's workdir and delete the server directory."""
        if self._caller_dir is None or self.is_running():
            return
        link = self._caller_dir / self.workdir.name
        with contextlib.suppress(FileNotFoundError):
            if link.is_symlink():
                link.unlink()
        if self._caller_dir.is_dir() and (self.workdir / "logs").is_dir():
            shutil.copytree(self.workdir / "logs", link / "logs", dirs_exist_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


_Server = TypeVar("_Server", bound=XmppServer)


def start_server(
    cls: type[_Server],
    workdir: Path,
    *,
    domain: str = "cmaas.test",
    component_domain: str = "gateway.cmaas.test",
    component_secret: str | None = None,
    timeout: float | None = None,
    options: Mapping[str, object] | None = None,
) -> _Server:
    """Start a throwaway ``cls`` server on 127.0.0.1 with free ports, and wait until it
    listens. ``start_prosody`` and ``start_ejabberd`` are this with ``cls`` bound.

    The server's files live in a fresh directory under ``/tmp/cmaas-devservers`` (which
    the server's user can reach, unlike pytest's 0700 tmp dirs); ``workdir`` gets a
    symlink to it and, at interpreter exit, a copy of its logs. The config templates
    come from the source checkout; ``cls``'s docstring names them.

    Args:
        cls: The server class, which holds all that differs between the products.
        workdir: Caller's directory (created if needed), e.g. a pytest ``tmp_path``.
        domain: User virtual host.
        component_domain: XEP-0114 component domain; must differ from ``domain``.
        component_secret: Component secret; random if None.
        timeout: Seconds to wait for the server to listen, on this and later starts;
            None for the product's default (30 s for Prosody, 60 s for ejabberd).
        options: Fields of ``cls`` of its own (e.g. an ejabberd node's cookie).

    Returns:
        The running server.

    Raises:
        ValueError: If a domain or the secret is unusable.
        DevServerError: If the server is missing and cannot be installed, if not running
            as root, if a file or directory cannot be created, or if the server fails to
            start (the message ends with the log tail).
    """
    server_dir, secret, (c2s_port, component_port, http_port) = _prepare(
        cls.kind, workdir, domain, component_domain, component_secret
    )
    server = cls(
        domain=domain,
        component_domain=component_domain,
        component_secret=secret,
        host=_HOST,
        c2s_port=c2s_port,
        component_port=component_port,
        http_port=http_port,
        workdir=server_dir,
        _timeout=cls._start_timeout if timeout is None else timeout,
        _caller_dir=workdir,
        **(options or {}),
    )
    try:
        server._write_files()
    except OSError as exc:
        raise DevServerError(
            f"cannot write the {cls._product} files in {server_dir}: {exc}"
        ) from exc
    track(server)
    server.start()
    return server


def _prepare(
    kind: Literal["prosody", "ejabberd"],
    workdir: Path,
    domain: str,
    component_domain: str,
    component_secret: str | None,
) -> tuple[Path, str, list[int]]:
    """Validate the arguments and create the server directory and a link to it.

    Returns:
        The server's private directory, the component secret and three free ports.

    Raises:
        ValueError: If a domain or the secret is unusable.
        DevServerError: If not root, the servers cannot be installed, or a directory
            cannot be created.
    """
    check_domain(domain, "domain")
    check_domain(component_domain, "component_domain")
    if component_domain == domain:
        raise ValueError("component_domain must differ from domain (not a virtual host)")
    secret = component_secret if component_secret is not None else secrets.token_urlsafe(24)
    check_secret(secret)
    ensure_installed()
    require_root()
    server_dir = make_runtime_dir(kind, kind)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / server_dir.name).symlink_to(server_dir)
    except OSError as exc:
        shutil.rmtree(server_dir, ignore_errors=True)
        raise DevServerError(f"cannot use workdir {workdir}: {exc}") from exc
    return server_dir, secret, free_ports(3, _HOST)


def track(server: Tracked) -> None:
    """Stop ``server`` (if still running) and clean up its directory at interpreter exit."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_cleanup_at_exit)
        _atexit_registered = True
    _tracked.append(server)


def _cleanup_at_exit() -> None:
    for server in reversed(_tracked):
        try:
            server.stop()
            server._archive()
        except (DevServerError, OSError) as exc:
            print(f"cmaas.devservers: cleanup of {server.workdir} failed: {exc}", file=sys.stderr)
    _tracked.clear()
