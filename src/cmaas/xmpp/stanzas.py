"""XMPP payloads CMaaS defines or uses, registered once for the gateway and devices.

``<envelope xmlns='urn:cmaas:envelope:1'>`` carries the sealed envelope's JSON text;
``<prekeys-low xmlns='urn:cmaas:device:1'/>`` tells a device to publish more one-time
prekeys. Receipts (XEP-0184), chat markers (XEP-0333), EME (XEP-0380) and the store
hint (XEP-0334) are slixmpp's stanza classes, used without their plugins' automatic
behaviour.
"""

from __future__ import annotations

from typing import ClassVar

from slixmpp import Message
from slixmpp.plugins.xep_0184.stanza import Received, Request
from slixmpp.plugins.xep_0333.stanza import Displayed, Markable
from slixmpp.plugins.xep_0334.stanza import Store
from slixmpp.plugins.xep_0380.stanza import Encryption
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

__all__ = [
    "APP_RESOURCE",
    "DEVICE_NAMESPACE",
    "ENVELOPE_NAMESPACE",
    "FALLBACK_BODY",
    "STATUS_NAMESPACE",
    "DeviceTag",
    "EnvelopeElement",
    "PrekeysLow",
    "StatusNotice",
    "register_stanzas",
]

ENVELOPE_NAMESPACE = "urn:cmaas:envelope:1"
DEVICE_NAMESPACE = "urn:cmaas:device:1"
STATUS_NAMESPACE = "urn:cmaas:status:1"
APP_RESOURCE = "cmaas"
"""Every stanza an app JID sends comes from this resource of it: clients such as
Profanity address receipts to the sender's full JID, and a bare ``from`` leaves them
none to address."""
FALLBACK_BODY = (
    "This message is end-to-end encrypted for your CMaaS device; this client cannot open it."
)


class EnvelopeElement(ElementBase):
    """The sealed envelope, as JSON text."""

    name = "envelope"
    namespace = ENVELOPE_NAMESPACE
    plugin_attrib = "cmaas_envelope"
    interfaces: ClassVar[set[str]] = {"json"}

    def get_json(self) -> str:
        return self.xml.text or ""

    def set_json(self, value: str) -> None:
        self.xml.text = value

    def del_json(self) -> None:
        self.xml.text = None


class PrekeysLow(ElementBase):
    """The gateway asks device ``device`` for more one-time prekeys: it holds
    ``remaining`` and may hold up to ``capacity``."""

    name = "prekeys-low"
    namespace = DEVICE_NAMESPACE
    plugin_attrib = "cmaas_prekeys_low"
    interfaces: ClassVar[set[str]] = {"device", "remaining", "capacity"}


class StatusNotice(ElementBase):
    """A status event for an app's bound JID, all attributes."""

    name = "status"
    namespace = STATUS_NAMESPACE
    plugin_attrib = "cmaas_status"
    interfaces: ClassVar[set[str]] = {"event", "message", "status", "at", "device", "detail"}


class DeviceTag(ElementBase):
    """Which CMaaS device sends a receipt or marker: ``<device xmlns='urn:cmaas:device:1'
    id='…'/>``, so the gateway can track delivery per device, not per resource."""

    name = "device"
    namespace = DEVICE_NAMESPACE
    plugin_attrib = "cmaas_device"
    interfaces: ClassVar[set[str]] = {"id"}


def register_stanzas() -> None:
    """Make the payloads above parse and build on :class:`slixmpp.Message`. Idempotent."""
    for plugin in (
        EnvelopeElement,
        PrekeysLow,
        StatusNotice,
        DeviceTag,
        Request,
        Received,
        Markable,
        Displayed,
    ):
        register_stanza_plugin(Message, plugin)
    register_stanza_plugin(Message, Encryption)
    register_stanza_plugin(Message, Store)
