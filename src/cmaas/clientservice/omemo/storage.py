"""python-omemo's key/value storage, kept in one private SQLite file of the instance's
state directory: the identity key, the signed prekey (rotated by python-omemo), the
one-time prekeys, the own device id, the recipients' device lists and one ratchet session
per recipient device.

An app sends to many people, each with a session per device, so each value is its own
row: a change writes that row, never the whole state. The file is mode 0600 in a 0700
directory. Each operation of the sender (one seal, one opening) runs inside
:meth:`SqliteStorage.operation`: python-omemo's dozen writes for it reach the disk in one
transaction, so a crash leaves the state before or after a seal, never a torn ratchet.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

from omemo import JSONType, Just, Maybe, Nothing, Storage

from cmaas.clientservice.omemo.errors import OmemoStateError
from cmaas.private_files import connect_private_sqlite, read_private

__all__ = ["SqliteStorage"]

_MAX_LEGACY_STATE = 64 * 1024 * 1024
_DELETED = object()


class SqliteStorage(Storage):
    """The OMEMO state of one client-service instance, in the SQLite file ``path``.

    A state kept by earlier versions in a JSON file (``legacy``) is imported once, when
    ``path`` does not exist yet.

    Raises (constructor): OmemoStateError: The file cannot be created or opened, is not
        this state, or the legacy file is unusable.
    """

    def __init__(self, path: Path, legacy: Path | None = None) -> None:
        super().__init__(disable_cache=True)  # a seal reads what it wrote, from here
        fresh = not path.exists()
        self._db = connect_private_sqlite(path, error=OmemoStateError)
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS omemo_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                " STRICT, WITHOUT ROWID"
            )
        except sqlite3.Error as error:
            self._db.close()
            raise OmemoStateError(f"{path}: cannot open the OMEMO state: {error}") from error
        self._path = path
        self._pending: dict[str, object] | None = None
        if fresh and legacy is not None and legacy.exists():
            self._import(legacy)

    def close(self) -> None:
        self._db.close()

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Gather every write made inside into one transaction, committed when the block
        ends, however it ends: python-omemo has acted on what it wrote (and writes of its
        background signed-prekey rotation may be among them).

        Raises: OmemoStateError: The transaction cannot be committed.
        """
        if self._pending is not None:
            raise OmemoStateError("OMEMO operations do not nest")
        pending: dict[str, object] = {}
        self._pending = pending
        try:
            yield
        finally:
            self._pending = None
            self._commit(pending)

    async def _load(self, key: str) -> Maybe[JSONType]:
        if self._pending is not None and key in self._pending:
            value = self._pending[key]
            return Nothing() if value is _DELETED else Just(cast(JSONType, value))
        try:
            row = self._db.execute("SELECT value FROM omemo_state WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as error:
            raise OmemoStateError(f"{self._path}: cannot read the OMEMO state: {error}") from error
        return Nothing() if row is None else Just(cast(JSONType, json.loads(row[0])))

    async def _store(self, key: str, value: JSONType) -> None:
        """Raises: OmemoStateError: Outside an operation, the value cannot be written."""
        if self._pending is not None:
            self._pending[key] = value
        else:
            self._commit({key: value})

    async def _delete(self, key: str) -> None:
        """Raises: OmemoStateError: Outside an operation, the value cannot be deleted."""
        if self._pending is not None:
            self._pending[key] = _DELETED
        else:
            self._commit({key: _DELETED})

    def _commit(self, changes: dict[str, object]) -> None:
        if not changes:
            return
        try:
            with self._db:  # BEGIN ... COMMIT, or ROLLBACK on an error
                self._db.execute("BEGIN IMMEDIATE")
                for key, value in changes.items():
                    if value is _DELETED:
                        self._db.execute("DELETE FROM omemo_state WHERE key = ?", (key,))
                    else:
                        self._db.execute(
                            "INSERT INTO omemo_state (key, value) VALUES (?, ?)"
                            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (key, json.dumps(value, separators=(",", ":"))),
                        )
        except sqlite3.Error as error:
            raise OmemoStateError(f"{self._path}: cannot write the OMEMO state: {error}") from error

    def _import(self, legacy: Path) -> None:
        data = read_private(legacy, max_bytes=_MAX_LEGACY_STATE, error=OmemoStateError)
        try:
            values = json.loads(data) if data else {}
        except ValueError as error:
            raise OmemoStateError(f"{legacy} is not the client's OMEMO state") from error
        if not isinstance(values, dict):
            raise OmemoStateError(f"{legacy} is not the client's OMEMO state")
        self._commit(dict(values))
        try:
            legacy.unlink()  # one copy of the keys, never two devices from one state
        except OSError as error:
            raise OmemoStateError(f"{legacy}: imported, but cannot be removed: {error}") from error
