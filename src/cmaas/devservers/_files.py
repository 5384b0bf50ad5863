"""The servers' files: their directories and owners, their configs, and their logs."""

from __future__ import annotations

import os
import pwd
import stat
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cmaas.devservers._checks import check_path
from cmaas.devservers._errors import DevServerError

#: Parent of every server directory. Created 0755 and owned by root so that the users
#: prosody and ejabberd can traverse it; pytest's tmp dirs (0700, reset to 0700 by every
#: new pytest session) cannot serve that purpose.
RUNTIME_ROOT = Path(tempfile.gettempdir()) / "cmaas-devservers"


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
