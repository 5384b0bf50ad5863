"""Stanzas the gateway writes towards users: sealed messages and prekey requests."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from slixmpp import JID, Message
from slixmpp.basexmpp import BaseXMPP

from cmaas.keystore import StatusEvent
from cmaas.xmpp.stanzas import FALLBACK_BODY

__all__ = ["prekeys_low_message", "sealed_message_xml", "status_message"]


_SEALED = (
    "<message type='chat' id={id} from={sender} to={to}>"
    "<body>{body}</body>"
    "<envelope xmlns='urn:cmaas:envelope:1'>{envelope}</envelope>"
    "<request xmlns='urn:xmpp:receipts'/>"
    "<markable xmlns='urn:xmpp:chat-markers:0'/>"
    "<encryption xmlns='urn:xmpp:eme:0' namespace='urn:cmaas:envelope:1' name='CMaaS'/>"
    "<store xmlns='urn:xmpp:hints'/>"
    "</message>"
)


def sealed_message_xml(app_jid: str, recipient: str, message_id: str, envelope_json: str) -> str:
    """The message ``docs/protocol.md`` fixes, serialised: the envelope, a fallback body, a
    receipt request (XEP-0184), ``markable`` (XEP-0333), EME (XEP-0380) and a store hint
    (XEP-0334) so servers keep it for offline devices.

    Serialised here rather than by slixmpp, whose escaping walks the text one character
    at a time in Python: for a 1 KiB envelope that was a quarter of the gateway's CPU.
    Canonical JSON holds no control characters, so escaping ``& < >`` suffices.
    """
    return _SEALED.format(
        id=quoteattr(message_id),
        sender=quoteattr(app_jid),
        to=quoteattr(recipient),
        body=_FALLBACK_TEXT,
        envelope=escape(envelope_json),
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
