"""Legacy OMEMO (``eu.siacs.conversations.axolotl``) over a real account's PEP, as a
person's client publishes and reads it: an account's own nodes published with an access
model, another JID's nodes read, and :class:`PepDirectory`, the
:class:`~cmaas.clientservice.omemo.OmemoDirectory` of an ordinary client account, so that
:class:`~cmaas.clientservice.omemo.OmemoSender` can seal from it without the gateway."""

from __future__ import annotations

import asyncio
import base64
import time

from slixmpp import ClientXMPP, Message
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET, tostring

from cmaas.clientservice.omemo import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
    OmemoTransportError,
)
from cmaas.xmpp.omemo import (
    DEVICELIST_NODE,
    LEGACY_OMEMO_NAMESPACE,
    bundle_node,
    device_ids,
    device_list_element,
    items_query,
    payload_xml,
)

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
HINTS = "urn:xmpp:hints"
EME = "urn:xmpp:eme:0"
RECEIPTS = "urn:xmpp:receipts"
_TIMEOUT = 15.0
_POLL_SECONDS = 0.1


async def publish(xmpp: ClientXMPP, node: str, payload: ET.Element, access: str) -> None:
    """Publish ``payload`` as item ``current`` of the account's own PEP ``node``, with
    the access model ``access``, as OMEMO clients publish theirs.

    Raises: IqError, IqTimeout.
    """
    iq = xmpp.make_iq_set()
    iq.xml.append(
        ET.fromstring(
            f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='current'>"
            f"{tostring(payload)}</item></publish>"
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{PUBLISH_OPTIONS}</value></field>"
            f"<field var='pubsub#access_model'><value>{access}</value></field>"
            "</x></publish-options></pubsub>"
        )
    )
    await iq.send(timeout=_TIMEOUT)


async def open_empty_device_list(xmpp: ClientXMPP) -> None:
    """Create the account's device-list node, empty and ``open``, as the workaround that
    lets Profanity 0.13 publish its device on Prosody 0.12 (see :mod:`.profanity`).

    Raises: IqError, IqTimeout.
    """
    await publish(xmpp, DEVICELIST_NODE, device_list_element([]).xml, "open")


async def read_item(xmpp: ClientXMPP, owner: str, node: str, payload_name: str) -> str | None:
    """The XML text of the legacy OMEMO ``payload_name`` in ``owner``'s PEP ``node``, read
    by ``xmpp``'s account; None when the node does not exist or holds no item.

    Raises:
        IqError: Another refusal (``forbidden`` for a node the reader may not see).
        IqTimeout: No answer.
        ValueError: The answer holds something else than the payload.
    """
    query = items_query(xmpp, str(xmpp.boundjid), owner, node)
    try:
        reply = await query.send(timeout=_TIMEOUT)
    except IqError as error:
        if error.condition == "item-not-found":
            return None
        raise
    return payload_xml(reply, node, payload_name)


async def wait_for_listed_device(
    reader: ClientXMPP, owner: str, device_id: int, within: float = 20.0
) -> None:
    """Wait until ``reader`` reads ``device_id`` on ``owner``'s device list. Profanity
    publishes its bundle before it adds itself to the list: once listed, the bundle exists.

    Raises:
        AssertionError: Not listed within ``within`` seconds.
        IqError: The list is refused to ``reader``.
    """
    deadline = time.monotonic() + within
    while True:
        listed = await read_item(reader, owner, DEVICELIST_NODE, "list")
        if listed is not None and device_id in device_ids(listed):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"device {device_id} not on {owner}'s device list after {within} s: {listed!r}"
            )
        await asyncio.sleep(_POLL_SECONDS)


