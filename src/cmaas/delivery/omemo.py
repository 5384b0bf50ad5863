"""An app's own legacy OMEMO devices: what the HTTP API and the ad-hoc commands both call
to publish, retire and list them, to read what people's clients sent to the app's JID,
and to send key transports, so that both apply the same limits.

The gateway relays ``<encrypted/>`` elements both ways without opening them: it checks
the header (which device sealed it, for which devices) and nothing else, and never logs
them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cmaas.delivery.doorbells import Doorbells
from cmaas.delivery.errors import InvalidRequest, NotFound, Unavailable, UnknownOmemoDevice
from cmaas.keystore import (
    App,
    DeviceNotFound,
    IdentityKeyMismatch,
    Keystore,
    PrekeyPoolFull,
    TooManyDevices,
)
from cmaas.wire import (
    KeyTransportRequest,
    OmemoBundle,
    OmemoDevices,
    OmemoInboundPage,
    WireError,
)
from cmaas.wire.omemo import MAX_OMEMO_ID
from cmaas.wire.omemo_message import parse_encrypted

__all__ = ["AppOmemo", "OmemoLimits", "parse_device_id"]


@dataclass(frozen=True, slots=True)
class OmemoLimits:
    """``max_devices``: OMEMO devices per app (``CMAAS_OMEMO_MAX_DEVICES``);
    ``max_prekeys``: prekeys per bundle (``CMAAS_OMEMO_MAX_PREKEYS``);
    ``max_inbound``: elements from people's clients kept per app until they are
    ``inbound_retention_s`` old (beyond it, more are refused with ``resource-constraint``);
    ``max_inbound_per_sender``: of those, from any one sender (bare JID), so that one
    sender cannot take every place."""

    max_devices: int = 16
    max_prekeys: int = 100
    max_inbound: int = 1000
    max_inbound_per_sender: int = 100
    inbound_retention_s: int = 7 * 86_400


MAX_INBOUND_PER_READ = 100


class KeyTransportSender(Protocol):
    """The component, as key transports see it."""

    def send_key_transport(self, app_id: str, recipient: str, omemo_xml: str) -> bool:
        """Write one key transport from the app's JID; ``False`` if the link is down."""
        ...


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

    def __init__(
        self,
        keystore: Keystore,
        limits: OmemoLimits,
        sender: KeyTransportSender | None = None,
        *,
        clock: Callable[[], float] = time.time,
        bells: Doorbells | None = None,
    ) -> None:
        self._keystore = keystore
        self.limits = limits
        self._sender = sender
        self._clock = clock
        self._bells = bells or Doorbells()

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

    async def received(self, app_id: str, sender: str, xml: str) -> bool:
        """Keep an ``<encrypted/>`` element that ``sender`` (a bare JID) sent to the app's
        JID, for the app's client service, and wake its readers.

        Returns: False when the app already holds as many as it may, in all or from
            ``sender`` (the caller bounces it with ``resource-constraint``).
        Raises: WireError: Not a legacy-OMEMO element; sqlite3.IntegrityError: No such app.
        """
        parse_encrypted(xml)
        seq = await self._keystore.omemo.add_inbound(
            app_id,
            sender,
            xml.encode(),
            int(self._clock() * 1000),
            max_items=self.limits.max_inbound,
            max_per_sender=self.limits.max_inbound_per_sender,
        )
        if seq is None:
            return False
        self._bells.ring(app_id)
        return True

    async def inbound(self, app: App, after: int, wait_s: float) -> OmemoInboundPage:
        """What people's clients sent to the app's JID after ``after``; waits up to
        ``wait_s`` for the first one."""
        items = await self._bells.read(
            app.app_id,
            lambda: self._keystore.omemo.inbound_after(app.app_id, after, MAX_INBOUND_PER_READ),
            wait_s,
        )
        return OmemoInboundPage(tuple(items), items[-1].seq if items else after)

    def release(self) -> None:
        """Wake every waiting read (the gateway is stopping)."""
        self._bells.release()

    async def purge_inbound(self) -> int:
        """Drop elements older than the retention; returns how many."""
        horizon = int((self._clock() - self.limits.inbound_retention_s) * 1000)
        return await self._keystore.omemo.purge_inbound(horizon)

    async def send_key_transport(self, app: App, body: object) -> None:
        """Send a key transport from the app's JID to a person.

        Raises:
            InvalidRequest: Not a key transport, or sealed by a device the app has not
                published.
            Unavailable: The gateway is not connected to its IM server.
        """
        try:
            request = KeyTransportRequest.from_json(body)
        except WireError as error:
            raise InvalidRequest(str(error)) from error
        header = parse_encrypted(request.xml)
        if header.sender_device not in await self._keystore.omemo.device_ids(app.app_id):
            raise UnknownOmemoDevice(
                f"sealed by OMEMO device {header.sender_device}, which this app has not published"
            )
        if self._sender is None or not self._sender.send_key_transport(
            app.app_id, request.to, request.xml
        ):
            raise Unavailable("the gateway is not connected to its IM server")
