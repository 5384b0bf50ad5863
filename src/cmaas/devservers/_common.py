"""Helpers shared by the Prosody and ejabberd launchers: errors, ports, processes, files."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import string
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cmaas.errors import CmaasError

#: Explicit search path for the server tools: /usr/sbin (ejabberdctl, runuser) is missing
#: from the PATH of non-root shells, and an inherited PATH must not pick other binaries.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Parent of every server directory. Created 0755 and owned by root so that the users
#: prosody and ejabberd can traverse it; pytest's tmp dirs (0700, reset to 0700 by every
#: new pytest session) cannot serve that purpose.
RUNTIME_ROOT = Path(tempfile.gettempdir()) / "cmaas-devservers"

_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
# Secrets and paths are pasted into Lua, YAML and shell strings: refuse anything that
# would need quoting there rather than escape it three different ways.
_SECRET_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_PATH_RE = re.compile(r"^[A-Za-z0-9._/+=@,-]+$")
_USERNAME_RE = re.compile(r"^[a-z0-9._=+-]+$")

_apt_updated = False


class DevServerError(CmaasError):
    """A development server failed to install, start, stop or register a user.

    The message says what failed and, when there is one, ends with the tail of the
    server's log.
    """


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Args:
        host: Address to probe.

    Returns:
        A port number chosen by the kernel.

    Raises:
        OSError: If no socket can be bound on ``host``.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports on ``host`` that were free a moment ago.

    The ports come from below the kernel's ephemeral range. A port the kernel hands
    out itself can later become the *source* port of an outgoing connection (a client
    reconnecting while a server restarts), and the restarted server then fails to
    listen on it with EADDRINUSE. The probe sockets stay open until all ports are
    chosen, so the ports differ.

    Raises:
        OSError: If no free port is found on ``host``.
    """
    low, high = _LISTEN_PORTS[0], min(_LISTEN_PORTS[1], _ephemeral_low() - 1)
    randomly = random.SystemRandom()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _attempt in range(count * 200):
            if len(ports) == count:
                break
            port = randomly.randint(low, high)
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
        if len(ports) < count:
            raise OSError(f"no {count} free ports between {low} and {high} on {host}")
        return ports


_LISTEN_PORTS = (20000, 32767)


def _ephemeral_low() -> int:
    """The lowest port the kernel may pick for outgoing connections (Linux)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so lingering TIME_WAIT sockets are no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def xmpp_answers(host: str, port: int, domain: str, timeout: float = 1.0) -> bool:
    """Whether a client stream header sent to ``host:port`` gets a stream header back.

    A listening socket is not enough: ejabberd binds its ports early in the boot but
    accepts connections only once fully started.
    """
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(header.encode())
            reply = b""
            while b"<stream:stream" not in reply:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(b"</stream:stream>")
            return True
    except OSError:  # includes socket timeouts
        return False


def find_config_dir(name: str) -> Path:
    """Locate a configuration directory at the root of the source checkout.

    Args:
        name: Directory name, e.g. ``"prosody-config"`` or ``"ejabberd-config"``.

    Returns:
        The absolute path of ``<repository root>/<name>``.

    Raises:
        DevServerError: If the directory does not exist, e.g. when cmaas is installed
            from a wheel rather than used from a checkout (``pip install -e``).
    """
    # src/cmaas/devservers/<this file> -> parents[3] is the repository root.
    path = Path(__file__).resolve().parents[3] / name
    if not path.is_dir():
        raise DevServerError(
            f"configuration directory {path} not found: cmaas.devservers reads the server "
            "configs from a source checkout (install with `pip install -e .`)"
        )
    return path


def render_template(template: Path, values: Mapping[str, object]) -> str:
    """Fill the ``${...}`` placeholders of ``template`` with ``values``.

    Raises:
        DevServerError: If the template cannot be read or names an unknown placeholder.
    """
    try:
        text = template.read_text(encoding="utf-8")
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except OSError as exc:
        raise DevServerError(f"cannot read template {template}: {exc}") from exc
    except (KeyError, ValueError) as exc:
        raise DevServerError(f"bad placeholder in template {template}: {exc}") from exc


def check_domain(domain: str, what: str) -> None:
    """Raise ValueError unless ``domain`` is a plain lower-case DNS name."""
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"{what} {domain!r} is not a lower-case DNS name")


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` can be pasted into Lua, YAML and shell as is."""
    if not _SECRET_RE.match(secret):
        raise ValueError("component_secret may only contain A-Z a-z 0-9 . _ ~ + / = -")