async def wait_for_readable_device(
    reader: ClientXMPP, owner: str, device_id: int, within: float = 20.0
) -> None:
    """Wait until ``reader`` reads ``device_id`` on ``owner``'s device list and its bundle;
    a refusal is retried, as a subscription just allowed may not be in force yet.

    Raises: AssertionError: Not readable within ``within`` seconds; the message says
        what was read last.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            listed = await read_item(reader, owner, DEVICELIST_NODE, "list")
            bundle = await read_item(reader, owner, bundle_node(device_id), "bundle")
        except IqError as error:
            last = f"refused: {error.condition}"
        else:
            if listed is not None and device_id in device_ids(listed) and bundle is not None:
                return
            last = f"device list {listed!r}, bundle {'present' if bundle else 'absent'}"
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{reader.boundjid.bare} cannot read OMEMO device {device_id} of {owner}"
                f" after {within} s: {last}"
            )
        await asyncio.sleep(_POLL_SECONDS)


def chat_message(xmpp: ClientXMPP, to: str, encrypted_xml: str, fallback: str) -> Message:
    """A legacy OMEMO chat message as Conversations sends one, with a fresh ``id``: the
    ``<encrypted/>`` element, a receipt request, a fallback body for clients without
    OMEMO, the EME hint naming the encryption and a store hint."""
    message = xmpp.make_message(mto=to, mbody=fallback, mtype="chat")
    message["id"] = xmpp.new_id()
    message.xml.append(ET.fromstring(encrypted_xml))
    message.xml.append(ET.Element(f"{{{RECEIPTS}}}request"))
    message.xml.append(
        ET.Element(f"{{{EME}}}encryption", {"namespace": LEGACY_OMEMO_NAMESPACE, "name": "OMEMO"})
    )
    message.xml.append(ET.Element(f"{{{HINTS}}}store"))
    return message


class PepDirectory:
    """An ordinary client account's :class:`~cmaas.clientservice.omemo.OmemoDirectory`:
    its own nodes published ``open`` through its PEP, others' read from their PEP, key
    transports sent as chat messages."""

    def __init__(self, xmpp: ClientXMPP) -> None:
        self._xmpp = xmpp

    async def fetch_device_list(self, jid: str) -> DeviceListItem | None:
        xml = await self._read(jid, DEVICELIST_NODE, "list")
        return None if xml is None else DeviceListItem(jid, xml)

    async def fetch_bundle(self, jid: str, device_id: int) -> BundleItem | None:
        xml = await self._read(jid, bundle_node(device_id), "bundle")
        return None if xml is None else BundleItem(jid, device_id, xml)

    async def publish_device_list(self, item: DeviceListItem) -> None:
        await self._publish(DEVICELIST_NODE, item.xml)

    async def publish_bundle(self, item: BundleItem) -> None:
        await self._publish(bundle_node(item.device_id), item.xml)

    async def retract_bundle(self, jid: str, device_id: int) -> None:
        iq = self._xmpp.make_iq_set()
        iq.xml.append(
            ET.fromstring(
                f"<pubsub xmlns='{PUBSUB}'><retract node='{bundle_node(device_id)}'>"
                "<item id='current'/></retract></pubsub>"
            )
        )
        try:
            await iq.send(timeout=_TIMEOUT)
        except (IqError, IqTimeout) as error:
            raise OmemoTransportError(f"cannot retract bundle {device_id}: {error}") from error

    async def send_key_transport(self, message: KeyTransport) -> None:
        stanza = self._xmpp.make_message(mto=message.to, mtype="chat")
        stanza.xml.append(ET.fromstring(message.xml))
        stanza.xml.append(ET.Element(f"{{{HINTS}}}store"))
        stanza.send()

    async def _read(self, jid: str, node: str, payload_name: str) -> str | None:
        try:
            return await read_item(self._xmpp, jid, node, payload_name)
        except (IqError, IqTimeout, ValueError) as error:
            raise OmemoTransportError(f"cannot read {node} of {jid}: {error}") from error

    async def _publish(self, node: str, xml: str) -> None:
        try:
            await publish(self._xmpp, node, ET.fromstring(xml), "open")
        except (IqError, IqTimeout) as error:
            raise OmemoTransportError(f"cannot publish {node}: {error}") from error


def tampered(encrypted_xml: str) -> str:
    """The ``<encrypted/>`` element with one bit of its payload flipped."""
    element = ET.fromstring(encrypted_xml)
    payload = element.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}payload")
    assert payload is not None and payload.text
    flipped = bytearray(base64.b64decode(payload.text))
    flipped[0] ^= 0x01
    payload.text = base64.b64encode(bytes(flipped)).decode()
    return ET.tostring(element, encoding="unicode")
