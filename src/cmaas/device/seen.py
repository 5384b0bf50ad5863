"""Messages already shown, so one the gateway delivers twice is shown once.

After a reconnect the gateway may resend a message the device has shown already;
its one-time prekey is gone by then, so without this record the copy would surface
as an error. Each shown message may carry the time its text is to be deleted, so the
CLI can purge it later. The file is a journal of JSON lines, mode 0600: a header,
then one line per change, oldest first::

    {"format": "cmaas-device-seen", "v": 1}
    {"app": "<app JID>", "id": "<message id>", "delete_at_ms": 0}

``delete_at_ms`` is absent when the message is kept; a later line for the same message
changes its deletion time. Each change is one appended, fsynced line (a device records
every message it shows, and rewriting 10,000 entries each time cost ~16 ms); the journal
is compacted, atomically, once it holds twice the capacity. A torn last line (a crash
mid-append) is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from cmaas.device.errors import DeviceFileError
from cmaas.envelope.bundle import MAX_JID_LENGTH
from cmaas.envelope.encoding import MAX_SAFE_INTEGER, Fields, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.private_files import read_private, write_private

__all__ = ["DEFAULT_CAPACITY", "MAX_MESSAGE_ID_LENGTH", "SEEN_FORMAT", "SeenMessages"]

SEEN_FORMAT = "cmaas-device-seen"
DEFAULT_CAPACITY = 10_000
# The envelope header's limit on message ids.
MAX_MESSAGE_ID_LENGTH = 128
# Worst case of one entry as JSON: every character escaped as \uXXXX, plus the keys.
_MAX_ENTRY_BYTES = 6 * (MAX_JID_LENGTH + MAX_MESSAGE_ID_LENGTH) + 64

_Key = tuple[str, str]


class SeenMessages:
    """The last ``capacity`` messages shown, by (app JID, message id), oldest forgotten first.

    The file is read on first use, appended to on every change and compacted now and
    then; one device process owns it (see :meth:`~cmaas.device.keyfile.KeyFile.lock`).

    Attributes:
        path: The file; missing means nothing was shown yet.
        capacity: How many messages are remembered.
    """

    def __init__(self, path: Path | str, capacity: int = DEFAULT_CAPACITY) -> None:
        """Name the file; nothing is read yet.

        Raises:
            ValueError: ``capacity`` is below 1.
        """
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.path = Path(path)
        self.capacity = capacity
        # (app JID, message id) to its deletion time, in the order first shown.
        self._messages: dict[_Key, int | None] | None = None
        self._journal_lines = 0
        self._torn = False

    def is_new(self, app_jid: str, message_id: str) -> bool:
        """Whether the message was not shown yet. Remembers nothing: see :meth:`record`.

        Any strings are accepted, so a check before the envelope is opened cannot fail
        on a stanza id the envelope would refuse.

        Raises:
            DeviceFileError: The file is damaged or accessible to other users.
        """
        return (app_jid, message_id) not in self._load()

    def sender_of(self, message_id: str) -> str | None:
        """The app JID of the latest remembered message with this id, or None.

        Raises:
            DeviceFileError: The file is damaged or accessible to other users.
        """
        for app_jid, known_id in reversed(self._load()):
            if known_id == message_id:
                return app_jid
        return None

    def record(self, app_jid: str, message_id: str, *, auto_delete_at_ms: int | None) -> None:
        """Remember the message and when its text is to be deleted (None: never).

        A message remembered already keeps its place in the order; only its deletion
        time changes. Set None once the CLI has purged the text.

        Raises:
            ValueError: An argument is out of range.
            DeviceFileError: The file is damaged or cannot be written.
        """
        key = _key(app_jid, message_id)
        if auto_delete_at_ms is not None and not 0 <= auto_delete_at_ms <= MAX_SAFE_INTEGER:
            raise ValueError("auto_delete_at_ms must be between 0 and 2**53 - 1")
        messages = self._load()
        if key in messages and messages[key] == auto_delete_at_ms:
            return
        messages[key] = auto_delete_at_ms
        _evict(messages, self.capacity)
        if self._torn or not self.path.exists() or self._journal_lines >= 2 * self.capacity:
            self._compact()
        else:
            self._append(_line(key, auto_delete_at_ms))

    def due(self, now_ms: int) -> list[tuple[str, str]]:
        """The (app JID, message id) of messages whose text is due for deletion, earliest first.

        Raises:
            DeviceFileError: The file is damaged or accessible to other users.
        """
        messages = self._load()
        due = sorted((at, key) for key, at in messages.items() if at is not None and at <= now_ms)
        return [key for _, key in due]

    def __len__(self) -> int:
        """How many messages are remembered.

        Raises:
            DeviceFileError: The file is damaged or accessible to other users.
        """
        return len(self._load())

    def _max_bytes(self) -> int:
        return (2 * self.capacity + 2) * _MAX_ENTRY_BYTES + 1024

    def _load(self) -> dict[_Key, int | None]:
        if self._messages is None:
            data = read_private(self.path, max_bytes=self._max_bytes(), error=DeviceFileError)
            try:
                messages, lines = ({}, 0) if data is None else _decode(data)
            except MalformedEncoding as exc:
                raise DeviceFileError(
                    f"the seen-messages file {self.path} is damaged: {exc}; removing it "
                    "may show messages again that were shown already"
                ) from exc
            _evict(messages, self.capacity)
            self._messages, self._journal_lines = messages, lines
            # Appending after a torn line would glue the next entry to it.
            self._torn = data is not None and not data.endswith(b"\n")
        return self._messages

    def _append(self, line: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._messages = None  # re-read what the file really holds
            raise DeviceFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._journal_lines += 1

    def _compact(self) -> None:
        messages = self._load()
        body = b"".join(_line(key, at) for key, at in messages.items())
        header = canonical_json({"format": SEEN_FORMAT, "v": 1}) + b"\n"
        try:
            write_private(self.path, header + body, error=DeviceFileError)
        except DeviceFileError:
            # The file still holds the old state; read it again rather than trust
            # a memory that differs from it.
            self._messages = None
            raise
        self._journal_lines = len(messages)
        self._torn = False


def _line(key: _Key, delete_at_ms: int | None) -> bytes:
    entry: dict[str, object] = {"app": key[0], "id": key[1]}
    if delete_at_ms is not None:
        entry["delete_at_ms"] = delete_at_ms
    return canonical_json(entry) + b"\n"


def _key(app_jid: str, message_id: str) -> _Key:
    if not 1 <= len(app_jid) <= MAX_JID_LENGTH:
        raise ValueError(f"an app JID must be 1 to {MAX_JID_LENGTH} characters")
    if not 1 <= len(message_id) <= MAX_MESSAGE_ID_LENGTH:
        raise ValueError(f"a message id must be 1 to {MAX_MESSAGE_ID_LENGTH} characters")
    return (app_jid, message_id)


def _evict(messages: dict[_Key, int | None], capacity: int) -> None:
    while len(messages) > capacity:
        del messages[next(iter(messages))]


def _decode(data: bytes) -> tuple[dict[_Key, int | None], int]:
    """The messages a journal holds, and how many entry lines it has."""
    lines = data.split(b"\n")
    # The text after the last newline is a line cut short by a crash: never complete.
    lines.pop()
    if not lines:
        raise MalformedEncoding("the header line is missing")
    header = Fields(
        parse_json(lines[0], max_bytes=1024, what="the header"),
        "seen-messages header",
        frozenset({"format", "v"}),
    )
    header.choice("format", (SEEN_FORMAT,))
    header.integer("v", low=1, high=1)
    messages: dict[_Key, int | None] = {}
    for number, line in enumerate(lines[1:], start=2):
        entry = Fields(
            parse_json(line, max_bytes=_MAX_ENTRY_BYTES, what=f"line {number}"),
            f"seen-messages line {number}",
            frozenset({"app", "id"}),
            frozenset({"delete_at_ms"}),
        )
        key = (
            entry.text("app", max_length=MAX_JID_LENGTH),
            entry.text("id", max_length=MAX_MESSAGE_ID_LENGTH),
        )
        messages[key] = (
            entry.integer("delete_at_ms", low=0, high=MAX_SAFE_INTEGER)
            if entry.has("delete_at_ms")
            else None
        )
    return messages, len(lines) - 1
