"""Errors raised by the reference device: its files (key file, pins, seen messages),
its XMPP session and the gateway's answers to its commands.

All derive from :class:`DeviceError`; the message says what went wrong and, where it
can, what to do.
"""

from cmaas.errors import CmaasError

__all__ = [
    "ConnectionFailed",
    "DeviceError",
    "DeviceFileError",
    "GatewayRefused",
    "KeyFileError",
    "KeyFileExists",
    "PassphraseRequired",
    "WrongPassphrase",
]


class DeviceError(CmaasError):
    """Root of every device error."""


class DeviceFileError(DeviceError):
    """A device file cannot be read or written: damaged, unreadable, wrong
    permissions, or the disk refused the write."""


class KeyFileError(DeviceFileError):
    """The key file is missing, damaged, readable by others, or in use by another process."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open the key file (or its ciphertext was damaged:
    authenticated encryption cannot tell the two apart)."""


class PassphraseRequired(KeyFileError):
    """The key file is encrypted and no passphrase was given."""


class KeyFileExists(KeyFileError):
    """A key file is already there; creating a device never overwrites one."""


class ConnectionFailed(DeviceError):
    """No usable XMPP session: the server is unreachable or refused the password, the
    device is not connected, or the key file belongs to another account."""


class GatewayRefused(DeviceError):
    """The gateway refused a device command (publish, list, revoke); the message says why."""
