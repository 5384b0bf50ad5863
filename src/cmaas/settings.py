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
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    http_max_body: int = 8 * 1024 * 1024
    resend_window: float = 15.0
    outbox_bulk_limit: int = 50_000
    outbox_normal_limit: int = 200_000
    retention_days: int = 30
    webhook_timeout: float = 10.0
    webhook_max_backoff: float = 600.0
    blob_dir: Path | None = None
    blob_max_bytes: int = 32 * 1024 * 1024
    blob_quota_bytes: int = 1024 * 1024 * 1024
    metrics_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


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
        http_tls_cert=reader.path("CMAAS_HTTP_TLS_CERT"),
        http_tls_key=reader.path("CMAAS_HTTP_TLS_KEY"),
        http_max_body=reader.integer("CMAAS_HTTP_MAX_BODY", 8 * 1024 * 1024, 64 * 1024, 2**30),
        resend_window=reader.seconds("CMAAS_RESEND_WINDOW", 15.0),
        outbox_bulk_limit=reader.integer("CMAAS_OUTBOX_BULK_LIMIT", 50_000, 1, 10**9),
        outbox_normal_limit=reader.integer("CMAAS_OUTBOX_NORMAL_LIMIT", 200_000, 1, 10**9),
        retention_days=reader.integer("CMAAS_RETENTION_DAYS", 30, 1, 3650),
        webhook_timeout=reader.seconds("CMAAS_WEBHOOK_TIMEOUT", 10.0),
        webhook_max_backoff=reader.seconds("CMAAS_WEBHOOK_MAX_BACKOFF", 600.0),
        blob_dir=reader.directory("CMAAS_BLOB_DIR"),
        blob_max_bytes=reader.integer("CMAAS_BLOB_MAX_BYTES", 32 * 1024 * 1024, 1024, 2**34),
        blob_quota_bytes=reader.integer("CMAAS_BLOB_QUOTA_BYTES", 2**30, 1024, 2**44),
        metrics_networks=reader.networks("CMAAS_METRICS_NETWORKS")
        or (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )
    if (settings.http_tls_cert is None) != (settings.http_tls_key is None):
        raise SettingsError("set both CMAAS_HTTP_TLS_CERT and CMAAS_HTTP_TLS_KEY, or neither")
    if settings.outbox_bulk_limit > settings.outbox_normal_limit:
        raise SettingsError("CMAAS_OUTBOX_BULK_LIMIT must not exceed CMAAS_OUTBOX_NORMAL_LIMIT")
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
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
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

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise SettingsError(
                f"{name} must be a whole number from {low} to {high}, got {value!r}"
            )
        return int(value)

    def directory(self, name: str) -> Path | None:
        value = self._get(name)
        return None if value is None else Path(value)

    def path(self, name: str) -> Path | None:
        value = self._get(name)
        if value is None:
            return None
        path = Path(value)
        if not path.is_file():
            raise SettingsError(f"{name}: {value!r} is not a readable file")
        return path

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
