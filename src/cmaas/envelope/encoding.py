"""Canonical JSON, strict JSON parsing and base64url: the envelope's byte conventions.

Canonical bytes are what gets signed and bound as AEAD data, so two implementations
must produce them identically: JSON with keys sorted by code point, no whitespace,
UTF-8, no floats. For the values the envelope uses (objects, arrays, strings, integers
below 2**53, booleans, null) this is RFC 8785 (JCS).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cmaas.envelope.errors import MalformedEncoding, OversizeInput

__all__ = [
    "CANONICAL_LAST_CHARACTERS",
    "MAX_SAFE_INTEGER",
    "Fields",
    "b64url",
    "canonical_json",
    "check_b64url",
    "decode_checked_b64url",
    "from_b64url",
    "parse_json",
]

MAX_SAFE_INTEGER = 2**53 - 1
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_BYTES = _B64URL_ALPHABET.encode("ascii")
_B64URL_VALUES = {character: value for value, character in enumerate(_B64URL_ALPHABET)}
_SPARE_BITS = {2: 0b1111, 3: 0b11}
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
CANONICAL_LAST_CHARACTERS = {
    remainder: "".join(c for c in _B64URL_ALPHABET if not _B64URL_VALUES[c] & spare)
    for remainder, spare in _SPARE_BITS.items()
}
"""The characters canonical base64url may end with, by its length modulo 4 (2 or 3):
those whose bits beyond the data's are zero."""
# One encoder for every call: json.dumps builds a new one whenever options are given.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any, *, portable: bool = False) -> bytes:
    """The canonical bytes of a JSON value.

    ``portable=True`` skips the walk over every value that :func:`parse_json` already
    made on the way in: only for a value as it came out of it.

    Raises:
        MalformedEncoding: The value holds a float, an integer beyond 2**53 - 1 or a
            lone surrogate, none of which two languages serialise alike.
    """
    if not portable:
        _check_portable(value)
    try:
        return _CANONICAL.encode(value).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as error:
        raise MalformedEncoding(f"not serialisable as canonical JSON: {error}") from error


def _check_portable(value: Any) -> None:
    # Exact type checks first: this runs over every value signed or parsed.
    kind = type(value)
    if kind is str:
        _check_text(value)
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise MalformedEncoding(f"integer {value} is beyond 2**53 - 1")
    elif kind is bool or value is None:
        return
    elif kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise MalformedEncoding("object keys must be strings")
            _check_text(key)
            _check_portable(item)
    elif kind is list or kind is tuple:
        for item in value:
            _check_portable(item)
    elif isinstance(value, str | int):  # subclasses, e.g. enums
        _check_portable(str(value) if isinstance(value, str) else int(value))
    else:
        raise MalformedEncoding(f"{kind.__name__} has no canonical JSON form")


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedEncoding("a string holds a lone surrogate") from error


