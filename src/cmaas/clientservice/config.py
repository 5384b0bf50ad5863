"""The client service's settings, from ``CMAAS_CLIENT_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
        log_level: ``CMAAS_LOG_LEVEL``.
    """

    config: ClientConfig
    webhook: str | None
    log_level: str


def client_config(env: Mapping[str, str], *, state_dir: Path | None = None) -> ClientConfig:
    """Read ``CMAAS_CLIENT_URL``, ``_ID``, ``_SECRET``, ``_HMAC_KEY`` and ``_DIR``.

    Raises: ClientConfigError: Every problem found, in one message.
    """
    reader = VariableReader(env)
    config = _client_config(reader, state_dir)
    reader.raise_problems(ClientConfigError)
    return config


def client_settings(env: Mapping[str, str], *, log_level: str = "WARNING") -> ClientSettings:
    """:func:`client_config`, plus ``CMAAS_CLIENT_WEBHOOK`` and ``CMAAS_LOG_LEVEL``
    (``log_level`` when unset).

    Raises: ClientConfigError: Every problem found, in one message.
    """
    reader = VariableReader(env)
    settings = ClientSettings(
        config=_client_config(reader, None),
        webhook=reader.get("CMAAS_CLIENT_WEBHOOK"),
        log_level=reader.log_level(log_level),
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
    return ClientConfig(url, credentials, directory)
