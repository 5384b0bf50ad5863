"""Legacy OMEMO's PEP payloads (``eu.siacs.conversations.axolotl``): the device list and
a device's bundle, as Conversations, Dino, Gajim, Monal and Profanity read them.

Keys travel as base64 (RFC 4648, padded) text; every one is public.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import ClassVar

from slixmpp import JID, Iq
from slixmpp.basexmpp import BaseXMPP
from slixmpp.plugins.xep_0060.stanza.pubsub import Pubsub
from slixmpp.xmlstream import ET, ElementBase, register_stanza_plugin, tostring

from cmaas.wire import OmemoBundle, WireError
from cmaas.wire.omemo import MAX_OMEMO_ID, MAX_OMEMO_ITEM_CHARS
from cmaas.wire.omemo_message import LEGACY_OMEMO_NAMESPACE, parse_safe_xml

__all__ = [
    "BUNDLES_NODE_PREFIX",
    "DEVICELIST_NODE",
    "LEGACY_OMEMO_NAMESPACE",
    "BundleElement",
    "DeviceListElement",
    "bundle_element",
    "bundle_from_xml",
    "bundle_node",
    "device_ids",
    "device_list_element",
    "items_query",
    "payload_xml",
]

DEVICELIST_NODE = f"{LEGACY_OMEMO_NAMESPACE}.devicelist"
BUNDLES_NODE_PREFIX = f"{LEGACY_OMEMO_NAMESPACE}.bundles:"


class DeviceElement(ElementBase):
    name = "device"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "device"
    plugin_multi_attrib = "devices"
    interfaces: ClassVar[set[str]] = {"id"}


class DeviceListElement(ElementBase):
    """``<list><device id='…'/>…</list>``: a JID's OMEMO devices."""

    name = "list"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "omemo_device_list"
    interfaces: ClassVar[set[str]] = set()


class _KeyElement(ElementBase):
    """A key as the element's text (``value``), its id as an attribute."""

    def get_value(self) -> str:
        return self.xml.text or ""

    def set_value(self, value: str) -> None:
        self.xml.text = value


class SignedPreKeyPublic(_KeyElement):
    name = "signedPreKeyPublic"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "signed_prekey"
    interfaces: ClassVar[set[str]] = {"signedPreKeyId", "value"}


class PreKeyPublic(_KeyElement):
    name = "preKeyPublic"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "prekey"
    plugin_multi_attrib = "prekeys"
    interfaces: ClassVar[set[str]] = {"preKeyId", "value"}


class PreKeys(ElementBase):
    name = "prekeys"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "prekeys"
    interfaces: ClassVar[set[str]] = set()


class BundleElement(ElementBase):
    """``<bundle>``: a device's signed prekey, its signature, the identity key and the
    one-time prekeys."""

    name = "bundle"
    namespace = LEGACY_OMEMO_NAMESPACE
    plugin_attrib = "omemo_bundle"
    interfaces: ClassVar[set[str]] = {"signedPreKeySignature", "identityKey"}
    sub_interfaces = interfaces


register_stanza_plugin(DeviceListElement, DeviceElement, iterable=True)
register_stanza_plugin(BundleElement, SignedPreKeyPublic)
register_stanza_plugin(BundleElement, PreKeys)
register_stanza_plugin(PreKeys, PreKeyPublic, iterable=True)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def device_list_element(device_ids: Iterable[int]) -> DeviceListElement:
    """The device list naming ``device_ids``, in their order."""
    element = DeviceListElement()
    for device_id in device_ids:
        device = DeviceElement()
        device["id"] = str(device_id)
        element.append(device)
    return element


def bundle_element(bundle: OmemoBundle) -> BundleElement:
    """The bundle as the legacy node carries it; children in Conversations' order."""
    element = BundleElement()
    element["signed_prekey"]["signedPreKeyId"] = str(bundle.signed_prekey_id)
    element["signed_prekey"]["value"] = _b64(bundle.signed_prekey)
    element["signedPreKeySignature"] = _b64(bundle.signed_prekey_signature)
    element["identityKey"] = _b64(bundle.identity_key)
    for prekey in bundle.prekeys:
        item = PreKeyPublic()
        item["preKeyId"] = str(prekey.prekey_id)
        item["value"] = _b64(prekey.public_key)
        element["prekeys"].append(item)
    return element


