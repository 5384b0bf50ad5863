"""How the OMEMO sender reaches the recipients' published OMEMO data.

Legacy OMEMO publishes a device list and one bundle per device over PEP. The client service
holds no XMPP account of its own, so the gateway relays these items; this module is the
typed contract of that relay. Items travel as the XML text of the PEP item's payload, and
are validated by this package (never by the relay), so that what a server returns is
checked by the party that relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BundleItem", "DeviceListItem", "KeyTransport", "OmemoDirectory"]


@dataclass(frozen=True, slots=True)
class DeviceListItem:
    """A JID's legacy-OMEMO device list.

    Attributes:
        jid: The bare JID that publishes it.
        xml: The ``<list xmlns='eu.siacs.conversations.axolotl'>`` element as XML text.
    """

    jid: str
    xml: str


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One device's legacy-OMEMO bundle (PEP node
    ``eu.siacs.conversations.axolotl.bundles:<device_id>``).

    Attributes:
        jid: The bare JID that publishes it.
        device_id: The device it belongs to.
        xml: The ``<bundle xmlns='eu.siacs.conversations.axolotl'>`` element as XML text.
    """

    jid: str
    device_id: int
    xml: str


@dataclass(frozen=True, slots=True)
class KeyTransport:
    """An ``<encrypted/>`` element without a payload that python-omemo sends on its own, to
    complete a key exchange or to move a ratchet forward.

    Attributes:
        to: The bare JID it is for.
        xml: The ``<encrypted xmlns='eu.siacs.conversations.axolotl'>`` element as XML text.
    """

    to: str
    xml: str


class OmemoDirectory(Protocol):
    """The relay to the published OMEMO data of the app's own JID and of its recipients.

    Every method raises :class:`~cmaas.clientservice.omemo.errors.OmemoTransportError` on a
    technical failure; an item that does not exist is None, never an error.
    """

    async def fetch_device_list(self, jid: str) -> DeviceListItem | None: ...

    async def fetch_bundle(self, jid: str, device_id: int) -> BundleItem | None: ...

    async def publish_device_list(self, item: DeviceListItem) -> None: ...

    async def publish_bundle(self, item: BundleItem) -> None: ...

    async def retract_bundle(self, jid: str, device_id: int) -> None: ...

    async def send_key_transport(self, message: KeyTransport) -> None: ...
