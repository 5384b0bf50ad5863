"""Operator settings, read once from the environment and an optional ``.env`` file.

Every option is named ``CMAAS_*``; ``.env.example`` and ``docs/operators.md`` list
them with their defaults. The rest of the code receives a frozen :class:`Settings`
and never reads the environment itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cmaas.config import VariableReader, read_variables
from cmaas.errors import CmaasError
from cmaas.wire.omemo import MAX_OMEMO_PREKEYS

__all__ = [
    "MASTER_KEY_BYTES",
    "PostgresDatabase",
    "Settings",
    "SettingsError",
    "decode_master_key",
    "load_settings",
]

MASTER_KEY_BYTES = 32


class SettingsError(CmaasError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """A PostgreSQL database named by a ``postgresql://`` URL, which may hold a password:
    it is left out of ``repr`` and ``str``, which logs show."""

    url: str = field(repr=False)

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's configuration. Defaults are the documented ones."""

    component_jid: str
    component_secret: str = field(repr=False)
    master_key: bytes = field(repr=False)
    previous_master_key: bytes | None = field(default=None, repr=False)
    xmpp_host: str = "127.0.0.1"
    xmpp_port: int = 5347
    instance_host: str | None = None
    database: Path | PostgresDatabase = Path("cmaas.sqlite3")
    admins: frozenset[str] = frozenset()
    served_domains: frozenset[str] = frozenset()
    http_host: str = "127.0.0.1"
    http_port: int = 8480
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    adhoc_session_timeout: float = 300.0
    adhoc_session_lifetime: float = 900.0
    adhoc_sessions_per_account: int = 4
    adhoc_admin_sessions: int = 100
    adhoc_user_sessions: int = 2000
    adhoc_app_sessions: int = 1000
    xmpp_max_depth: int = 32
    prekeys_per_app: int = 10
    prekeys_per_app_window: float = 3600.0
    revoked_devices_kept: int = 32
    omemo_max_devices: int = 16
    omemo_max_prekeys: int = 100
    reconnect_max_delay: float = 30.0
    standby_retry: float = 2.0
    log_level: str = "INFO"
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    http_max_body: int = 8 * 1024 * 1024
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_max_connections: int = 900
    http_max_connections_per_ip: int = 100
    http_max_requests_per_app: int = 64
    http_max_long_polls_per_app: int = 8
    http_max_bodies_in_flight: int = 64
    resend_window: float = 15.0
    heartbeat: float = 2.0
    dead_after: float = 10.0
    outbox_bulk_limit: int = 50_000
    outbox_normal_limit: int = 200_000
    admission_workers: int = 1
    retention_days: int = 30
    webhook_timeout: float = 10.0
    webhook_max_backoff: float = 600.0
    webhook_deny_private: bool = False
    blob_dir: Path | None = None
    blob_max_bytes: int = 32 * 1024 * 1024
    blob_quota_bytes: int = 1024 * 1024 * 1024
    blob_max_count: int = 10_000
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
        SettingsError: Every missing or malformed variable, in one message.
    """
    reader = VariableReader(read_variables(env_file, environ))
    component_jid = reader.domain("CMAAS_COMPONENT_JID")
    master_key = _master_key(reader, "CMAAS_MASTER_KEY", required=True)
    settings = Settings(
        component_jid=component_jid,
        component_secret=reader.required("CMAAS_COMPONENT_SECRET"),
        master_key=master_key or b"",
        previous_master_key=_master_key(reader, "CMAAS_PREVIOUS_MASTER_KEY"),
        xmpp_host=reader.text("CMAAS_XMPP_HOST", "127.0.0.1"),
        xmpp_port=reader.port("CMAAS_XMPP_PORT", 5347),
        instance_host=reader.optional_domain("CMAAS_INSTANCE_HOST"),
        database=_database(reader, "CMAAS_DATABASE"),
        admins=reader.jids("CMAAS_ADMINS"),
        served_domains=reader.domains("CMAAS_SERVED_DOMAINS")
        or frozenset({_parent_domain(component_jid)}),
        http_host=reader.text("CMAAS_HTTP_HOST", "127.0.0.1"),
        http_port=reader.port("CMAAS_HTTP_PORT", 8480),
        trusted_proxies=reader.networks("CMAAS_TRUSTED_PROXIES"),
        adhoc_session_timeout=reader.seconds("CMAAS_ADHOC_SESSION_TIMEOUT", 300.0),
        adhoc_session_lifetime=reader.seconds("CMAAS_ADHOC_SESSION_LIFETIME", 900.0),
        adhoc_sessions_per_account=reader.integer("CMAAS_ADHOC_SESSIONS_PER_ACCOUNT", 4, 1, 1000),
        adhoc_admin_sessions=reader.integer("CMAAS_ADHOC_ADMIN_SESSIONS", 100, 1, 10**6),
        adhoc_user_sessions=reader.integer("CMAAS_ADHOC_USER_SESSIONS", 2000, 1, 10**6),
        adhoc_app_sessions=reader.integer("CMAAS_ADHOC_APP_SESSIONS", 1000, 1, 10**6),
        xmpp_max_depth=reader.integer("CMAAS_XMPP_MAX_DEPTH", 32, 8, 1000),
        prekeys_per_app=reader.integer("CMAAS_PREKEYS_PER_APP", 10, 1, 10**6),
        prekeys_per_app_window=reader.seconds("CMAAS_PREKEYS_PER_APP_WINDOW", 3600.0),
        revoked_devices_kept=reader.integer("CMAAS_REVOKED_DEVICES_KEPT", 32, 1, 10**6),
        omemo_max_devices=reader.integer("CMAAS_OMEMO_MAX_DEVICES", 16, 1, 1000),
        omemo_max_prekeys=reader.integer("CMAAS_OMEMO_MAX_PREKEYS", 100, 1, MAX_OMEMO_PREKEYS),
        reconnect_max_delay=reader.seconds("CMAAS_RECONNECT_MAX_DELAY", 30.0),
        standby_retry=reader.seconds("CMAAS_STANDBY_RETRY", 2.0),
        log_level=reader.log_level("INFO"),
        http_tls_cert=reader.file("CMAAS_HTTP_TLS_CERT"),
        http_tls_key=reader.file("CMAAS_HTTP_TLS_KEY"),
        http_max_body=reader.integer("CMAAS_HTTP_MAX_BODY", 8 * 1024 * 1024, 64 * 1024, 2**30),
        http_header_timeout=reader.seconds("CMAAS_HTTP_HEADER_TIMEOUT", 10.0),
        http_body_timeout=reader.seconds("CMAAS_HTTP_BODY_TIMEOUT", 30.0),
        http_max_connections=reader.integer("CMAAS_HTTP_MAX_CONNECTIONS", 900, 1, 10**6),
        http_max_connections_per_ip=reader.integer(
            "CMAAS_HTTP_MAX_CONNECTIONS_PER_IP", 100, 1, 10**6
        ),
        http_max_requests_per_app=reader.integer("CMAAS_HTTP_MAX_REQUESTS_PER_APP", 64, 1, 10**6),
        http_max_long_polls_per_app=reader.integer(
            "CMAAS_HTTP_MAX_LONG_POLLS_PER_APP", 8, 1, 10**6
        ),
        http_max_bodies_in_flight=reader.integer("CMAAS_HTTP_MAX_BODIES_IN_FLIGHT", 64, 1, 10**6),
        resend_window=reader.seconds("CMAAS_RESEND_WINDOW", 15.0),
        heartbeat=reader.seconds("CMAAS_HEARTBEAT", 2.0),
        dead_after=reader.seconds("CMAAS_DEAD_AFTER", 10.0),
        outbox_bulk_limit=reader.integer("CMAAS_OUTBOX_BULK_LIMIT", 50_000, 1, 10**9),
        outbox_normal_limit=reader.integer("CMAAS_OUTBOX_NORMAL_LIMIT", 200_000, 1, 10**9),
        admission_workers=reader.integer("CMAAS_ADMISSION_WORKERS", 1, 0, 64),
        retention_days=reader.integer("CMAAS_RETENTION_DAYS", 30, 1, 3650),
        webhook_timeout=reader.seconds("CMAAS_WEBHOOK_TIMEOUT", 10.0),
        webhook_max_backoff=reader.seconds("CMAAS_WEBHOOK_MAX_BACKOFF", 600.0),
        webhook_deny_private=reader.flag("CMAAS_WEBHOOK_DENY_PRIVATE"),
        blob_dir=reader.directory("CMAAS_BLOB_DIR"),
        blob_max_bytes=reader.integer("CMAAS_BLOB_MAX_BYTES", 32 * 1024 * 1024, 1024, 2**34),
        blob_quota_bytes=reader.integer("CMAAS_BLOB_QUOTA_BYTES", 2**30, 1024, 2**44),
        blob_max_count=reader.integer("CMAAS_BLOB_MAX_COUNT", 10_000, 1, 10**9),
        metrics_networks=reader.networks("CMAAS_METRICS_NETWORKS")
        or (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )
    # The checks across variables compare parsed values, so they wait until every
    # variable parsed: a rejected value stands in as its default and would mislead them.
    reader.raise_problems(SettingsError)
    if (settings.http_tls_cert is None) != (settings.http_tls_key is None):
        reader.problem("set both CMAAS_HTTP_TLS_CERT and CMAAS_HTTP_TLS_KEY, or neither")
    if settings.outbox_bulk_limit > settings.outbox_normal_limit:
        reader.problem("CMAAS_OUTBOX_BULK_LIMIT must not exceed CMAAS_OUTBOX_NORMAL_LIMIT")
    if settings.dead_after < 2 * settings.heartbeat:
        reader.problem("CMAAS_DEAD_AFTER must be at least twice CMAAS_HEARTBEAT")
    if settings.adhoc_session_lifetime < settings.adhoc_session_timeout:
        reader.problem("CMAAS_ADHOC_SESSION_LIFETIME must not be below CMAAS_ADHOC_SESSION_TIMEOUT")
    if isinstance(settings.database, PostgresDatabase) and settings.blob_dir is not None:
        reader.problem(
            "unset CMAAS_BLOB_DIR: with a PostgreSQL CMAAS_DATABASE, blobs are kept in the"
            " database, where every instance reads them"
        )
    if settings.instance_host in {settings.component_jid, *settings.served_domains}:
        reader.problem(
            "CMAAS_INSTANCE_HOST must be a host of this instance's own, not the component"
            " domain or a served domain"
        )
    if settings.previous_master_key == settings.master_key:
        reader.problem("CMAAS_PREVIOUS_MASTER_KEY must differ from CMAAS_MASTER_KEY")
    reader.raise_problems(SettingsError)
    return settings


def decode_master_key(value: str, variable: str) -> bytes:
    """Decode a base64 master key and check its length.

    Raises:
        SettingsError: The value is not base64 or not 32 bytes long.
    """
    reader = VariableReader({variable: value})
    key = _master_key(reader, variable, required=True)
    reader.raise_problems(SettingsError)
    assert key is not None
    return key


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _database(reader: VariableReader, name: str) -> Path | PostgresDatabase:
    """A SQLite file's path, or a PostgreSQL database's ``postgresql://`` URL."""
    value = reader.text(name, "cmaas.sqlite3")
    if value.startswith(_POSTGRES_SCHEMES):
        # Imported only here: PostgreSQL's driver costs a SQLite gateway 9 MiB.
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value)
        except psycopg.Error as error:
            reason = str(error)
            password = urlsplit(value).password
            if password:
                reason = reason.replace(password, "***")
            reader.problem(f"{reader.label(name)} is not a valid PostgreSQL URL: {reason}")
            return Path("cmaas.sqlite3")
        return PostgresDatabase(value)
    scheme, separator, _ = value.partition("://")
    if separator and scheme.replace("+", "").isalpha():
        reader.problem(
            f"{reader.label(name)} must be a SQLite file's path or a postgresql:// URL,"
            f" got a {scheme}:// URL"
        )
        return Path("cmaas.sqlite3")
    return Path(value)


def _master_key(reader: VariableReader, name: str, *, required: bool = False) -> bytes | None:
    return reader.base64_bytes(
        name,
        size=MASTER_KEY_BYTES,
        required=required,
        hint="generate one with `cmaas admin master-key-generate`",
    )


def _parent_domain(component_domain: str) -> str:
    """``gateway.example.org`` serves ``example.org`` unless told otherwise."""
    return component_domain.split(".", 1)[1] if "." in component_domain else component_domain