def check_username(username: str) -> None:
    """Raise ValueError unless ``username`` is a simple lower-case localpart."""
    if not _USERNAME_RE.match(username):
        raise ValueError(f"username {username!r}: use lower-case letters, digits and ._=+-")


def check_path(path: Path) -> None:
    """Raise DevServerError if ``path`` would need quoting in a config file."""
    if not _PATH_RE.match(str(path)):
        raise DevServerError(f"path {path} contains characters unsafe in a config file")


def require_root() -> None:
    """Raise DevServerError unless running as root (needed to run the servers as their users)."""
    if os.geteuid() != 0:
        raise DevServerError(
            "cmaas.devservers must run as root: it starts Prosody and ejabberd as the "
            "users prosody and ejabberd (runuser, ejabberdctl)"
        )


def which(program: str) -> str:
    """Absolute path of ``program`` on SAFE_PATH.

    Raises:
        DevServerError: If it is not installed.
    """
    found = shutil.which(program, path=SAFE_PATH)
    if found is None:
        raise DevServerError(f"{program} not found on {SAFE_PATH}; call ensure_installed()")
    return found


def clean_env() -> dict[str, str]:
    """A minimal environment for the server tools.

    ejabberdctl and erl honour many variables (SPOOL_DIR, ERL_FLAGS, ERL_DIST_PORT, ...);
    an inherited one would silently change where the node keeps its data or listens.
    """
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}


def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float,
    cwd: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a clean environment and capture its output.

    Args:
        argv: Program and arguments.
        what: Description for error messages.
        timeout: Seconds before the command is killed.
        cwd: Working directory.
        extra_env: Variables added to the clean environment.

    Returns:
        The completed process; the caller checks ``returncode``.

    Raises:
        DevServerError: If the command cannot be started or times out.
    """
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env={**clean_env(), **(extra_env or {})},
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevServerError(f"{what}: `{' '.join(argv)}` timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise DevServerError(f"{what}: cannot run {argv[0]}: {exc}") from exc


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    """Stdout and stderr of a finished command, stripped, for error messages."""
    return "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())


def ensure_installed() -> None:
    """Make sure Prosody and ejabberd are installed, installing them with apt if needed.

    As root, a missing server triggers ``apt-get update`` (once per process) and
    ``apt-get install -y prosody ejabberd``. Nothing is ever skipped silently.

    Raises:
        DevServerError: If a server is missing and this process is not root, or if apt
            fails, or if the programs are still missing after installing.
    """
    global _apt_updated
    programs = ("prosody", "prosodyctl", "ejabberdctl", "runuser")
    missing = [p for p in programs if shutil.which(p, path=SAFE_PATH) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise DevServerError(
            f"missing {', '.join(missing)}: install the Debian packages with "
            "`sudo apt-get install -y prosody ejabberd` (util-linux provides runuser)"
        )
    commands: list[tuple[list[str], float]] = []
    if not _apt_updated:
        commands.append((["apt-get", "update"], 300.0))
    commands.append((["apt-get", "install", "-y", "prosody", "ejabberd"], 900.0))
    for argv, timeout in commands:
        result = run(
            argv,
            what="installing the XMPP servers",
            timeout=timeout,
            extra_env={"DEBIAN_FRONTEND": "noninteractive"},
        )
        if result.returncode != 0:
            raise DevServerError(
                f"`{' '.join(argv)}` exited with {result.returncode}:\n"
                + tail_text(output_of(result), 30)
            )
        if argv[1] == "update":
            _apt_updated = True
    still_missing = [p for p in programs if shutil.which(p, path=SAFE_PATH) is None]
    if still_missing:
        raise DevServerError(f"still missing after apt-get install: {', '.join(still_missing)}")


def tail_text(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def tail_file(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a (possibly large) text file; "" if it does not exist."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            chunk = b""
            pos = end
            # Read backwards in blocks so that long benchmark logs cost nothing.
            while pos > 0 and chunk.count(b"\n") <= lines:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                chunk = f.read(step) + chunk
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return tail_text(chunk.decode("utf-8", errors="replace"), lines)


def with_log(message: str, log: Path, lines: int = 40) -> str:
    """``message`` followed by the tail of ``log``."""
    tail = tail_file(log, lines)
    if not tail:
        return f"{message}\n(log {log} is empty or missing)"
    return f"{message}\n--- last lines of {log} ---\n{tail}"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. Zombies count as dead: PID 1 does not reap in some containers."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    state = proc_stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def find_pids(matches: Callable[[list[str]], bool]) -> list[int]:
    """Live processes whose argv satisfies ``matches``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode("utf-8", errors="replace") for a in raw.split(b"\0")[:-1]]
        if argv and matches(argv) and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def signal_pids(pids: Sequence[int], sig: signal.Signals) -> None:
    """Send ``sig`` to each pid, ignoring those that are already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_dead(pids: Sequence[int], timeout: float) -> bool:
    """Wait until none of ``pids`` runs; return whether that happened in time."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def listening_ports(pids: Sequence[int], host: str) -> set[int]:
    """Ports on which one of ``pids`` holds a listening TCP socket bound to ``host``.

    Asking the kernel who owns the socket (rather than connecting) tells our server apart
    from another program on the same port and leaves no connection noise in the logs.
    """
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    wanted = {socket.inet_aton(host), bytes(4)}
    ports: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A" or int(fields[9]) not in inodes:  # 0A = LISTEN
            continue
        ip_hex, port_hex = fields[1].split(":")
        # The kernel prints the address as a native-endian 32-bit number.
        if struct.pack("=I", int(ip_hex, 16)) in wanted:
            ports.add(int(port_hex, 16))
    return ports


