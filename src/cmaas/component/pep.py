"""PEP queries to and from app JIDs: people's clients fetch an app's legacy OMEMO device
list and bundles from its JID, as from any contact's (the items come from
:class:`AppContacts`), and an app's JID fetches its recipients' (:class:`PepClient`).
This module only translates stanzas."""

from __future__ import annotations

from collections.abc import Callable

from slixmpp import Iq
from slixmpp.basexmpp import BaseXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0060.stanza.pubsub import Item, Pubsub
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath
from slixmpp.xmlstream.xmlstream import NotConnectedError

from cmaas.component.contacts import AppContacts
from cmaas.delivery.recipient_omemo import PepUnreadable
from cmaas.wire import OmemoBundle, UnreadableReason
from cmaas.xmpp.omemo import bundle_element, device_list_element, items_query, payload_xml

__all__ = ["CURRENT_ITEM", "PEP_TIMEOUT_S", "PepClient", "PepResponder"]

PEP_TIMEOUT_S = 10.0
"""How long a recipient's server has to answer one PEP query."""
_REFUSALS = {"forbidden", "not-authorized"}

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


class PepClient:
    """Reads items from people's PEP nodes as an app's JID (:class:`PepReader`)."""

    def __init__(
        self,
        xmpp: BaseXMPP,
        app_sender: Callable[[str], str],
        timeout_s: float = PEP_TIMEOUT_S,
    ) -> None:
        """Args:
        app_sender: The full JID an app id sends from.
        """
        self._xmpp = xmpp
        self._app_sender = app_sender
        self.timeout_s = timeout_s

    async def pep_item(self, app_id: str, owner: str, node: str, payload: str) -> str | None:
        """Raises: PepUnreadable: An error answer, no answer in time, no link, or an
        answer that is not an item of the node holding a legacy OMEMO ``payload``."""
        query = items_query(self._xmpp, self._app_sender(app_id), owner, node)
        try:
            reply = await query.send(timeout=self.timeout_s)
        except IqError as error:
            condition = str(error.condition)
            if condition in _REFUSALS:
                raise PepUnreadable(UnreadableReason.FORBIDDEN, condition) from error
            if condition == "item-not-found":
                raise PepUnreadable(UnreadableReason.ITEM_NOT_FOUND, condition) from error
            raise PepUnreadable(UnreadableReason.ERROR, condition) from error
        except IqTimeout as error:
            raise PepUnreadable(UnreadableReason.TIMEOUT, f"{self.timeout_s:g} s") from error
        except NotConnectedError as error:
            raise PepUnreadable(UnreadableReason.UNAVAILABLE, "not connected") from error
        try:
            return payload_xml(reply, node, payload)
        except ValueError as error:
            raise PepUnreadable(UnreadableReason.MALFORMED, str(error)) from error


def _error(iq: Iq, kind: str, condition: str, text: str) -> Iq:
    reply: Iq = iq.reply(clear=True)
    reply["error"]["type"] = kind
    reply["error"]["condition"] = condition
    reply["error"]["text"] = text
    return reply
