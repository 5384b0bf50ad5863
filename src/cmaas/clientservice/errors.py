"""Errors of the client service: one root, a class for each way a send can fail."""

from __future__ import annotations

from cmaas.errors import CmaasError

__all__ = [
    "ClientServiceError",
    "ClientStateError",
    "DeviceKeyChanged",
    "GatewayUnavailable",
    "NoDeviceToSeal",
]


class ClientServiceError(CmaasError):
    """Root of the client service's errors."""


class ClientStateError(ClientServiceError):
    """A file of the client's state (signing key, pins, cursor) is unusable."""


class DeviceKeyChanged(ClientServiceError):
    """Every device of the recipient presented an identity key other than the one pinned.

    A device whose key changed is never sealed to: either the user reinstalled under the
    same device id (which the gateway refuses), or someone substitutes keys.

    Attributes:
        jid: The recipient.
        device_ids: The devices whose identity key changed.
    """

    def __init__(self, jid: str, device_ids: list[int]) -> None:
        super().__init__(
            f"the identity key of device(s) {', '.join(map(str, device_ids))} of {jid}"
            " changed since it was pinned; nothing was sealed to them"
        )
        self.jid = jid
        self.device_ids = device_ids


class GatewayUnavailable(ClientServiceError):
    """The gateway could not be reached, or kept refusing for a while, within the retry time."""


class NoDeviceToSeal(ClientServiceError):
    """The recipient has no device in either suite that this message could be sealed to
    (for instance OMEMO devices only, and a file, which reaches CMaaS devices only).

    Attributes:
        jid: The recipient.
    """

    def __init__(self, jid: str, detail: str) -> None:
        super().__init__(f"nothing of {jid} can be sealed to: {detail}")
        self.jid = jid
