"""A real Profanity, run headless in its own tmux server and read with ``capture-pane``.

Profanity is a terminal client: what a person sees is what the pane shows, so every
check reads the screen. Each wait polls the pane until the expected text shows up or its
deadline passes; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer

# Wide enough that a form line (timestamp, tag, label, value) is not wrapped.
_COLUMNS = 300
_ROWS = 120
_POLL_SECONDS = 0.1


def require_programs() -> None:
    """Fail (never skip) when Profanity or tmux is missing: scripts/bootstrap installs both."""
    missing = [program for program in ("profanity", "tmux") if shutil.which(program) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run scripts/bootstrap as root"
            " (it installs the Debian packages profanity and tmux)"
        )


class Profanity:
    """One Profanity process with its own XDG directories, in a private tmux server."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._socket = home / "tmux.sock"

    def start(self, within: float = 20.0) -> None:
        require_programs()
        env = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
        }
        for directory in ("config", "data"):
            (self.home / directory).mkdir(parents=True, exist_ok=True)
        self._tmux(
            "new-session",
            "-d",
            "-x",
            str(_COLUMNS),
            "-y",
            str(_ROWS),
            *(f"-e{name}={value}" for name, value in env.items()),
            "profanity",
        )
        self.wait_for("Type '/help' to show complete help.", within)

    def stop(self) -> None:
        if self._socket.exists():
            self._tmux("kill-server", check=False)

    def type(self, line: str) -> None:
        """Type ``line`` and press Enter, as a person at the keyboard does."""
        self._tmux("send-keys", "-t", "0", "-l", line)
        self._tmux("send-keys", "-t", "0", "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "0")

    def wait_for(self, text: str, within: float = 20.0, *, more_than: int = 0) -> str:
        """The screen once it shows ``text`` more than ``more_than`` times.

        Raises:
            AssertionError: ``text`` did not show within ``within`` seconds; the message
                holds the last screen.
        """
        deadline = time.monotonic() + within
        while True:
            screen = self.screen()
            if screen.count(text) > more_than:
                return screen
            if time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} not on screen after {within} s:\n{screen}")
            time.sleep(_POLL_SECONDS)

    def answer(self, line: str, shown: str, within: float = 20.0) -> str:
        """Type ``line`` and wait for a new ``shown`` on screen, not one already there."""
        before = self.screen().count(shown)
        self.type(line)
        return self.wait_for(shown, within, more_than=before)

    def log_in(self, server: XmppServer, user: str, password: str) -> None:
        """Set up an account without TLS (loopback servers have none) and connect."""
        jid = f"{user}@{server.domain}"
        steps = [
            (f"/account add {user}", "Account created."),
            (f"/account set {user} jid {jid}", f"Updated jid for account {user}"),
            (f"/account set {user} server {server.host}", f"Updated server for account {user}"),
            (f"/account set {user} port {server.c2s_port}", f"Updated port for account {user}"),
            (f'/account set {user} password "{password}"', f"Updated password for account {user}"),
            (f"/account set {user} tls disable", f"Updated TLS policy for account {user}"),
            (f"/connect {user}", "logged in successfully"),
        ]
        for line, shown in steps:
            self.answer(line, shown)

    def set_field(self, tag: str, value: str, shown: str) -> None:
        """``/<tag> <value>`` on the open form; ``shown`` is what the updated field reads."""
        self.answer(f'/{tag} "{value}"', shown)

    def _tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self._socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {result.stderr}")
        return result.stdout