def parse_json(data: bytes | str, *, max_bytes: int, what: str) -> Any:
    """Parse JSON strictly: no duplicate keys, no floats, NaN or Infinity.

    Raises:
        OversizeInput: ``data`` is longer than ``max_bytes`` (checked before parsing).
        MalformedEncoding: It is not strict JSON.
    """
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as error:
        raise MalformedEncoding(f"{what} is not valid UTF-8 text") from error
    if len(raw) > max_bytes:
        raise OversizeInput(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_int=_portable_int,
            parse_constant=_no_float,
        )
    # ValueError also covers integer literals beyond Python's digit limit.
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        if isinstance(error, MalformedEncoding):
            raise
        raise MalformedEncoding(f"{what} is not valid JSON: {error}") from error
    # What has no canonical form (lone surrogates, integers beyond 2**53) is refused
    # on the way in too, so nothing accepted here can fail to serialise later.
    # Integers are checked as they are parsed; a lone surrogate can only come from a
    # \u escape, so text without one needs no walk.
    if b"\\u" in raw:
        _check_portable(value)
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedEncoding(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _portable_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise MalformedEncoding(f"integer {value} is beyond 2**53 - 1")
    return value


def _no_float(text: str) -> Any:
    raise MalformedEncoding(f"number {text} is not an integer")


def b64url(data: bytes) -> str:
    """Base64url (RFC 4648 section 5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def check_b64url(text: object, *, what: str, size: int | None = None, max_size: int = 0) -> str:
    """Check that ``text`` is canonical unpadded base64url, of exactly ``size`` bytes
    when given, without decoding it.

    Returns: ``text``.

    Raises:
        MalformedEncoding: Not a string, padded, other characters, non-canonical
            trailing bits, or the wrong length.
        OversizeInput: Longer than ``max_size`` (when non-zero) bytes.
    """
    if not isinstance(text, str):
        raise MalformedEncoding(f"{what} must be a base64url string")
    if max_size and len(text) > (max_size * 4 + 2) // 3:
        raise OversizeInput(f"{what} is longer than {max_size} bytes")
    # Deleting the alphabet leaves nothing of base64url text: a third of a regular
    # expression's time, over every payload the gateway admits.
    if (
        not text.isascii()
        or text.encode("ascii").translate(None, _B64URL_BYTES)
        or len(text) % 4 == 1
    ):
        raise MalformedEncoding(f"{what} is not unpadded base64url")
    # Canonical: the bits of the last character beyond the data's are zero (2 or 4
    # of them when the length is 3 or 2 modulo 4), so encoding the bytes gives it back.
    if len(text) % 4 and _B64URL_VALUES[text[-1]] & _SPARE_BITS[len(text) % 4]:
        raise MalformedEncoding(f"{what} is not canonical base64url")
    if size is not None and len(text) * 3 // 4 != size:
        raise MalformedEncoding(f"{what} must be {size} bytes, not {len(text) * 3 // 4}")
    return text


def from_b64url(text: object, *, what: str, size: int | None = None, max_size: int = 0) -> bytes:
    """Decode canonical unpadded base64url, exactly ``size`` bytes long when given.

    Raises: as :func:`check_b64url`.
    """
    return decode_checked_b64url(
        check_b64url(text, what=what, size=size, max_size=max_size).encode("ascii")
    )


def decode_checked_b64url(text: bytes) -> bytes:
    """Decode base64url already checked canonical (:func:`check_b64url`)."""
    return binascii.a2b_base64(text.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(text) % 4))


class Fields:
    """Typed reads from a parsed JSON object that must hold exactly the known keys.

    Raises (from the constructor and every method):
        MalformedEncoding: A missing, unknown or wrongly typed field.
    """

    def __init__(
        self,
        value: object,
        what: str,
        required: frozenset[str],
        optional: frozenset[str] = frozenset(),
    ) -> None:
        if not isinstance(value, dict):
            raise MalformedEncoding(f"{what} must be a JSON object")
        if value.keys() != required:
            self._check_keys(value, what, required, optional)
        self._value: dict[str, object] = value
        self._what = what

    @staticmethod
    def _check_keys(
        value: dict[str, object], what: str, required: frozenset[str], optional: frozenset[str]
    ) -> None:
        missing = required - value.keys()
        if missing:
            raise MalformedEncoding(f"{what} lacks {', '.join(sorted(missing))}")
        unknown = value.keys() - required - optional
        if unknown:
            raise MalformedEncoding(f"{what} has unknown fields {', '.join(sorted(unknown))}")

    def has(self, key: str) -> bool:
        return key in self._value

    def raw(self, key: str) -> object:
        return self._value[key]

    def text(self, key: str, *, max_length: int, min_length: int = 1) -> str:
        value = self._value[key]
        if not isinstance(value, str):
            raise MalformedEncoding(f"{self._what}.{key} must be a string")
        if not min_length <= len(value) <= max_length:
            raise MalformedEncoding(
                f"{self._what}.{key} must be {min_length} to {max_length} characters"
            )
        return value

    def integer(self, key: str, *, low: int, high: int) -> int:
        value = self._value[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedEncoding(f"{self._what}.{key} must be an integer")
        if not low <= value <= high:
            raise MalformedEncoding(f"{self._what}.{key} must be between {low} and {high}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self._value[key]
        if value not in choices:
            raise MalformedEncoding(f"{self._what}.{key} must be one of {', '.join(choices)}")
        assert isinstance(value, str)
        return value

    def encoded(self, key: str, *, size: int | None = None, max_size: int = 0) -> str:
        """The field's base64url text, checked as :meth:`binary` checks it, not decoded."""
        return check_b64url(
            self._value[key], what=f"{self._what}.{key}", size=size, max_size=max_size
        )

    def binary(self, key: str, *, size: int | None = None, max_size: int = 0) -> bytes:
        return from_b64url(
            self._value[key], what=f"{self._what}.{key}", size=size, max_size=max_size
        )

    def array(self, key: str, *, max_items: int, min_items: int = 0) -> list[object]:
        value = self._value[key]
        if not isinstance(value, list):
            raise MalformedEncoding(f"{self._what}.{key} must be an array")
        if len(value) > max_items:
            raise OversizeInput(f"{self._what}.{key} has more than {max_items} items")
        if len(value) < min_items:
            raise MalformedEncoding(f"{self._what}.{key} needs at least {min_items} items")
        return value
