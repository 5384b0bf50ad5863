"""App keys pinned on first use: which signing key the device trusts for each app JID.

The first message from an app pins its key; a later message signed with another key
raises :class:`~cmaas.envelope.errors.AppKeyChanged`. Its key is then kept as an *offer*
(when the message's signature verifies under it), and only the user's explicit decision
(:meth:`PinStore.accept` with the fingerprint they checked with the app, or
:meth:`PinStore.replace`) moves the pin. The file is JSON, mode 0600::

    {"format": "cmaas-device-pins", "v": 1,
     "pins": {"<app JID>": {"public_key": "<base64url point>",
                            "fingerprint": "<hex SHA-256>", "first_seen_ms": 0}},
     "offers": {"<app JID>": {... the same fields ...}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmaas.device.errors import DeviceFileError
from cmaas.envelope.bundle import MAX_JID_LENGTH
from cmaas.envelope.encoding import MAX_SAFE_INTEGER, Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.envelope.keys import POINT_SIZE, fingerprint, parse_public_key
from cmaas.private_files import read_private, write_private

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
        pins, offers = self._read_all()
        pins[app_jid] = new
        offers.pop(app_jid, None)
        self._write(pins, offers)

    def offer(self, app_jid: str, public_key: bytes, now_ms: int) -> None:
        """Remember the key an app now signs with, for the user to accept or ignore.

        Raises:
            InvalidPoint: ``public_key`` is not a P-256 point.
            ValueError: ``app_jid`` or ``now_ms`` is out of range.
            DeviceFileError: The pins file is damaged or cannot be written.
        """
        new = _new_pin(app_jid, public_key, now_ms)
        pins, offers = self._read_all()
        if app_jid in offers and offers[app_jid].public_key == new.public_key:
            return
        offers[app_jid] = new
        self._write(pins, offers)

    def offers(self) -> list[tuple[str, Pin]]:
        """Keys offered by apps whose pinned key differs, sorted by app JID.

        Raises:
            DeviceFileError: The pins file is damaged or accessible to other users.
        """
        return sorted(self._read_all()[1].items())

    def accept(self, app_jid: str, fingerprint_text: str, now_ms: int) -> Pin:
        """Pin the key ``app_jid`` offered, once the user has checked its fingerprint.

        Args:
            fingerprint_text: The offered key's fingerprint as the user confirmed it with
                the app (hex; spaces and case ignored; all 64 digits).

        Raises:
            DeviceFileError: No key is offered for ``app_jid``, the fingerprint is not the
                offered key's, or the file cannot be written.
        """
        pins, offers = self._read_all()
        offered = offers.get(app_jid)
        if offered is None:
            raise DeviceFileError(f"{app_jid} has offered no new key")
        given = "".join(fingerprint_text.split()).lower()
        if given != offered.fingerprint:
            raise DeviceFileError(
                f"{given!r} is not the fingerprint of the key {app_jid} offered"
                f" ({offered.fingerprint}); nothing changed"
            )
        pins[app_jid] = Pin(offered.public_key, offered.fingerprint, now_ms)
        del offers[app_jid]
        self._write(pins, offers)
        return pins[app_jid]

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
        return self._read_all()[0]

    def _read_all(self) -> tuple[dict[str, Pin], dict[str, Pin]]:
        data = read_private(self.path, max_bytes=MAX_PINS_FILE_BYTES, error=DeviceFileError)
        if data is None:
            return {}, {}
        try:
            return _decode(data)
        except MalformedEncoding as exc:
            raise DeviceFileError(
                f"the pins file {self.path} is damaged: {exc}; removing it forgets every "
                "pinned app key"
            ) from exc

    def _write(self, pins: dict[str, Pin], offers: dict[str, Pin] | None = None) -> None:
        if offers is None:
            offers = self._read_all()[1]
        document = {
            "format": PINS_FORMAT,
            "v": 1,
            "pins": _table(pins),
            "offers": _table(offers),
        }
        write_private(self.path, canonical_json(document) + b"\n", error=DeviceFileError)


def _table(pins: dict[str, Pin]) -> dict[str, dict[str, object]]:
    return {
        app_jid: {
            "public_key": b64url(pin.public_key),
            "fingerprint": pin.fingerprint,
            "first_seen_ms": pin.first_seen_ms,
        }
        for app_jid, pin in pins.items()
    }


def _new_pin(app_jid: str, public_key: bytes, now_ms: int) -> Pin:
    if not 1 <= len(app_jid) <= MAX_JID_LENGTH:
        raise ValueError(f"an app JID must be 1 to {MAX_JID_LENGTH} characters")
    if not 0 <= now_ms <= MAX_SAFE_INTEGER:
        raise ValueError("now_ms must be between 0 and 2**53 - 1")
    parse_public_key(public_key)
    return Pin(bytes(public_key), fingerprint(public_key), now_ms)


def _decode(data: bytes) -> tuple[dict[str, Pin], dict[str, Pin]]:
    fields = Fields(
        parse_json(data, max_bytes=MAX_PINS_FILE_BYTES, what="the pins file"),
        "pins file",
        frozenset({"format", "v", "pins"}),
        frozenset({"offers"}),
    )
    fields.choice("format", (PINS_FORMAT,))
    fields.integer("v", low=1, high=1)
    offers = _decode_table(fields.raw("offers"), "offers") if fields.has("offers") else {}
    return _decode_table(fields.raw("pins"), "pins"), offers


def _decode_table(table: object, name: str) -> dict[str, Pin]:
    if not isinstance(table, dict):
        raise MalformedEncoding(f"pins file.{name} must be a JSON object")
    pins: dict[str, Pin] = {}
    for app_jid, value in table.items():
        if not 1 <= len(app_jid) <= MAX_JID_LENGTH:
            raise MalformedEncoding(f"pins file has an app JID of {len(app_jid)} characters")
        entry = Fields(
            value,
            f"pins file.{name}[{app_jid}]",
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
