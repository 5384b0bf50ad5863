"""How a reference device reaches its account and the gateway, and where it keeps state."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmaas.config import VariableReader
from cmaas.device.errors import DeviceError

__all__ = [
    "DEFAULT_STATE_DIR",
    "FLAGS",
    "DeviceConfig",
    "DeviceConfigError",
    "DeviceSettings",
    "device_settings",
    "device_state_dir",
]

WEEK_S = 7 * 24 * 3600

DEFAULT_STATE_DIR = Path.home() / ".config" / "cmaas" / "device"

# The ``cmaas device`` flags and the variables they stand in for; problems name both,
# since either may have supplied the value.
FLAGS = {
    "jid": "CMAAS_DEVICE_JID",
    "dir": "CMAAS_DEVICE_DIR",
    "gateway": "CMAAS_DEVICE_GATEWAY",
    "host": "CMAAS_DEVICE_HOST",
    "port": "CMAAS_DEVICE_PORT",
    "plaintext": "CMAAS_DEVICE_PLAINTEXT",
}
_LABELS = {variable: f"--{flag} or {variable}" for flag, variable in FLAGS.items()}


class DeviceConfigError(DeviceError):
    """A device setting is missing or malformed; the message names the flag and variable."""


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Attributes:
    jid: The account's bare JID; the device is one resource of it.
    password: The account's XMPP password (never stored by the device).
    gateway: The gateway's component domain, e.g. ``gateway.example.org``.
    state_dir: Holds ``keyring.json`` (private keys, 0600), ``pins.json`` and
        ``seen.json``.
    host, port: Where the XMPP server listens; by default the JID's domain, 5222.
    require_tls: False only for a server on loopback without TLS (tests, demos).
    resource: The XMPP resource this device binds.
    passphrase: Decrypts the key file when it is encrypted.
    signed_prekey_max_age_s: Age after which the signed prekey is rotated.
    read_at_once: Send the displayed marker as soon as a message is shown.
    maintenance_interval_s: How often a connected device checks whether its signed
        prekey is due for rotation.
    """

    jid: str
    password: str
    gateway: str
    state_dir: Path
    host: str | None = None
    port: int = 5222
    require_tls: bool = True
    resource: str = "cmaas-device"
    passphrase: str | None = None
    signed_prekey_max_age_s: int = WEEK_S
    read_at_once: bool = False
    maintenance_interval_s: float = 3600.0

    @property
    def keyring_path(self) -> Path:
        return self.state_dir / "keyring.json"

    @property
    def pins_path(self) -> Path:
        return self.state_dir / "pins.json"

    @property
    def seen_path(self) -> Path:
        return self.state_dir / "seen.json"


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """What ``cmaas device`` reads: the device's :class:`DeviceConfig` and the command's
    log level (``CMAAS_LOG_LEVEL``)."""

    config: DeviceConfig
    log_level: str


def device_settings(
    variables: Mapping[str, str], *, connects: bool = True, **extra: Any
) -> DeviceSettings:
    """Read the ``CMAAS_DEVICE_*`` variables (flags already merged over them).

    Args:
        connects: False for a command that never connects (``init``): the password,
            gateway and server are then neither read nor required, and left empty.
        extra: Further :class:`DeviceConfig` fields, from the command.

    Raises: DeviceConfigError: Every problem found, in one message.
    """
    reader = VariableReader(variables, _LABELS)
    jid = _bare_jid(reader, reader.required("CMAAS_DEVICE_JID"))
    password, gateway, host, port, plaintext = "", "", None, 5222, False
    if connects:
        password = (
            reader.secret("CMAAS_DEVICE_PASSWORD", required=True, hint="the account's password")
            or ""
        )
        gateway = (
            reader.get("CMAAS_DEVICE_GATEWAY")
            or reader.get("CMAAS_COMPONENT_JID")
            or reader.required("CMAAS_DEVICE_GATEWAY")
        )
        host = reader.get("CMAAS_DEVICE_HOST")
        port = reader.port("CMAAS_DEVICE_PORT", 5222)
        plaintext = reader.flag("CMAAS_DEVICE_PLAINTEXT")
        if plaintext and not _is_loopback(host):
            reader.problem("--plaintext is only allowed with a loopback --host")
    settings = DeviceSettings(
        DeviceConfig(
            jid=jid,
            password=password,
            gateway=gateway,
            state_dir=device_state_dir(variables),
            host=host,
            port=port,
            require_tls=not plaintext,
            passphrase=reader.secret("CMAAS_DEVICE_PASSPHRASE"),
            **extra,
        ),
        log_level=reader.log_level("WARNING"),
    )
    reader.raise_problems(DeviceConfigError)
    return settings


def device_state_dir(variables: Mapping[str, str]) -> Path:
    """``CMAAS_DEVICE_DIR``, for the commands that only touch the device's files."""
    return VariableReader(variables).directory("CMAAS_DEVICE_DIR") or DEFAULT_STATE_DIR


def _bare_jid(reader: VariableReader, text: str) -> str:
    """The JID as servers stamp it (case-folded, normalised), which bundles must name."""
    from slixmpp import JID
    from slixmpp.jid import InvalidJID

    if not text:
        return ""
    label = reader.label("CMAAS_DEVICE_JID")
    try:
        jid = JID(text)
    except InvalidJID as error:
        reader.problem(f"{label}: {text!r} is not a JID: {error}")
        return ""
    if not jid.user or jid.resource:
        reader.problem(f"{label}: {text!r} must be a bare JID such as alice@example.org")
        return ""
    return str(jid.bare)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
