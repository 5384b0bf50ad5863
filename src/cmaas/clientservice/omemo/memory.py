"""An :class:`~cmaas.clientservice.omemo.OmemoDirectory` kept in memory: several
:class:`~cmaas.clientservice.omemo.OmemoSender` devices in one process reach each other
through it, with no gateway and no XMPP server. For tests, benchmarks and experiments;
the client service itself relays through the gateway
(:class:`~cmaas.clientservice.omemo.directory.GatewayDirectory`).
"""

from __future__ import annotations

from cmaas.clientservice.omemo.transport import BundleItem, DeviceListItem, KeyTransport

__all__ = ["MemoryDirectory"]


class MemoryDirectory:
    """Published device lists and bundles in dicts; key transports wait in ``sent`` until
    their recipient :meth:`take` s them."""

    def __init__(self) -> None:
        self.device_lists: dict[str, str] = {}
        self.bundles: dict[tuple[str, int], str] = {}
        self.sent: list[KeyTransport] = []

    async def fetch_device_list(self, jid: str) -> DeviceListItem | None:
        xml = self.device_lists.get(jid)
        return None if xml is None else DeviceListItem(jid, xml)

    async def fetch_bundle(self, jid: str, device_id: int) -> BundleItem | None:
        xml = self.bundles.get((jid, device_id))
        return None if xml is None else BundleItem(jid, device_id, xml)

    async def publish_device_list(self, item: DeviceListItem) -> None:
        self.device_lists[item.jid] = item.xml

    async def publish_bundle(self, item: BundleItem) -> None:
        self.bundles[(item.jid, item.device_id)] = item.xml

    async def retract_bundle(self, jid: str, device_id: int) -> None:
        self.bundles.pop((jid, device_id), None)

    async def send_key_transport(self, message: KeyTransport) -> None:
        self.sent.append(message)

    def take(self, to: str) -> list[str]:
        """The XML of the key transports sent to ``to``, removed from ``sent``."""
        mine = [message.xml for message in self.sent if message.to == to]
        self.sent = [message for message in self.sent if message.to != to]
        return mine
