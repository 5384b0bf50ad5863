"""The OMEMO sender's relay through the gateway: the app's own devices over its API, and
recipients' device lists and bundles from the key lookups that precede each seal.

The gateway serves the app JID's device list from the bundles published to it, so a
device list is never uploaded: publishing a bundle lists its device.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from typing import Protocol, TypeVar

import aiohttp

from cmaas.clientservice.api import ApiError
from cmaas.clientservice.errors import GatewayUnavailable
from cmaas.clientservice.omemo.errors import OmemoTransportError
from cmaas.clientservice.omemo.transport import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
)
from cmaas.wire import (
    KeyTransportRequest,
    OmemoBundle,
    OmemoDevices,
    RecipientOmemo,
    WireError,
)
from cmaas.xmpp.omemo import LEGACY_OMEMO_NAMESPACE, bundle_element, bundle_from_xml

__all__ = ["GatewayDirectory", "OmemoApi"]

T = TypeVar("T")
_RELAY_FAILURES = (ApiError, GatewayUnavailable, WireError, aiohttp.ClientError, TimeoutError)


class OmemoApi(Protocol):
    """What the relay needs of the client's transport (HTTP or XMPP)."""

    async def omemo_devices(self) -> OmemoDevices: ...

    async def publish_omemo_device(self, bundle: OmemoBundle) -> None: ...

    async def retire_omemo_device(self, device_id: int) -> None: ...

    async def send_key_transport(self, request: KeyTransportRequest) -> None: ...


def _device_list_xml(device_ids: list[int]) -> str:
    root = ET.Element(f"{{{LEGACY_OMEMO_NAMESPACE}}}list")
    for device_id in device_ids:
        ET.SubElement(root, f"{{{LEGACY_OMEMO_NAMESPACE}}}device", id=str(device_id))
    return ET.tostring(root, encoding="unicode")


class GatewayDirectory:
    """:class:`~cmaas.clientservice.omemo.OmemoDirectory` over the gateway.

    Recipients' items come from :meth:`offer`, fed with each key lookup's ``omemo``
    answer, so that sealing makes no round trip of its own.
    """

    def __init__(self, api: OmemoApi, own_jid: str) -> None:
        self._api = api
        self._own_jid = own_jid
        self._recipients: dict[str, RecipientOmemo] = {}

    def offer(self, jid: str, omemo: RecipientOmemo) -> None:
        """What the latest key lookup of ``jid`` relayed."""
        self._recipients[jid] = omemo

    async def fetch_device_list(self, jid: str) -> DeviceListItem | None:
        if jid == self._own_jid:
            devices = await self._own_devices()
            return DeviceListItem(jid, _device_list_xml([d.device_id for d in devices.devices]))
        found = self._recipients.get(jid)
        if found is None or found.device_list is None:
            if found is not None and found.unreadable is not None:
                raise OmemoTransportError(found.unreadable.detail)
            return None
        return DeviceListItem(jid, found.device_list)

    async def fetch_bundle(self, jid: str, device_id: int) -> BundleItem | None:
        if jid == self._own_jid:
            for bundle in (await self._own_devices()).devices:
                if bundle.device_id == device_id:
                    xml = ET.tostring(bundle_element(bundle).xml, encoding="unicode")
                    return BundleItem(jid, device_id, xml)
            return None
        found = self._recipients.get(jid)
        for relayed in found.bundles if found is not None else ():
            if relayed.device_id == device_id:
                return BundleItem(jid, device_id, relayed.xml)
        return None

    async def publish_device_list(self, item: DeviceListItem) -> None:
        """Nothing to do: the gateway lists the devices whose bundles it holds."""

    async def publish_bundle(self, item: BundleItem) -> None:
        try:
            bundle = bundle_from_xml(item.device_id, item.xml)
        except WireError as error:
            raise OmemoTransportError(f"this device's own bundle: {error}") from error
        await self._call(self._api.publish_omemo_device(bundle))

    async def retract_bundle(self, jid: str, device_id: int) -> None:
        await self._call(self._api.retire_omemo_device(device_id))

    async def send_key_transport(self, message: KeyTransport) -> None:
        await self._call(self._api.send_key_transport(KeyTransportRequest(message.to, message.xml)))

    async def _own_devices(self) -> OmemoDevices:
        return await self._call(self._api.omemo_devices())

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        """Raises: OmemoTransportError: The gateway refused, could not be reached, or
        answered off the contract."""
        try:
            return await call
        except (
            ApiError,
            GatewayUnavailable,
            WireError,
            aiohttp.ClientError,
            TimeoutError,
        ) as error:
            raise OmemoTransportError(f"{type(error).__name__}: {error}") from error
