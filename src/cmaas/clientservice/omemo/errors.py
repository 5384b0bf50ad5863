"""Errors of the client service's legacy-OMEMO sender: one root, :class:`OmemoError`."""

from __future__ import annotations

from cmaas.clientservice.errors import ClientServiceError, DeviceKeyChanged

__all__ = [
    "NoOmemoDevices",
    "OmemoDecryptFailed",
    "OmemoError",
    "OmemoKeyChanged",
    "OmemoMalformed",
    "OmemoStateError",
    "OmemoTransportError",
]


class OmemoError(ClientServiceError):
    """Root of the legacy-OMEMO sender's errors."""


class OmemoStateError(OmemoError):
    """A file of the OMEMO state (keys, sessions, pins) is unusable or cannot be written."""


class OmemoTransportError(OmemoError):
    """A device list or bundle could not be fetched or published (a technical failure; a
    missing item is answered with None instead). Raised by :class:`OmemoDirectory`
    implementations."""


class OmemoMalformed(OmemoError):
    """A device list, bundle or ``<encrypted/>`` element from the network is not valid
    legacy OMEMO."""


class OmemoKeyChanged(OmemoError, DeviceKeyChanged):
    """Every device of the recipient that could be sealed to presented an identity key other
    than the pinned one; nothing was sealed. Also a :class:`DeviceKeyChanged`, so that code
    handling envelope devices handles this the same way."""


class NoOmemoDevices(OmemoError):
    """The recipient publishes no legacy-OMEMO device that could be sealed to (no device
    list, or no bundle could be fetched for any of its devices).

    Attributes:
        jid: The recipient.
    """

    def __init__(self, jid: str, detail: str) -> None:
        super().__init__(f"no legacy-OMEMO device of {jid} can be sealed to: {detail}")
        self.jid = jid


class OmemoDecryptFailed(OmemoError):
    """An ``<encrypted/>`` element could not be decrypted (not for this device, unknown or
    distrusted sender, broken session, tampered ciphertext)."""
