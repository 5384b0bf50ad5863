"""Reading ``CMAAS_*`` variables, shared by the gateway, the client service and the device.

:func:`read_variables` merges a dotenv file under the environment (the environment wins,
so an operator can override one value for one run); :class:`VariableReader` parses the
merged values. Each part keeps its own typed reader beside the type it fills
(:func:`cmaas.settings.load_settings`, :func:`cmaas.clientservice.config.client_settings`,
:func:`cmaas.device.config.device_settings`) and its own error class, so a caller can
catch one layer; all of them report every problem at once, each naming its variable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from cmaas.errors import CmaasError
from cmaas.identifiers import parse_bare_jid, parse_domain

__all__ = ["LOG_LEVELS", "VariableReader", "read_variables", "with_flags"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


def read_variables(
    env_file: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The values of ``env_file`` (skipped when ``None`` or missing) with ``environ``
    (``os.environ`` when ``None``) over them."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def with_flags(variables: Mapping[str, str], flags: Mapping[str, object]) -> dict[str, str]:
    """``variables`` with each given command-line flag in place of its variable.

    A flag left at its argparse default (``None``, ``False`` or an empty string) keeps
    the variable, so a setting given once in ``.env`` need not be repeated.
    """
    merged = dict(variables)
    for name, value in flags.items():
        if value is not None and value is not False and value != "":
            merged[name] = "1" if value is True else str(value)
    return merged


class VariableReader:
    """Typed accessors that collect problems instead of stopping at the first.

    A malformed or missing value is recorded with the variable's name (or its label:
    ``--jid or CMAAS_DEVICE_JID`` where a flag can stand in for it) and the accessor
    returns the default, so reading can go on; :meth:`raise_problems` then reports them
    all in one error.
    """

    def __init__(
        self, variables: Mapping[str, str], labels: Mapping[str, str] | None = None
    ) -> None:
        self._values = variables
        self._labels = labels or {}
        self.problems: list[str] = []

    def label(self, name: str) -> str:
        return self._labels.get(name, name)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def raise_problems(self, error: type[CmaasError]) -> None:
        if self.problems:
            raise error("; ".join(self.problems))

    def get(self, name: str) -> str | None:
        """The value without surrounding blanks; ``None`` when unset or blank."""
        value = self._values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def secret(self, name: str, *, required: bool = False, hint: str = "") -> str | None:
        """The value exactly as given: blanks may belong to a password."""
        value = self._values.get(name) or None
        if value is None and required:
            self._missing(name, hint)
        return value

    def required(self, name: str, hint: str = "") -> str:
        value = self.get(name)
        if value is None:
            self._missing(name, hint)
            return ""
        return value

    def _missing(self, name: str, hint: str) -> None:
        self.problem(f"{self.label(name)} is required" + (f" ({hint})" if hint else ""))

    def text(self, name: str, default: str) -> str:
        return self.get(name) or default

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value.startswith(("http://", "https://")):
            self.problem(f"{self.label(name)} must be an http(s) URL, got {value!r}")
            return default
        return value

    def base64_bytes(
        self, name: str, *, size: int | None = None, required: bool = False, hint: str = ""
    ) -> bytes | None:
        """Decoded bytes; ``None`` when unset or malformed. ``size`` is the exact length."""
        value = self.required(name, hint) if required else self.get(name)
        if not value:
            return None
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.problem(f"{self.label(name)} is not valid base64")
            return None
        if size is not None and len(decoded) != size:
            self.problem(
                f"{self.label(name)} must decode to {size} bytes, got {len(decoded)}"
                + (f"; {hint}" if hint else "")
            )
            return None
        return decoded

    def port(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
            self.problem(f"{self.label(name)} must be a TCP port (1-65535), got {value!r}")
            return default
        return int(value)

    def seconds(self, name: str, default: float) -> float:
        value = self.get(name)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError:
            self.problem(f"{self.label(name)} must be a number of seconds, got {value!r}")
            return default
        if not 0 < seconds <= 86400:
            self.problem(f"{self.label(name)} must be between 0 and 86400 seconds, got {value!r}")
            return default
        return seconds

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            self.problem(
                f"{self.label(name)} must be a whole number from {low} to {high}, got {value!r}"
            )
            return default
        return int(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = (self.get(name) or ("1" if default else "0")).lower()
        if value not in ("0", "1", "false", "true"):
            self.problem(f"{self.label(name)} must be 1 (or true) or 0 (or false), got {value!r}")
            return False
        return value in ("1", "true")

    def directory(self, name: str) -> Path | None:
        value = self.get(name)
        return None if value is None else Path(value)

    def file(self, name: str) -> Path | None:
        value = self.get(name)
        if value is None:
            return None
        if not Path(value).is_file():
            self.problem(f"{self.label(name)}: {value!r} is not a readable file")
            return None
        return Path(value)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.get(name) or default).upper()
        if value not in allowed:
            self.problem(f"{self.label(name)} must be one of {', '.join(allowed)}, got {value!r}")
            return default
        return value

    def log_level(self, default: str) -> str:
        return self.choice("CMAAS_LOG_LEVEL", default, LOG_LEVELS)

    def domain(self, name: str) -> str:
        return self._one_domain(name, self.required(name)) or ""

    def optional_domain(self, name: str) -> str | None:
        return self._one_domain(name, self.get(name))

    def _one_domain(self, name: str, value: str | None) -> str | None:
        parsed = self._parsed(name, [value] if value else [], parse_domain)
        return parsed[0] if parsed else None

    def jids(self, name: str) -> frozenset[str]:
        return frozenset(self._parsed(name, self._items(name), parse_bare_jid))

    def domains(self, name: str) -> frozenset[str]:
        return frozenset(self._parsed(name, self._items(name), parse_domain))

    def networks(self, name: str) -> tuple[Network, ...]:
        return tuple(self._parsed(name, self._items(name), ipaddress.ip_network))

    def _items(self, name: str) -> list[str]:
        """A comma-separated list, blanks and empty items dropped."""
        return [item.strip() for item in (self.get(name) or "").split(",") if item.strip()]

    def _parsed(self, name: str, items: list[str], parse: Callable[[str], T]) -> list[T]:
        """Every item parsed, or none: one bad item is reported and the rest dropped."""
        try:
            return [parse(item) for item in items]
        except ValueError as exc:  # InvalidIdentifier is a ValueError too
            self.problem(f"{self.label(name)}: {exc}")
            return []
