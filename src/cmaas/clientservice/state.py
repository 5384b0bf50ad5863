"""The client service's own files: the app signing key, the recipients' pinned device
keys, and the status-event cursor. Private (0600), written atomically, portable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cmaas.clientservice.errors import ClientStateError
from cmaas.envelope import PrivateKey, fingerprint, generate_private_key
from cmaas.private_files import read_private, write_private

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


_MAX_FILE = 4 * 1024 * 1024


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
    """Recipients' device identity keys, pinned on first use per (JID, device id)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        data = read_private(path, max_bytes=_MAX_FILE, error=ClientStateError)
        try:
            loaded = json.loads(data) if data else {}
        except ValueError as error:
            raise ClientStateError(f"{path} is not the client's pin file") from error
        if not isinstance(loaded, dict):
            raise ClientStateError(f"{path} is not the client's pin file")
        self._pins: dict[str, dict[str, str]] = loaded

    def knows(self, jid: str) -> bool:
        """Whether any device of ``jid`` is pinned."""
        return bool(self._pins.get(jid))

    def pinned(self, jid: str, device_id: int) -> bool:
        return str(device_id) in self._pins.get(jid, {})

    def changed(self, jid: str, device_id: int, identity_key: bytes) -> bool:
        """Whether the device presents another identity key than the one pinned."""
        pinned = self._pins.get(jid, {}).get(str(device_id))
        return pinned is not None and pinned != fingerprint(identity_key)

    def pin(self, jid: str, devices: dict[int, bytes]) -> None:
        """Pin the devices not pinned yet (the others must have passed :meth:`changed`).

        Raises: ClientStateError: The file cannot be written.
        """
        known = self._pins.setdefault(jid, {})
        new = {str(d): fingerprint(k) for d, k in devices.items() if str(d) not in known}
        if new:
            known.update(new)
            write_private(self._path, json.dumps(self._pins).encode(), error=ClientStateError)


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