def bundle_from_xml(device_id: int, xml: str) -> OmemoBundle:
    """The bundle a legacy ``<bundle/>`` element's XML text holds (its inverse:
    :func:`bundle_element`).

    Raises: WireError: Not such an element, or a key of the wrong form.
    """
    root = parse_safe_xml(xml, MAX_OMEMO_ITEM_CHARS)
    ns = f"{{{LEGACY_OMEMO_NAMESPACE}}}"
    if root.tag != f"{ns}bundle":
        raise WireError("not a legacy OMEMO <bundle/>")

    def text(path: str) -> str:
        found = root.find(path)
        if found is None or not (found.text or "").strip():
            raise WireError(f"the bundle has no {path.replace(ns, '')}")
        return (found.text or "").strip()

    def number(value: str | None, what: str) -> int:
        if value is None or not (value.isascii() and value.isdigit()) or len(value) > 10:
            raise WireError(f"the bundle's {what} is not a whole number")
        return int(value)

    signed = root.find(f"{ns}signedPreKeyPublic")
    prekeys = root.findall(f"{ns}prekeys/{ns}preKeyPublic")
    return OmemoBundle.from_json(
        {
            "identity_key": text(f"{ns}identityKey"),
            "signed_prekey_id": number(
                None if signed is None else signed.get("signedPreKeyId"), "signedPreKeyId"
            ),
            "signed_prekey": text(f"{ns}signedPreKeyPublic"),
            "signed_prekey_signature": text(f"{ns}signedPreKeySignature"),
            "prekeys": [
                {
                    "id": number(prekey.get("preKeyId"), "preKeyId"),
                    "key": (prekey.text or "").strip(),
                }
                for prekey in prekeys
            ],
        },
        device_id=device_id,
    )


def bundle_node(device_id: int) -> str:
    """The PEP node of one device's bundle."""
    return f"{BUNDLES_NODE_PREFIX}{device_id}"


def items_query(xmpp: BaseXMPP, sender: str, owner: str, node: str) -> Iq:
    """``<iq type='get'>`` from ``sender`` asking ``owner``'s PEP for the items of ``node``,
    as legacy OMEMO clients ask for each other's device lists and bundles."""
    iq: Iq = xmpp.make_iq_get(ito=JID(owner), ifrom=JID(sender))
    pubsub = Pubsub()
    pubsub["items"]["node"] = node
    iq.append(pubsub)
    return iq


def payload_xml(reply: Iq, node: str, payload_name: str) -> str | None:
    """The XML text of the first ``<payload_name xmlns='eu.siacs.conversations.axolotl'>``
    item payload in an ``items`` result for ``node``; None when the node holds no item.

    Raises: ValueError: The result is for another node, or an item holds something else.
    """
    items = reply.xml.find(f"{{{Pubsub.namespace}}}pubsub/{{{Pubsub.namespace}}}items")
    if items is None:
        return None
    if items.get("node") != node:
        raise ValueError(f"the answer is for node {items.get('node')!r}, not {node!r}")
    for item in items.findall(f"{{{Pubsub.namespace}}}item"):
        payload = item.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}{payload_name}")
        if payload is None:
            raise ValueError(f"an item of {node} holds no legacy OMEMO <{payload_name}/>")
        return str(tostring(payload))
    return None


def device_ids(list_xml: str) -> list[int]:
    """The device ids a device list's XML text names, in order, once each; ids that are
    not whole numbers from 1 to 2**31 - 1 are left out, as clients skip them.

    Raises: ValueError: The text is not a legacy OMEMO ``<list/>``.
    """
    try:
        root = ET.fromstring(list_xml)
    except ET.ParseError as error:
        raise ValueError(f"the device list is not XML: {error}") from error
    if root.tag != f"{{{LEGACY_OMEMO_NAMESPACE}}}list":
        raise ValueError("the device list is not a legacy OMEMO <list/>")
    found: list[int] = []
    for device in root.findall(f"{{{LEGACY_OMEMO_NAMESPACE}}}device"):
        text = device.get("id", "")
        if text.isascii() and text.isdigit() and len(text) <= 10:
            device_id = int(text)
            if 1 <= device_id <= MAX_OMEMO_ID and device_id not in found:
                found.append(device_id)
    return found
