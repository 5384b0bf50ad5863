"""A real Profanity, run headless in its own tmux server and read with ``capture-pane``.

Profanity is a terminal client: what a person sees is what the pane shows, so every
check reads the screen, or the chat log Profanity keeps in ``chatlog.db``. Each wait
polls until the expected text shows up or its deadline passes; nothing waits on a fixed
sleep. The waits an async test makes while its own XMPP clients run are coroutines that
poll in a thread, so those clients' stanzas keep flowing.

Profanity 0.13.1 as a legacy OMEMO (``eu.siacs.conversations.axolotl``) recipient, as
measured on the project's Prosody 0.12 and ejabberd 23.01 (``-l DEBUG`` stanza logs, and
the nodes' items and configuration read from outside with slixmpp):

- ``/omemo gen`` (once logged in) makes the device, publishes its bundle, then reads its
  own device list to add itself. It publishes with ``pubsub#access_model=open`` only
  when the *server domain's* disco#info lists ``pubsub#publish-options``: ejabberd does,
  so both nodes are ``open`` there and any JID, even one not in the roster, reads them.
  Prosody lists it on the account's bare JID only, so Profanity publishes without options.
- Prosody 0.12 answers a missing device list with ``<item-not-found/>`` and no legacy
  ``code='404'``, which Profanity takes for a failure: it never publishes its device list
  there (its bundle is published). Workaround (:meth:`Profanity.generate_omemo_keys`):
  before ``/omemo gen``, a slixmpp session of the same account publishes an empty device
  list with ``access_model=open``; Profanity reads it, adds itself and republishes, and the
  node stays ``open``. ejabberd sends ``code='404'``: nothing is needed there.
- On Prosody the bundle node therefore gets Prosody's default ``presence`` model: a JID
  reads it only once the person allowed it to see their presence (a ``subscribe`` from
  that JID, then ``/sub allow <jid>``: :meth:`Profanity.allow_subscription`); any other
  JID is refused with ``<forbidden/>``.
- Delivery receipts (XEP-0184) are sent by default (``/receipts send on`` makes it
  explicit), to the sender's full JID, whether or not the sender is in the roster, and
  for every message that requests one, even one Profanity could not decrypt.
- The trust mode is ``manual`` by default (``/omemo trustmode``), the OMEMO policy
  ``automatic``, yet a message from a device whose fingerprint was never trusted is
  decrypted, shown (prefixed ``~``, the OMEMO char) and logged as ``omemo``: receiving
  needs neither ``/omemo trust`` nor a policy change.
- A message it cannot decrypt (e.g. a tampered payload: "cannot decrypt message:
  Checksum error" in its log) is shown and logged as its fallback ``<body>``, with
  encryption ``none``.
- Chat messages go to ``chatlog.db``: :meth:`Profanity.chat_log`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer

from .conftest import connect
from .omemo_pep import open_empty_device_list

# Wide enough that a form line (timestamp, tag, label, value) is not wrapped.
_COLUMNS = 300
_ROWS = 120
_POLL_SECONDS = 0.1
_RETYPE_AFTER_SECONDS = 0.5
# What Profanity 0.13 prints instead of sending an OMEMO message no device can read.
_OMEMO_REFUSALS = ("Can't find a OMEMO device id", "cannot be decrypted for any recipient")


def require_programs() -> None:
    """Fail (never skip) when Profanity or tmux is missing: scripts/bootstrap installs both."""
    missing = [program for program in ("profanity", "tmux") if shutil.which(program) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run scripts/bootstrap as root"
            " (it installs the Debian packages profanity and tmux)"
        )


@dataclass(frozen=True, slots=True)
class ChatLogEntry:
    """One message row of Profanity's ``ChatLogs`` table.

    Attributes:
        sender: The sender's bare JID (``from_jid``).
        resource: The sender's resource (``from_resource``).
        text: What Profanity shows: the decrypted text, or the body (``message``).
        stanza_id: The message stanza's ``id`` (``stanza_id``).
        encryption: ``omemo`` for a decrypted OMEMO message, ``none`` for a body.
    """

    sender: str
    resource: str | None
    text: str
    stanza_id: str
    encryption: str


class Profanity:
    """One Profanity process with its own XDG directories, in a private tmux server."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._socket = home / "tmux.sock"
        self.jid: str | None = None

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
        self.jid = jid
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

    async def generate_omemo_keys(
        self, server: XmppServer, user: str, password: str, within: float = 30.0
    ) -> int:
        """``/omemo gen`` once logged in as ``user``; returns the new device id. On
        Prosody, first opens an empty device list as the account (see the module
        docstring), so that Profanity publishes its device there too. That the keys are
        published is for the reader to check
        (:func:`~tests.integration.omemo_pep.wait_for_readable_device`).

        Raises:
            AssertionError: No device id on screen within ``within`` seconds.
            IqError, IqTimeout: The device list could not be opened.
        """
        if server.kind == "prosody":
            account = await connect(server, user, "omemo-setup")
            try:
                await open_empty_device_list(account.xmpp)
            finally:
                await account.disconnect()
        screen = await self._answer_async("/omemo gen", "Your Device ID is ", within)
        found = re.findall(r"Your Device ID is (\d+)\.", screen)
        assert found, screen
        return int(found[-1])

    async def send_receipts(self) -> None:
        """``/receipts send on``: answer XEP-0184 receipt requests (the default)."""
        await self._answer_async("/receipts send on", "Send delivery receipts enabled.")

    async def allow_subscription(self, jid: str, within: float = 20.0) -> None:
        """Wait for ``jid``'s subscription request, then ``/sub allow`` it: ``jid`` may see
        the person's presence, and read their PEP nodes of the ``presence`` model.

        Raises: AssertionError: No request or no acceptance on screen in time.
        """
        await asyncio.to_thread(self.wait_for, f"Received authorization request from {jid}", within)
        await self._answer_async(f"/sub allow {jid}", f"Accepted subscription for {jid}", within)

    async def request_subscription(self, jid: str, within: float = 20.0) -> None:
        """``/sub request``: ask to see ``jid``'s presence, as a person adding a contact
        does (an app JID's gateway approves and asks back: :meth:`allow_subscription`)."""
        await self._answer_async(
            f"/sub request {jid}", f"Sent subscription request to {jid}.", within
        )

    def chat_log(self) -> list[ChatLogEntry]:
        """The messages Profanity logged for this account so far, oldest first.

        Raises: AssertionError: Not logged in yet.
        """
        assert self.jid is not None, "log in first"
        path = self.home / "data" / "profanity" / "database" / self.jid.replace("@", "_at_")
        path = path / "chatlog.db"
        if not path.exists():
            return []
        # Read-only, beside Profanity, which keeps the database open.
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT from_jid, from_resource, message, stanza_id, encryption"
                " FROM ChatLogs WHERE to_jid = ? ORDER BY id",
                (self.jid,),
            ).fetchall()
        return [ChatLogEntry(*row) for row in rows]

    async def wait_for_chat_message(self, stanza_id: str, within: float = 20.0) -> ChatLogEntry:
        """The chat log's entry for the message stanza ``stanza_id`` once it is there.

        Raises: AssertionError: Not logged within ``within`` seconds; the message holds
            the log.
        """
        deadline = time.monotonic() + within
        while True:
            entries = await asyncio.to_thread(self.chat_log)
            for entry in entries:
                if entry.stanza_id == stanza_id:
                    return entry
            if time.monotonic() >= deadline:
                raise AssertionError(f"message {stanza_id} not logged after {within} s: {entries}")
            await asyncio.sleep(_POLL_SECONDS)

    async def reply_omemo(self, jid: str, text: str, within: float = 20.0) -> None:
        """Open the chat with ``jid``, turn OMEMO on for it (``/omemo start``) and send
        ``text`` in it, as a person answering a message does.

        Raises: AssertionError: The OMEMO session did not start within ``within`` s.
        """
        await asyncio.to_thread(self.type, f"/msg {jid}")
        # The chat window's title (the screen's first line) names the contact, its
        # presence, and whether OMEMO is on for it.
        await asyncio.to_thread(self._wait_for_title, [jid], within)
        if "[OMEMO]" not in self.screen().splitlines()[0]:
            self.type("/omemo start")
            await asyncio.to_thread(self._wait_for_title, [jid, "[OMEMO]"], within)
        await asyncio.to_thread(self._send_until_sent, text, within)

    def _send_until_sent(self, text: str, within: float) -> None:
        """Type ``text`` until Profanity shows it as sent. Profanity refuses an OMEMO
        message, and says so, while it has yet to fetch the contact's device list or
        bundle; a person would type it again.

        Raises: AssertionError: Not sent within ``within`` seconds.
        """
        deadline = time.monotonic() + within
        sent = f" me: {text}"
        while True:
            before = self.screen()
            self.type(text)
            while True:
                screen = self.screen()
                if screen.count(sent) > before.count(sent):
                    return
                if any(screen.count(r) > before.count(r) for r in _OMEMO_REFUSALS):
                    break
                if time.monotonic() >= deadline:
                    raise AssertionError(f"{text!r} not sent after {within} s:\n{screen}")
                time.sleep(_POLL_SECONDS)
            time.sleep(_RETYPE_AFTER_SECONDS)

    def _wait_for_title(self, parts: list[str], within: float) -> None:
        """Raises: AssertionError: The title does not show every one of ``parts``."""
        deadline = time.monotonic() + within
        while True:
            lines = self.screen().splitlines()
            if lines and all(f" {part} " in f" {lines[0]} " for part in parts):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"title without {parts} after {within} s: {lines[:1]}")
            time.sleep(_POLL_SECONDS)

    async def _answer_async(self, line: str, shown: str, within: float = 20.0) -> str:
        return await asyncio.to_thread(self.answer, line, shown, within)

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