def make_runtime_dir(kind: str, user: str) -> Path:
    """Create a fresh server directory under RUNTIME_ROOT, readable by ``user``'s group.

    The directory itself stays owned by root (mode 0750, group of ``user``) so that the
    server can read but not rewrite its config; the writable parts get their own
    subdirectories (see make_private_dir).

    Raises:
        DevServerError: If RUNTIME_ROOT exists but is not a root-owned, non-writable
            directory (someone else could then tamper with the servers' files).
    """
    check_path(RUNTIME_ROOT)
    gid = _gid_of(user)
    try:
        RUNTIME_ROOT.mkdir(mode=0o755, exist_ok=True)
        st = RUNTIME_ROOT.lstat()
        # /tmp is world-writable: refuse a directory someone else planted there.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise DevServerError(
                f"{RUNTIME_ROOT} must be a directory owned by uid {os.geteuid()} and "
                "writable by its owner only; remove it and try again"
            )
        RUNTIME_ROOT.chmod(0o755)  # mkdir's mode is masked by the umask
        path = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=RUNTIME_ROOT))
        os.chown(path, 0, gid)
        path.chmod(0o750)
    except OSError as exc:
        raise DevServerError(f"cannot create a server directory in {RUNTIME_ROOT}: {exc}") from exc
    return path


def make_private_dir(path: Path, user: str) -> Path:
    """Create ``path`` (mode 0700) owned by ``user``, for data the server writes.

    Raises:
        OSError: If the directory cannot be created.
    """
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, _uid_of(user), _gid_of(user))
    path.chmod(0o700)
    return path


def write_config(path: Path, text: str, user: str) -> None:
    """Write a config file owned by root, readable by ``user``'s group only (secrets).

    Raises:
        OSError: If the file cannot be written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chown(path, 0, _gid_of(user))
    path.chmod(0o640)


def _uid_of(user: str) -> int:
    return _passwd(user).pw_uid


def _gid_of(user: str) -> int:
    return _passwd(user).pw_gid


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError as exc:
        raise DevServerError(f"no system user {user!r}; call ensure_installed()") from exc


def cmaas_executable() -> str:
    """The ``cmaas`` console script installed beside the running interpreter.

    Raises: DevServerError: It is not installed.
    """
    beside = Path(sys.executable).with_name("cmaas")
    found = str(beside) if beside.exists() else shutil.which("cmaas")
    if found is None:
        raise DevServerError("the cmaas console script is not installed")
    return found
