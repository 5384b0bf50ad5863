"""Reading one JSON object of the wire contract field by field, with typed refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from cmaas.wire.errors import WireError

__all__ = ["ObjectReader"]

T = TypeVar("T")
_NUMBER_DIGITS = 20


class ObjectReader:
    """The fields of one JSON object; every accessor raises :class:`WireError` naming the
    field when it is missing or of the wrong type.

    Raises (constructor): WireError: Not an object.
    """

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, Mapping):
            raise WireError(f"{what} must be a JSON object")
        self._value = value
        self._what = what

    def unknown(self, known: frozenset[str]) -> list[str]:
        return sorted(str(key) for key in self._value if key not in known)

    def has(self, key: str) -> bool:
        return self._value.get(key) is not None

    def raw(self, key: str) -> object:
        return self._value.get(key)

    def _typed(self, key: str, kind: type[T], noun: str) -> T:
        value = self._value.get(key)
        # bool is an int to Python, never to the contract.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WireError(f"{self._what}.{key} must be {noun}")
        return value

    def text(self, key: str) -> str:
        return self._typed(key, str, "a string")

    def optional_text(self, key: str) -> str | None:
        return None if self._value.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._typed(key, int, "a whole number")
        if len(str(abs(value))) > _NUMBER_DIGITS:
            raise WireError(f"{self._what}.{key} is out of range")
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if self._value.get(key) is None else self.integer(key)

    def boolean(self, key: str) -> bool:
        return self._typed(key, bool, "true or false")

    def array(self, key: str) -> list[object]:
        return self._typed(key, list, "a list")

    def mapping(self, key: str) -> Mapping[str, object]:
        return self._typed(key, Mapping, "an object")  # type: ignore[type-abstract]
