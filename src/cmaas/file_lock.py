"""One process's exclusive hold on a file: ``flock`` on POSIX, ``msvcrt`` on Windows.

The operating system drops the lock when the descriptor is closed or the process dies,
even by SIGKILL, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import sys

__all__ = ["lock_exclusively"]


def lock_exclusively(descriptor: int) -> None:
    """Hold an exclusive lock on the open file until it is closed, without waiting.

    Raises:
        BlockingIOError: Another process (or another open of the file) holds it.
        OSError: The file cannot be locked at all (e.g. a file system without locks).
    """
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError as exc:  # msvcrt has no distinct error for a held lock
            raise BlockingIOError(str(exc)) from exc
    else:
        import fcntl

        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
