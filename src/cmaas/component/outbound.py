"""Stanzas the gateway writes towards users: sealed messages and prekey requests."""

from __future__ import annotations

from xml.sax.saxutils import escape

from slixmpp import JID, Message
from slixmpp.basexmpp import BaseXMPP

from cmaas.keystore import StatusEvent
from cmaas.xmpp.stanzas import FALLBACK_BODY

__all__ = [
    "key_transport_xml",
    "prekeys_low_message",
    "sealed_message_xml",
    "status_message",
    "xml_attribute",
]


_SEALED_HEAD = "<message type='chat' id={id} from={sender} to={to}><body>{body}</body>"
_SEALED_TAIL = (
    "<request xmlns='urn:xmpp:receipts'/>"
    "<markable xmlns='urn:xmpp:chat-markers:0'/>"
    "<encryption xmlns='urn:xmpp:eme:0' namespace={eme} name={eme_name}/>"
    "<store xmlns='urn:xmpp:hints'/>"
    "</message>"
)


def xml_attribute(value: str) -> str:
    """``value`` as a single-quoted XML attribute value, escaped so that a parser reads
    it back unchanged (line ends and tabs included).

    Six replacements, where ``xml.sax.saxutils.quoteattr`` makes more and then chooses
    the quotes: three attributes go with every message sent.
    """
    return (
        "'"
        + value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace("'", "&apos;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
        + "'"
    )


_ENVELOPE_EME = (xml_attribute("urn:cmaas:envelope:1"), xml_attribute("CMaaS"))
_OMEMO_EME = (xml_attribute("eu.siacs.conversations.axolotl"), xml_attribute("OMEMO"))


def sealed_message_xml(
    app_jid: str, recipient: str, message_id: str, envelope_json: str | None, omemo_xml: str | None
) -> str:
    """The message ``docs/protocol.md`` fixes, serialised: the envelope for CMaaS devices
    and the legacy-OMEMO ``<encrypted/>`` element for OMEMO devices (either or both), a
    fallback body, a receipt request (XEP-0184), ``markable`` (XEP-0333), EME (XEP-0380)
    and a store hint (XEP-0334) so servers keep it for offline devices.

    EME names OMEMO whenever the element is there: people's clients show it to say why
    they cannot open a message; CMaaS devices read the envelope regardless.

    Serialised here rather than by slixmpp, whose escaping walks the text one character
    at a time in Python: for a 1 KiB envelope that was a quarter of the gateway's CPU.
    Canonical JSON holds no control characters, so escaping ``& < >`` suffices; the OMEMO
    element was parsed and checked when it was submitted, and is written as it came.

    Raises: ValueError: Neither an envelope nor an OMEMO element.
    """
    if envelope_json is None and omemo_xml is None:
        raise ValueError("a sealed message needs an envelope or an OMEMO element")
    parts = [
        _SEALED_HEAD.format(
            id=xml_attribute(message_id),
            sender=xml_attribute(app_jid),
            to=xml_attribute(recipient),
            body=_FALLBACK_TEXT,
        )
    ]
    if envelope_json is not None:
        parts.append(f"<envelope xmlns='urn:cmaas:envelope:1'>{escape(envelope_json)}</envelope>")
    if omemo_xml is not None:
        parts.append(omemo_xml)
    eme, eme_name = _OMEMO_EME if omemo_xml is not None else _ENVELOPE_EME
    parts.append(_SEALED_TAIL.format(eme=eme, eme_name=eme_name))
    return "".join(parts)


def key_transport_xml(app_jid: str, recipient: str, omemo_xml: str) -> str:
    """A legacy-OMEMO key transport (an ``<encrypted/>`` element without a payload) from
    the app's JID, kept for an offline recipient: no body, nothing to show or receipt."""
    return (
        f"<message type='chat' from={xml_attribute(app_jid)} to={xml_attribute(recipient)}>"
        f"{omemo_xml}<store xmlns='urn:xmpp:hints'/></message>"
    )


_FALLBACK_TEXT = escape(FALLBACK_BODY)


def prekeys_low_message(
    xmpp: BaseXMPP, gateway: JID, owner: JID, device_id: int, remaining: int, capacity: int
) -> Message:
    """Ask device ``device_id`` of ``owner`` to publish more one-time prekeys.

    Addressed to the bare JID so every resource sees it, and kept for an offline
    device; the device acts only on its own id.
    """
    message = xmpp.make_message(mto=owner, mfrom=gateway, mtype="normal")
    low = message["cmaas_prekeys_low"]
    low["device"] = str(device_id)
    low["remaining"] = str(remaining)
    low["capacity"] = str(capacity)
    message.enable("store")
    return message


def status_message(xmpp: BaseXMPP, app_jid: JID, to: JID, event: StatusEvent) -> Message:
    """A status event for a JID bound to the app, kept for it offline.

    The body says the same in words, for a person watching the bot's account in an
    ordinary client (and for libraries that only surface messages with a body).
    """
    where = f" on device {event.device}" if event.device else ""
    why = f": {event.detail}" if event.detail else ""
    text = f"Message {event.message_id}: {event.status.value}{where}{why}"
    message = xmpp.make_message(mto=to, mfrom=app_jid, mtype="normal", mbody=text)
    status = message["cmaas_status"]
    status["event"] = str(event.event_id)
    status["message"] = event.message_id
    status["status"] = event.status.value
    status["at"] = str(event.at_ms)
    if event.device:
        status["device"] = event.device
    if event.detail:
        status["detail"] = event.detail
    message.enable("store")
    return message
