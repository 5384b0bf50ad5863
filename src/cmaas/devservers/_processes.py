"""Running the server tools with a clean environment, and finding, signalling and
waiting for the server processes."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cmaas.devservers._errors import DevServerError

#: Explicit search path for the server tools: /usr/sbin (ejabberdctl, runuser) is missing
#: from the PATH of non-root shells, and an inherited PATH must not pick other binaries.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def find_instance_pids(argv0_prefix: str, flag: str, value: str) -> list[int]:
    """Live processes whose argv[0] basename starts with ``argv0_prefix`` and whose
    arguments contain ``flag`` immediately followed by ``value``."""

    def matches(argv: list[str]) -> bool:
        if not Path(argv[0]).name.startswith(argv0_prefix):
            return False
        return any(a == flag and b == value for a, b in itertools.pairwise(argv))

    return find_pids(matches)


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


def cmaas_executable() -> str:
    """The ``cmaas`` console script installed beside the running interpreter.

    Raises: DevServerError: It is not installed.
    """
    beside = Path(sys.executable).with_name("cmaas")
    found = str(beside) if beside.exists() else shutil.which("cmaas")
    if found is None:
        raise DevServerError("the cmaas console script is not installed")
    return found
