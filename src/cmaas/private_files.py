"""Private files: mode 0600 in a 0700 directory, replaced atomically.

The device's and the client service's files hold secrets or trust decisions (private
keys, pinned keys, which messages were shown), so none may be readable by other users,
and none may be left half-written by a crash or a full disk: a torn key file loses the
key. On Windows, where POSIX modes mean little, the files are still written atomically
and the mode checks are skipped: protect the directory with its ACL instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import stat
from pathlib import Path

from cmaas.errors import CmaasError

__all__ = ["connect_private_sqlite", "ensure_private_dir", "read_private", "write_private"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_POSIX = os.name == "posix"


def ensure_private_dir(directory: Path, *, error: type[CmaasError]) -> None:
    """Create ``directory`` with mode 0700 (and missing parents) unless it exists.

    Raises:
        CmaasError: Of class ``error``: the directory cannot be created.
    """
    try:
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create directory {directory}: {exc.strerror or exc}") from exc


def connect_private_sqlite(path: Path, *, error: type[CmaasError]) -> sqlite3.Connection:
    """A connection to the SQLite file ``path``, created 0600 (its directory 0700) when
    missing, in WAL mode with full fsync, autocommit outside explicit transactions, and a
    wait of up to 5 s for another process's write.

    Raises:
        CmaasError: Of class ``error``: the directory or file cannot be created or opened,
            is not a regular file, or is accessible to group or others.
    """
    ensure_private_dir(path.parent, error=error)
    try:
        # Created 0600 before SQLite opens it; its journal files take its mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), _FILE_MODE)
    except OSError as exc:
        raise error(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _check_private(path, info, error)
    try:
        connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise error(f"cannot open {path}: {exc}") from exc
    return connection


def read_private(path: Path, *, max_bytes: int, error: type[CmaasError]) -> bytes | None:
    """The content of ``path``, or None when there is no such file.

    Raises:
        CmaasError: Of class ``error``: not a regular file, accessible to group or
            others, longer than ``max_bytes``, or unreadable.
    """
    try:
        # O_NONBLOCK: opening a FIFO planted at the path must fail the type check
        # below, not hang; it changes nothing for regular files.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "rb") as file:
            # fstat the open file rather than stat the name, which could be swapped
            # between the check and the read.
            _check_private(path, os.fstat(file.fileno()), error)
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise error(f"{path} is longer than {max_bytes} bytes; it is not a file this device wrote")
    return data


def _check_private(path: Path, info: os.stat_result, error: type[CmaasError]) -> None:
    """Raises: CmaasError: Of class ``error``: not a regular file, or accessible to group
    or others."""
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is not a regular file")
    if _POSIX and info.st_mode & 0o077:
        raise error(
            f"{path} is accessible to other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); run: chmod 600 {path}"
        )


def write_private(path: Path, data: bytes, *, error: type[CmaasError]) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old or the new file whole.

    Writes a mode 0600 temporary file in the same directory (``os.replace`` is atomic
    only within one file system), syncs it, renames it over ``path`` and syncs the
    directory so the rename survives a power cut. The directory is created with mode
    0700 when missing.

    Raises:
        CmaasError: Of class ``error``: the directory or file cannot be written
            (permissions, disk full, ...). ``path`` is then unchanged.
    """
    directory = path.parent
    ensure_private_dir(directory, error=error)
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            _write_new(temporary, data)
            os.replace(temporary, path)
        except BaseException:
            # Disk full or Ctrl-C must not leave a stray copy of the secrets behind.
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_new(path: Path, data: bytes) -> None:
    # O_EXCL: never write through a file or symlink someone placed at the name.
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, _FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        if _POSIX:
            # The umask may have taken the owner's read bit; 0600 exactly, whatever it is.
            os.fchmod(file.fileno(), _FILE_MODE)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    if not _POSIX:
        return  # Windows cannot open a directory to sync it; MoveFileEx is durable enough
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot sync a directory; the rename is done all the same.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
