"""How a reference device reaches its account and the gateway, and where it keeps state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeviceConfig"]

WEEK_S = 7 * 24 * 3600


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
