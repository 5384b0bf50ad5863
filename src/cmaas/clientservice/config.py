"""The client service's settings, from ``CMAAS_CLIENT_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cmaas.clientservice.api import AppCredentials
from cmaas.clientservice.client import ClientConfig
from cmaas.clientservice.errors import ClientServiceError
from cmaas.config import VariableReader

__all__ = [
    "DEFAULT_STATE_DIR",
    "ClientConfigError",
    "ClientSettings",
    "client_config",
    "client_settings",
]

DEFAULT_STATE_DIR = Path.home() / ".config" / "cmaas" / "client"


class ClientConfigError(ClientServiceError):
    """A client setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What ``cmaas client`` reads: the library's :class:`ClientConfig` and the
    command's own settings.

    Attributes:
        webhook: ``CMAAS_CLIENT_WEBHOOK``, where ``cmaas client serve`` relays statuses.
        reply_webhook: ``CMAAS_CLIENT_REPLY_WEBHOOK``, where ``cmaas client serve`` relays
            what people write back from their OMEMO clients.
        log_level: ``CMAAS_LOG_LEVEL``.
        file_urls: ``CMAAS_CLIENT_FILE_URLS``, the URL prefixes the daemon may fetch a
            Sandes ``file_url`` from.
        file_timeout_s: ``CMAAS_CLIENT_FILE_TIMEOUT``.
    """

    config: ClientConfig
    webhook: str | None
    log_level: str
    file_urls: tuple[str, ...] = ()
    file_timeout_s: float = 30.0
    reply_webhook: str | None = None


def client_config(env: Mapping[str, str], *, state_dir: Path | None = None) -> ClientConfig:
    """Read ``CMAAS_CLIENT_URL``, ``_ID``, ``_SECRET``, ``_HMAC_KEY``, ``_DIR`` and
    ``_OMEMO`` (1 by default: seal to recipients' OMEMO clients too).

    Raises: ClientConfigError: Every problem found, in one message.
    """
    reader = VariableReader(env)
    config = _client_config(reader, state_dir)
    reader.raise_problems(ClientConfigError)
    return config


def client_settings(env: Mapping[str, str], *, log_level: str = "WARNING") -> ClientSettings:
    """:func:`client_config`, plus ``CMAAS_CLIENT_WEBHOOK``, ``_REPLY_WEBHOOK`` and
    ``CMAAS_LOG_LEVEL``
    (``log_level`` when unset).

    Raises: ClientConfigError: Every problem found, in one message.
    """
    reader = VariableReader(env)
    settings = ClientSettings(
        config=_client_config(reader, None),
        webhook=reader.get("CMAAS_CLIENT_WEBHOOK"),
        log_level=reader.log_level(log_level),
        file_urls=_url_prefixes(reader, "CMAAS_CLIENT_FILE_URLS"),
        file_timeout_s=reader.seconds("CMAAS_CLIENT_FILE_TIMEOUT", 30.0),
        reply_webhook=reader.get("CMAAS_CLIENT_REPLY_WEBHOOK"),
    )
    reader.raise_problems(ClientConfigError)
    return settings


def _client_config(reader: VariableReader, state_dir: Path | None) -> ClientConfig:
    hint = "from app-register"
    credentials = AppCredentials(
        reader.required("CMAAS_CLIENT_ID", hint),
        reader.required("CMAAS_CLIENT_SECRET", hint),
        reader.base64_bytes("CMAAS_CLIENT_HMAC_KEY", required=True, hint=hint) or b"",
    )
    url = reader.url("CMAAS_CLIENT_URL", "http://127.0.0.1:8480")
    directory = state_dir or reader.directory("CMAAS_CLIENT_DIR") or DEFAULT_STATE_DIR
    omemo = reader.flag("CMAAS_CLIENT_OMEMO", default=True)
    return ClientConfig(url, credentials, directory, omemo=omemo)


def _url_prefixes(reader: VariableReader, name: str) -> tuple[str, ...]:
    """Comma-separated absolute http(s) URLs, each with a host."""
    prefixes = tuple(p.strip() for p in (reader.get(name) or "").split(",") if p.strip())
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            reader.problem(f"{name}: {prefix!r} is not an http(s) URL with a host")
            return ()
    return prefixes
