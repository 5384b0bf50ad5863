"""The client service's own files: the app signing key, the recipients' pinned device
keys, and the status-event cursor. Private (0600), written atomically, portable."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cmaas.clientservice.errors import ClientStateError
from cmaas.envelope import PrivateKey, fingerprint, generate_private_key
from cmaas.private_files import connect_private_sqlite, read_private, write_private

__all__ = [
    "DevicePins",
    "KeyChange",
    "NewDevice",
    "Registration",
    "load_or_create_app_key",
    "read_cursor",
    "write_cursor",
]


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A recipient device (of either suite) presented another identity key than the
    pinned one; it is not sealed to."""

    jid: str
    device_id: int


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A recipient that already had pinned devices (of the same suite) presented another
    one: it is pinned now and sealed to. A gateway that invents a device for a person is
    seen here first."""

    jid: str
    device_id: int
    fingerprint: str


# Pin files of earlier versions were capped at this size.
_MAX_LEGACY_PINS = 4 * 1024 * 1024
_FINGERPRINT = re.compile("[0-9a-f]{64}")


def load_or_create_app_key(path: Path) -> tuple[PrivateKey, bool]:
    """The app's ECDSA P-256 signing key, generated on first use; the private key never
    leaves this file.

    Returns: the key, and whether it was created now.
    Raises: ClientStateError: The file is unreadable, too open, or not a P-256 key.
    """
    data = read_private(path, max_bytes=64 * 1024, error=ClientStateError)
    if data is not None:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as error:
            raise ClientStateError(f"{path} is not a PEM private key") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ClientStateError(f"{path} is not a P-256 key")
        return key, False
    key = generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem, error=ClientStateError)
    return key, True


class DevicePins:
    """Recipients' device identity keys, pinned on first use per (JID, device id).

    Kept in a private SQLite file, one row per device: pinning a new person writes their
    rows, never the whole set (an app writes to millions of people), and processes that
    share the state directory see each other's pins at once and never undo one by
    rewriting the set from a stale view. A JSON file of an earlier version (``legacy``) is
    imported at the first use, then removed. The file is opened at the first use and again
    after :meth:`close`.
    """

    def __init__(self, path: Path, legacy: Path | None = None) -> None:
        self._path = path
        self._legacy = legacy
        self._db: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def knows(self, jid: str) -> bool:
        """Whether any device of ``jid`` is pinned.

        Raises: ClientStateError: The file cannot be opened or read.
        """
        return self._one("SELECT 1 FROM device_pins WHERE jid = ? LIMIT 1", (jid,)) is not None

    def pinned(self, jid: str, device_id: int) -> bool:
        """Raises: ClientStateError: The file cannot be opened or read."""
        return self._fingerprint(jid, device_id) is not None

    def changed(self, jid: str, device_id: int, identity_key: bytes) -> bool:
        """Whether the device presents another identity key than the one pinned.

        Raises: ClientStateError: The file cannot be opened or read.
        """
        pinned = self._fingerprint(jid, device_id)
        return pinned is not None and pinned != fingerprint(identity_key)

    def pin(self, jid: str, devices: dict[int, bytes]) -> None:
        """Pin the devices not pinned yet (the others must have passed :meth:`changed`);
        a device pinned meanwhile by another process keeps its first pin.

        Raises: ClientStateError: The file cannot be opened or written.
        """
        self._insert([(jid, device_id, fingerprint(key)) for device_id, key in devices.items()])

    def _fingerprint(self, jid: str, device_id: int) -> str | None:
        row = self._one(
            "SELECT fingerprint FROM device_pins WHERE jid = ? AND device_id = ?", (jid, device_id)
        )
        return None if row is None else str(row[0])

    def _one(self, query: str, parameters: tuple[object, ...]) -> tuple[object, ...] | None:
        try:
            row: tuple[object, ...] | None = (
                self._connection().execute(query, parameters).fetchone()
            )
        except sqlite3.Error as error:
            raise ClientStateError(f"{self._path}: cannot read the pins: {error}") from error
        return row

    def _insert(self, rows: list[tuple[str, int, str]]) -> None:
        if not rows:
            return
        db = self._connection()
        try:
            with db:  # BEGIN ... COMMIT, or ROLLBACK on an error
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO device_pins (jid, device_id, fingerprint) VALUES (?, ?, ?)"
                    " ON CONFLICT (jid, device_id) DO NOTHING",
                    rows,
                )
        except sqlite3.Error as error:
            raise ClientStateError(f"{self._path}: cannot write the pins: {error}") from error

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        db = connect_private_sqlite(self._path, error=ClientStateError)
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS device_pins (jid TEXT NOT NULL,"
                " device_id INTEGER NOT NULL, fingerprint TEXT NOT NULL,"
                " PRIMARY KEY (jid, device_id)) STRICT, WITHOUT ROWID"
            )
        except sqlite3.Error as error:
            db.close()
            raise ClientStateError(f"{self._path}: cannot open the pins: {error}") from error
        self._db = db
        if self._legacy is not None and self._legacy.exists():
            self._import(self._legacy)
        return db

    def _import(self, legacy: Path) -> None:
        """Pins of a JSON file ``{jid: {device_id: fingerprint}}``; removed once they are
        in the database (an import interrupted before that is repeated, to the same rows)."""
        data = read_private(legacy, max_bytes=_MAX_LEGACY_PINS, error=ClientStateError)
        rows = _legacy_pins(data or b"{}", legacy)
        self._insert(rows)
        try:
            legacy.unlink()
        except OSError as error:
            raise ClientStateError(f"{legacy}: imported, but cannot be removed: {error}") from error


def _legacy_pins(data: bytes, path: Path) -> list[tuple[str, int, str]]:
    """Raises: ClientStateError: ``data`` is not the pin file of an earlier version."""
    refused = ClientStateError(f"{path} is not the client's pin file")
    try:
        loaded = json.loads(data)
    except ValueError as error:
        raise refused from error
    if not isinstance(loaded, dict):
        raise refused
    rows = []
    for jid, devices in loaded.items():
        if not isinstance(devices, dict):
            raise refused
        for device_id, pinned in devices.items():
            if not (
                isinstance(device_id, str)
                and device_id.isascii()
                and device_id.isdigit()
                and isinstance(pinned, str)
                and _FINGERPRINT.fullmatch(pinned)
            ):
                raise refused
            rows.append((jid, int(device_id), pinned))
    return rows


class Registration:
    """What the gateway confirmed once: the app's JID, and that it holds this signing key.

    Kept per gateway URL, client id and key fingerprint, so that a short-lived client (a
    ``cmaas client send``) need not ask again on every start. A stale entry costs one
    refused submission, after which the client registers again.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def app_jid(self, gateway: str, client_id: str, key_fingerprint: str) -> str | None:
        """The app JID confirmed for exactly this gateway, app and key, if any.

        Raises: ClientStateError.
        """
        data = read_private(self._path, max_bytes=64 * 1024, error=ClientStateError)
        try:
            known = json.loads(data) if data else {}
        except ValueError:
            return None  # a damaged cache only costs the round trips it saves
        if not isinstance(known, dict):
            return None
        if (known.get("gateway"), known.get("client_id"), known.get("signing_key")) != (
            gateway,
            client_id,
            key_fingerprint,
        ):
            return None
        app_jid = known.get("app_jid")
        return app_jid if isinstance(app_jid, str) and app_jid else None

    def confirm(self, gateway: str, client_id: str, key_fingerprint: str, app_jid: str) -> None:
        """Raises: ClientStateError."""
        entry = {
            "gateway": gateway,
            "client_id": client_id,
            "signing_key": key_fingerprint,
            "app_jid": app_jid,
        }
        write_private(self._path, json.dumps(entry).encode(), error=ClientStateError)

    def forget(self) -> None:
        self._path.unlink(missing_ok=True)


def read_cursor(path: Path) -> int:
    """The last status event handled, 0 when none.

    Raises: ClientStateError.
    """
    data = read_private(path, max_bytes=64, error=ClientStateError)
    text = data.decode(errors="replace").strip() if data else "0"
    if not (text.isascii() and text.isdigit()):
        raise ClientStateError(f"{path} does not hold an event cursor")
    return int(text)


def write_cursor(path: Path, cursor: int) -> None:
    write_private(path, str(cursor).encode(), error=ClientStateError)
