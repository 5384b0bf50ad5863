"""An app's own legacy OMEMO devices: what the HTTP API and the ad-hoc command both call
to publish, retire and list them, so that both apply the same limits."""

from __future__ import annotations

from dataclasses import dataclass

from cmaas.delivery.errors import InvalidRequest, NotFound
from cmaas.keystore import (
    App,
    DeviceNotFound,
    IdentityKeyMismatch,
    Keystore,
    PrekeyPoolFull,
    TooManyDevices,
)
from cmaas.wire import OmemoBundle, OmemoDevices, WireError
from cmaas.wire.omemo import MAX_OMEMO_ID

__all__ = ["AppOmemo", "OmemoLimits", "parse_device_id"]


@dataclass(frozen=True, slots=True)
class OmemoLimits:
    """``max_devices``: OMEMO devices per app (``CMAAS_OMEMO_MAX_DEVICES``);
    ``max_prekeys``: prekeys per bundle (``CMAAS_OMEMO_MAX_PREKEYS``)."""

    max_devices: int = 16
    max_prekeys: int = 100


def parse_device_id(text: str) -> int:
    """A device id as a path or form gives it.

    Raises: InvalidRequest: Not a whole number from 1 to 2**31 - 1.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidRequest(f"an OMEMO device id is a whole number from 1 to {MAX_OMEMO_ID}")
    device_id = int(text)
    if not 1 <= device_id <= MAX_OMEMO_ID:
        raise InvalidRequest(f"an OMEMO device id is a whole number from 1 to {MAX_OMEMO_ID}")
    return device_id


class AppOmemo:
    """Publishing an app's OMEMO devices, which the gateway serves as its JID's PEP."""

    def __init__(self, keystore: Keystore, limits: OmemoLimits) -> None:
        self._keystore = keystore
        self.limits = limits

    async def publish(self, app: App, device_id: int, body: object) -> bool:
        """Store or replace the bundle of the app's device ``device_id``.

        Returns: whether the device is new.
        Raises: InvalidRequest: A malformed bundle, too many prekeys or devices, or
            another identity key under a published device id.
        """
        try:
            bundle = OmemoBundle.from_json(body, device_id=device_id)
            return await self._keystore.omemo.publish(
                app.app_id,
                bundle,
                max_devices=self.limits.max_devices,
                max_prekeys=self.limits.max_prekeys,
            )
        except (WireError, PrekeyPoolFull, TooManyDevices, IdentityKeyMismatch) as error:
            raise InvalidRequest(str(error)) from error

    async def retire(self, app: App, device_id: int) -> None:
        """Raises: NotFound."""
        try:
            await self._keystore.omemo.retire(app.app_id, device_id)
        except DeviceNotFound as error:
            raise NotFound(str(error)) from error

    async def devices(self, app: App) -> OmemoDevices:
        return OmemoDevices(tuple(await self._keystore.omemo.bundles(app.app_id)))
