"""The client service's settings, from ``CMAAS_CLIENT_*`` variables."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path

from cmaas.clientservice.api import AppCredentials
from cmaas.clientservice.client import ClientConfig
from cmaas.clientservice.errors import ClientServiceError

__all__ = ["DEFAULT_STATE_DIR", "ClientConfigError", "client_config"]

DEFAULT_STATE_DIR = Path.home() / ".config" / "cmaas" / "client"


class ClientConfigError(ClientServiceError):
    """A client setting is missing or malformed; the message names the variable."""


def client_config(env: Mapping[str, str], *, state_dir: Path | None = None) -> ClientConfig:
    """Read ``CMAAS_CLIENT_URL``, ``_ID``, ``_SECRET``, ``_HMAC_KEY`` and ``_DIR``.

    Raises: ClientConfigError: Every problem found, in one message.
    """
    problems = [
        f"{name} is required (from app-register)"
        for name in ("CMAAS_CLIENT_ID", "CMAAS_CLIENT_SECRET", "CMAAS_CLIENT_HMAC_KEY")
        if not env.get(name, "").strip()
    ]
    url = env.get("CMAAS_CLIENT_URL", "").strip() or "http://127.0.0.1:8480"
    if not url.startswith(("http://", "https://")):
        problems.append(f"CMAAS_CLIENT_URL must be an http(s) URL, got {url!r}")
    hmac_key = b""
    if env.get("CMAAS_CLIENT_HMAC_KEY", "").strip():
        try:
            hmac_key = base64.b64decode(env["CMAAS_CLIENT_HMAC_KEY"].strip(), validate=True)
        except (binascii.Error, ValueError):
            problems.append("CMAAS_CLIENT_HMAC_KEY is not base64")
    if problems:
        raise ClientConfigError("; ".join(problems))
    directory = state_dir or Path(env.get("CMAAS_CLIENT_DIR", "").strip() or DEFAULT_STATE_DIR)
    return ClientConfig(
        url,
        AppCredentials(
            env["CMAAS_CLIENT_ID"].strip(), env["CMAAS_CLIENT_SECRET"].strip(), hmac_key
        ),
        directory,
    )
