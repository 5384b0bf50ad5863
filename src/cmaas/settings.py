"""Operator settings, read once from the environment and an optional ``.env`` file.

Every option is named ``CMAAS_*``; ``.env.example`` and ``docs/operators.md`` list
them with their defaults. The rest of the code receives a frozen :class:`Settings`
and never reads the environment itself.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from cmaas.errors import CmaasError
from cmaas.identifiers import InvalidIdentifier, parse_bare_jid, parse_domain

__all__ = [
    "MASTER_KEY_BYTES",
    "Settings",
    "SettingsError",
    "decode_master_key",
    "load_settings",
]

MASTER_KEY_BYTES = 32


class SettingsError(CmaasError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's configuration. Defaults are the documented ones."""

    component_jid: str
    component_secret: str = field(repr=False)
    master_key: bytes = field(repr=False)
    previous_master_key: bytes | None = field(default=None, repr=False)
    xmpp_host: str = "127.0.0.1"
    xmpp_port: int = 5347
    database: Path = Path("cmaas.sqlite3")
    admins: frozenset[str] = frozenset()
    served_domains: frozenset[str] = frozenset()
    http_host: str = "127.0.0.1"
    http_port: int = 8480
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    adhoc_session_timeout: float = 300.0
    reconnect_max_delay: float = 30.0
    log_level: str = "INFO"


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> Settings:
    """Build the settings from ``environ`` over the values in ``env_file``.

    Variables set in the environment win over the file, as python-dotenv does
    by default, so an operator can override one value for one run.

    Args:
        environ: The variables to read; ``os.environ`` when ``None``.
        env_file: A dotenv file to read first; skipped when missing or ``None``.

    Returns:
        The validated, frozen settings.

    Raises:
        SettingsError: A required variable is missing or a value is malformed.
    """
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    reader = _Reader(merged)
    component_jid = reader.domain("CMAAS_COMPONENT_JID")
    settings = Settings(
        component_jid=component_jid,
        component_secret=reader.required("CMAAS_COMPONENT_SECRET"),
        master_key=decode_master_key(reader.required("CMAAS_MASTER_KEY"), "CMAAS_MASTER_KEY"),
        previous_master_key=reader.optional_master_key("CMAAS_PREVIOUS_MASTER_KEY"),
        xmpp_host=reader.text("CMAAS_XMPP_HOST", "127.0.0.1"),
        xmpp_port=reader.port("CMAAS_XMPP_PORT", 5347),
        database=Path(reader.text("CMAAS_DATABASE", "cmaas.sqlite3")),
        admins=reader.jids("CMAAS_ADMINS"),
        served_domains=reader.domains("CMAAS_SERVED_DOMAINS")
        or frozenset({_parent_domain(component_jid)}),
        http_host=reader.text("CMAAS_HTTP_HOST", "127.0.0.1"),
        http_port=reader.port("CMAAS_HTTP_PORT", 8480),
        trusted_proxies=reader.networks("CMAAS_TRUSTED_PROXIES"),
        adhoc_session_timeout=reader.seconds("CMAAS_ADHOC_SESSION_TIMEOUT", 300.0),
        reconnect_max_delay=reader.seconds("CMAAS_RECONNECT_MAX_DELAY", 30.0),
        log_level=reader.choice("CMAAS_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    if settings.previous_master_key == settings.master_key:
        raise SettingsError("CMAAS_PREVIOUS_MASTER_KEY must differ from CMAAS_MASTER_KEY")
    return settings


def decode_master_key(value: str, variable: str) -> bytes:
    """Decode a base64 master key and check its length.

    Raises:
        SettingsError: The value is not base64 or not 32 bytes long.
    """
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(f"{variable} is not valid base64") from exc
    if len(key) != MASTER_KEY_BYTES:
        raise SettingsError(
            f"{variable} must decode to {MASTER_KEY_BYTES} bytes, got {len(key)};"
            " generate one with `cmaas admin master-key-generate`"
        )
    return key


def _parent_domain(component_domain: str) -> str:
    """``gateway.example.org`` serves ``example.org`` unless told otherwise."""
    return component_domain.split(".", 1)[1] if "." in component_domain else component_domain


class _Reader:
    """Typed accessors that name the offending variable in every error."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def _get(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def required(self, name: str) -> str:
        value = self._get(name)
        if value is None:
            raise SettingsError(f"{name} is required")
        return value

    def text(self, name: str, default: str) -> str:
        return self._get(name) or default

    def domain(self, name: str) -> str:
        try:
            return parse_domain(self.required(name))
        except InvalidIdentifier as exc:
            raise SettingsError(f"{name}: {exc}") from exc

    def port(self, name: str, default: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise SettingsError(f"{name} must be a TCP port (1-65535), got {value!r}")
        return int(value)

    def seconds(self, name: str, default: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number of seconds, got {value!r}") from exc
        if not 0 < seconds <= 86400:
            raise SettingsError(f"{name} must be between 0 and 86400 seconds, got {value!r}")
        return seconds

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self._get(name) or default).upper()
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def jids(self, name: str) -> frozenset[str]:
        value = self._get(name)
        if value is None:
            return frozenset()
        try:
            return frozenset(parse_bare_jid(item) for item in value.split(",") if item.strip())
        except InvalidIdentifier as exc:
            raise SettingsError(f"{name}: {exc}") from exc

    def domains(self, name: str) -> frozenset[str]:
        value = self._get(name)
        if value is None:
            return frozenset()
        try:
            return frozenset(parse_domain(item) for item in value.split(",") if item.strip())
        except InvalidIdentifier as exc:
            raise SettingsError(f"{name}: {exc}") from exc

    def networks(self, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        value = self._get(name)
        if value is None:
            return ()
        try:
            return tuple(
                ipaddress.ip_network(item.strip()) for item in value.split(",") if item.strip()
            )
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from exc

    def optional_master_key(self, name: str) -> bytes | None:
        value = self._get(name)
        return None if value is None else decode_master_key(value, name)
