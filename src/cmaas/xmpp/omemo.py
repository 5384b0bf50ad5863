"""Legacy OMEMO's PEP payloads (``eu.siacs.conversations.axolotl``): the device list and
a device's bundle, as Conversations, Dino, Gajim, Monal and Profanity read them.

Keys travel as base64 (RFC 4648, padded) text; every one is public.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import ClassVar

from slixmpp.xmlstream import ElementBase, register_stanza_plugin

from cmaas.wire import OmemoBundle

__all__ = [
    "BUNDLES_NODE_PREFIX",
    "DEVICELIST_NODE",
    "LEGACY_OMEMO_NAMESPACE",
    "BundleElement",
    "DeviceListElement",
    "bundle_element",
    "device_list_element",
]

LEGACY_OMEMO_NAMESPACE = "eu.siacs.conversations.axolotl"
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
