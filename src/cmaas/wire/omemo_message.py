"""Legacy OMEMO messages on the wire: the ``<encrypted/>`` element an app submits beside
(or instead of) its envelope, what recipients' clients send back to the app's JID, and
the key transports the client service asks the gateway to send.

The gateway reads only the element's header (who sealed it, for which devices); the
keys and the payload stay opaque to it. The XML is parsed with a DOCTYPE refused, so no
entity is ever declared or expanded.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from cmaas.identifiers import InvalidIdentifier, parse_bare_jid
from cmaas.wire.errors import WireError
from cmaas.wire.fields import ObjectReader
from cmaas.wire.omemo import MAX_OMEMO_ID

__all__ = [
    "LEGACY_OMEMO_NAMESPACE",
    "MAX_OMEMO_MESSAGE_CHARS",
    "EncryptedHeader",
    "KeyTransportRequest",
    "OmemoInbound",
    "OmemoInboundPage",
    "parse_encrypted",
    "parse_safe_xml",
]

LEGACY_OMEMO_NAMESPACE = "eu.siacs.conversations.axolotl"
MAX_OMEMO_MESSAGE_CHARS = 64 * 1024
"""The ceiling on one ``<encrypted/>`` element's XML text: keys for dozens of devices and
a payload as long as the longest text an envelope carries."""
_MAX_KEYS = 64
_MAX_KEY_CHARS = 1024  # a prekey message's key element is about 250 characters
_IV_SIZES = frozenset({12, 16})  # Conversations sends 12 bytes, older clients 16
_ENCRYPTED = f"{{{LEGACY_OMEMO_NAMESPACE}}}encrypted"


class _NoDoctype(ET.TreeBuilder):
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        # Called at the DOCTYPE's start, before any entity in it is declared or expanded.
        raise WireError("a DOCTYPE is not allowed in OMEMO XML")


def parse_safe_xml(text: str, max_chars: int) -> ET.Element:
    """Parse XML from the network, refusing a DOCTYPE (and with it every entity trick).

    Raises: WireError: Longer than ``max_chars``, not well-formed, or with a DOCTYPE.
    """
    if len(text) > max_chars:
        raise WireError(f"the XML is longer than {max_chars} characters")
    parser = ET.XMLParser(target=_NoDoctype())  # noqa: S314 - its target refuses a DOCTYPE
    try:
        parser.feed(text)
        return parser.close()
    except ET.ParseError as error:
        raise WireError(f"not well-formed XML: {error}") from error


def _device_id(text: str | None, what: str) -> int:
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise WireError(f"{what} must be a whole number from 1 to {MAX_OMEMO_ID}")
    value = int(text)
    if not 1 <= value <= MAX_OMEMO_ID:
        raise WireError(f"{what} must be a whole number from 1 to {MAX_OMEMO_ID}")
    return value


def _base64(element: ET.Element, what: str, max_chars: int) -> bytes:
    text = (element.text or "").strip()
    if not text or len(text) > max_chars:
        raise WireError(f"{what} must be 1 to {max_chars} characters of base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise WireError(f"{what} is not base64") from error


@dataclass(frozen=True, slots=True)
class EncryptedHeader:
    """What the gateway may know of an ``<encrypted/>`` element.

    Attributes:
        sender_device: The ``sid``: the sealing device.
        recipient_devices: The ``rid`` of each ``<key/>``: the devices it is sealed to.
        has_payload: A message with a body; without one it is a key transport.
    """

    sender_device: int
    recipient_devices: frozenset[int]
    has_payload: bool


def parse_encrypted(xml: str) -> EncryptedHeader:
    """Check that ``xml`` is one legacy-OMEMO ``<encrypted/>`` element and read its header.

    Raises: WireError: Not XML, another element, or a header without a sender device, a
        key or an IV of 12 or 16 bytes.
    """
    root = parse_safe_xml(xml, MAX_OMEMO_MESSAGE_CHARS)
    if root.tag != _ENCRYPTED:
        raise WireError(f"the OMEMO element must be <encrypted xmlns='{LEGACY_OMEMO_NAMESPACE}'>")
    header = root.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}header")
    if header is None:
        raise WireError("the OMEMO element has no <header/>")
    sender = _device_id(header.get("sid"), "the OMEMO header's sid")
    keys = header.findall(f"{{{LEGACY_OMEMO_NAMESPACE}}}key")
    if not 0 < len(keys) <= _MAX_KEYS:
        raise WireError(f"the OMEMO header must hold 1 to {_MAX_KEYS} <key/> elements")
    recipients = set()
    for index, key in enumerate(keys):
        recipients.add(_device_id(key.get("rid"), f"the rid of OMEMO key {index}"))
        _base64(key, f"OMEMO key {index}", _MAX_KEY_CHARS)
    iv = header.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}iv")
    if iv is None or len(_base64(iv, "the OMEMO IV", 64)) not in _IV_SIZES:
        raise WireError("the OMEMO header must hold an <iv/> of 12 or 16 bytes")
    payload = root.find(f"{{{LEGACY_OMEMO_NAMESPACE}}}payload")
    if payload is not None:
        _base64(payload, "the OMEMO payload", MAX_OMEMO_MESSAGE_CHARS)
    return EncryptedHeader(sender, frozenset(recipients), payload is not None)


@dataclass(frozen=True, slots=True)
class OmemoInbound:
    """An ``<encrypted/>`` element a person's client sent to the app's JID (a reply or a
    key transport), kept by the gateway for the app's client service.

    Attributes:
        seq: The cursor: items come in increasing order.
        sender: The sender's bare JID.
        xml: The ``<encrypted/>`` element as XML text.
        received_ms: When the gateway received it.
    """

    seq: int
    sender: str
    xml: str = field(repr=False)
    received_ms: int

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "from": self.sender,
            "xml": self.xml,
            "received_ms": self.received_ms,
        }

    @classmethod
    def from_json(cls, value: object) -> OmemoInbound:
        """Raises: WireError."""
        reader = ObjectReader(value, "omemo item")
        xml = reader.text("xml")
        if len(xml) > MAX_OMEMO_MESSAGE_CHARS:
            raise WireError(f"an OMEMO item is longer than {MAX_OMEMO_MESSAGE_CHARS} characters")
        return cls(reader.integer("seq"), reader.text("from"), xml, reader.integer("received_ms"))


@dataclass(frozen=True, slots=True)
class OmemoInboundPage:
    """``GET /v1/omemo/inbound``: items after a cursor, and the cursor to ask from next."""

    items: tuple[OmemoInbound, ...]
    next_after: int

    def to_json(self) -> dict[str, object]:
        return {"items": [item.to_json() for item in self.items], "next": self.next_after}

    @classmethod
    def from_json(cls, value: object) -> OmemoInboundPage:
        """Raises: WireError."""
        reader = ObjectReader(value, "omemo inbound page")
        return cls(
            tuple(OmemoInbound.from_json(item) for item in reader.array("items")),
            reader.integer("next"),
        )


@dataclass(frozen=True, slots=True)
class KeyTransportRequest:
    """``POST /v1/omemo/key-transports``: an ``<encrypted/>`` element without a payload
    that the client service's OMEMO device sends to complete or advance a session.

    Attributes:
        to: The recipient's bare JID.
        xml: The ``<encrypted/>`` element as XML text.
    """

    to: str
    xml: str = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"to": self.to, "xml": self.xml}

    @classmethod
    def from_json(cls, value: object) -> KeyTransportRequest:
        """Raises: WireError: Not an object of a JID and a key-transport element."""
        reader = ObjectReader(value, "key transport")
        unknown = reader.unknown(frozenset({"to", "xml"}))
        if unknown:
            raise WireError(f"unknown fields: {', '.join(unknown)}")
        xml = reader.text("xml")
        try:
            to = parse_bare_jid(reader.text("to"))
        except InvalidIdentifier as error:
            raise WireError(f"to: {error}") from error
        if parse_encrypted(xml).has_payload:
            raise WireError("a key transport carries no <payload/>: submit messages instead")
        return cls(to, xml)
