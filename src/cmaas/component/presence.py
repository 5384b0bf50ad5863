"""Presence for app JIDs: answer probes and approve subscriptions.

Several clients send receipts only to contacts with a presence subscription, so an
app JID must be subscribable. The gateway keeps no roster: each answer is computed
from the app's current state, so nothing grows with the number of users.
"""

from __future__ import annotations

from typing import Literal

from slixmpp import Presence
from slixmpp.componentxmpp import ComponentXMPP

from cmaas.component.contacts import AppContacts, ContactState

__all__ = ["PresenceResponder"]


class PresenceResponder:
    def __init__(self, xmpp: ComponentXMPP, contacts: AppContacts) -> None:
        self._xmpp = xmpp
        self._contacts = contacts

    def attach(self) -> None:
        self._xmpp.add_event_handler("presence_probe", self.on_probe)
        self._xmpp.add_event_handler("presence_subscribe", self.on_subscribe)
        self._xmpp.add_event_handler("presence_unsubscribe", self.on_unsubscribe)

    async def on_probe(self, presence: Presence) -> None:
        app_jid, user = presence["to"], presence["from"].bare
        if not app_jid.user:
            self._send(app_jid.bare, user, None)  # the component itself is always up
            return
        contact = await self._contacts.contact(app_jid)
        if contact.state is ContactState.ACTIVE:
            self._send(app_jid.bare, user, None)
        elif contact.state is ContactState.SUSPENDED:
            self._send(app_jid.bare, user, "unavailable")
        else:
            self._send(app_jid.bare, user, "unsubscribed")

    async def on_subscribe(self, presence: Presence) -> None:
        app_jid, user = presence["to"], presence["from"].bare
        contact = await self._contacts.contact(app_jid)
        if contact.state is ContactState.UNKNOWN:
            self._send(app_jid.bare, user, "unsubscribed")
            return
        self._send(app_jid.bare, user, "subscribed")
        self._send(
            app_jid.bare, user, None if contact.state is ContactState.ACTIVE else "unavailable"
        )
        # Ask back: Conversations and Gajim send receipts only to contacts that may see
        # the user's presence. The user's server answers by itself when already approved.
        self._send(app_jid.bare, user, "subscribe")

    async def on_unsubscribe(self, presence: Presence) -> None:
        self._send(presence["to"].bare, presence["from"].bare, "unsubscribed")
        self._send(presence["to"].bare, presence["from"].bare, "unsubscribe")

    def _send(
        self,
        pfrom: str,
        pto: str,
        ptype: Literal["subscribe", "subscribed", "unsubscribe", "unsubscribed", "unavailable"]
        | None,
    ) -> None:
        self._xmpp.send_presence(pto=pto, pfrom=pfrom, ptype=ptype)
