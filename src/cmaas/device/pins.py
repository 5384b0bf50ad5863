"""App keys pinned on first use: which signing key the device trusts for each app JID.

The first message from an app pins its key; a later message signed with another key
raises :class:`~cmaas.envelope.errors.AppKeyChanged`, and only the user's explicit
decision (:meth:`PinStore.replace`) moves the pin. The file is JSON, mode 0600::

    {"format": "cmaas-device-pins", "v": 1,
     "pins": {"<app JID>": {"public_key": "<base64url point>",
                            "fingerprint": "<hex SHA-256>", "first_seen_ms": 0}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmaas.device._files import read_private, write_private
from cmaas.device.errors import DeviceFileError
from cmaas.envelope.bundle import MAX_JID_LENGTH
from cmaas.envelope.encoding import MAX_SAFE_INTEGER, Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.envelope.keys import POINT_SIZE, fingerprint, parse_public_key

__all__ = ["MAX_PINS_FILE_BYTES", "PINS_FORMAT", "Pin", "PinStore"]

PINS_FORMAT = "cmaas-device-pins"
MAX_PINS_FILE_BYTES = 16 * 2**20


@dataclass(frozen=True, slots=True)
class Pin:
    """A pinned app key.

    Attributes:
        public_key: The app's 65-byte uncompressed P-256 signing key.
        fingerprint: Lowercase hex SHA-256 of ``public_key``, what users compare.
        first_seen_ms: When this key was pinned (Unix milliseconds).
    """

    public_key: bytes
    fingerprint: str
    first_seen_ms: int


class PinStore:
    """Pinned app keys in one file, read afresh on every call so instances agree.

    Attributes:
        path: The pins file; missing means nothing is pinned yet.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def get(self, app_jid: str) -> bytes | None:
        """The key pinned for ``app_jid``, or None.

        Raises:
            DeviceFileError: The pins file is damaged or accessible to other users.
        """
        pin = self._read().get(app_jid)
        return None if pin is None else pin.public_key

    def pin(self, app_jid: str, public_key: bytes, now_ms: int) -> bool:
        """Pin ``public_key`` for ``app_jid`` unless a key is pinned already.

        Returns:
            True when newly pinned; False when a key (this one or another) was there.

        Raises:
            InvalidPoint: ``public_key`` is not a P-256 point.
            ValueError: ``app_jid`` or ``now_ms`` is out of range.
            DeviceFileError: The pins file is damaged or cannot be written.
        """
        new = _new_pin(app_jid, public_key, now_ms)
        pins = self._read()
        if app_jid in pins:
            return False
        pins[app_jid] = new
        self._write(pins)
        return True

    def replace(self, app_jid: str, public_key: bytes, now_ms: int) -> None:
        """Pin ``public_key`` for ``app_jid`` in place of any other.

        Only for the user's explicit decision after
        :class:`~cmaas.envelope.errors.AppKeyChanged`, never automatically.

        Raises:
            InvalidPoint: ``public_key`` is not a P-256 point.
            ValueError: ``app_jid`` or ``now_ms`` is out of range.
            DeviceFileError: The pins file is damaged or cannot be written.
        """
        new = _new_pin(app_jid, public_key, now_ms)
        pins = self._read()
        pins[app_jid] = new
        self._write(pins)

    def forget(self, app_jid: str) -> bool:
        """Drop the pin of ``app_jid``; its next message pins again.

        Returns:
            Whether a pin was there.

        Raises:
            DeviceFileError: The pins file is damaged or cannot be written.
        """
        pins = self._read()
        if pins.pop(app_jid, None) is None:
            return False
        self._write(pins)
        return True

    def items(self) -> list[tuple[str, Pin]]:
        """Every pin, sorted by app JID.

        Raises:
            DeviceFileError: The pins file is damaged or accessible to other users.
        """
        return sorted(self._read().items())

    def _read(self) -> dict[str, Pin]:
        data = read_private(self.path, max_bytes=MAX_PINS_FILE_BYTES, error=DeviceFileError)
        if data is None:
            return {}
        try:
            return _decode(data)
        except MalformedEncoding as exc:
            raise DeviceFileError(
                f"the pins file {self.path} is damaged: {exc}; removing it forgets every "
                "pinned app key"
            ) from exc

    def _write(self, pins: dict[str, Pin]) -> None:
        document = {
            "format": PINS_FORMAT,
            "v": 1,
            "pins": {
                app_jid: {
                    "public_key": b64url(pin.public_key),
                    "fingerprint": pin.fingerprint,
                    "first_seen_ms": pin.first_seen_ms,
                }
                for app_jid, pin in pins.items()
            },
        }
        write_private(self.path, canonical_json(document) + b"\n", error=DeviceFileError)


def _new_pin(app_jid: str, public_key: bytes, now_ms: int) -> Pin:
    if not 1 <= len(app_jid) <= MAX_JID_LENGTH:
        raise ValueError(f"an app JID must be 1 to {MAX_JID_LENGTH} characters")
    if not 0 <= now_ms <= MAX_SAFE_INTEGER:
        raise ValueError("now_ms must be between 0 and 2**53 - 1")
    parse_public_key(public_key)
    return Pin(bytes(public_key), fingerprint(public_key), now_ms)


def _decode(data: bytes) -> dict[str, Pin]:
    fields = Fields(
        parse_json(data, max_bytes=MAX_PINS_FILE_BYTES, what="the pins file"),
        "pins file",
        frozenset({"format", "v", "pins"}),
    )
    fields.choice("format", (PINS_FORMAT,))
    fields.integer("v", low=1, high=1)
    table = fields.raw("pins")
    if not isinstance(table, dict):
        raise MalformedEncoding("pins file.pins must be a JSON object")
    pins: dict[str, Pin] = {}
    for app_jid, value in table.items():
        if not 1 <= len(app_jid) <= MAX_JID_LENGTH:
            raise MalformedEncoding(f"pins file has an app JID of {len(app_jid)} characters")
        entry = Fields(
            value,
            f"pins file.pins[{app_jid}]",
            frozenset({"public_key", "fingerprint", "first_seen_ms"}),
        )
        public_key = entry.binary("public_key", size=POINT_SIZE)
        parse_public_key(public_key)
        expected = fingerprint(public_key)
        if entry.text("fingerprint", max_length=64) != expected:
            raise MalformedEncoding(f"the fingerprint of {app_jid} does not match its key")
        pins[app_jid] = Pin(
            public_key, expected, entry.integer("first_seen_ms", low=0, high=MAX_SAFE_INTEGER)
        )
    return pins
