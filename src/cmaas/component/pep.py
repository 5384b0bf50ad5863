"""PEP queries to app JIDs: people's clients fetch an app's legacy OMEMO device list and
bundles from its JID, as from any contact's. The items come from :class:`AppContacts`;
this module only translates stanzas."""

from __future__ import annotations

from slixmpp import Iq
from slixmpp.basexmpp import BaseXMPP
from slixmpp.plugins.xep_0060.stanza.pubsub import Item, Pubsub
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath

from cmaas.component.contacts import AppContacts
from cmaas.wire import OmemoBundle
from cmaas.xmpp.omemo import bundle_element, device_list_element

__all__ = ["CURRENT_ITEM", "PepResponder"]

CURRENT_ITEM = "current"
"""The one item id of each node, as legacy OMEMO clients publish them."""


class PepResponder:
    """Answers ``items`` queries to app JIDs; refuses every other pubsub request to them."""

    def __init__(self, xmpp: BaseXMPP, contacts: AppContacts) -> None:
        self._xmpp = xmpp
        self._contacts = contacts

    def attach(self) -> None:
        self._xmpp.register_handler(
            CoroutineCallback(
                "cmaas pep items",
                StanzaPath("iq@type=get/pubsub/items"),
                self._items,  # type: ignore[arg-type]
            )
        )
        self._xmpp.register_handler(
            Callback(
                "cmaas pep set",
                StanzaPath("iq@type=set/pubsub"),
                self._refuse_set,  # type: ignore[arg-type]
            )
        )

    async def _items(self, iq: Iq) -> None:
        node = iq["pubsub"]["items"]["node"]
        found = await self._contacts.pep_item(iq["to"], node)
        if found is None:
            _error(iq, "cancel", "item-not-found", "no such node").send()
            return
        wanted = {item["id"] for item in iq["pubsub"]["items"]["substanzas"]}
        reply = iq.reply(clear=True)
        pubsub = Pubsub()
        pubsub["items"]["node"] = node
        if not wanted or CURRENT_ITEM in wanted:
            item = Item()
            item["id"] = CURRENT_ITEM
            if isinstance(found, OmemoBundle):
                item["payload"] = bundle_element(found).xml
            else:
                item["payload"] = device_list_element(found).xml
            pubsub["items"].append(item)
        reply.append(pubsub)
        reply.send()

    def _refuse_set(self, iq: Iq) -> None:
        """An app's keys are published over the HTTP API or ad-hoc, never by others."""
        _error(iq, "auth", "forbidden", "app JIDs' nodes are published by their app only").send()


def _error(iq: Iq, kind: str, condition: str, text: str) -> Iq:
    reply: Iq = iq.reply(clear=True)
    reply["error"]["type"] = kind
    reply["error"]["condition"] = condition
    reply["error"]["text"] = text
    return reply
