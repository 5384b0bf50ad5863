"""App accounts as XMPP contacts: what a user sees when they add or probe an app's JID."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from slixmpp import JID

from cmaas.identifiers import InvalidIdentifier, parse_app_id
from cmaas.keystore import AppNotFound, Keystore

__all__ = ["AppContact", "AppContacts", "ContactState"]


class ContactState(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AppContact:
    state: ContactState
    display_name: str = ""


_UNKNOWN = AppContact(ContactState.UNKNOWN)


class AppContacts:
    """Looks app JIDs (``<app_id>@<component domain>``) up, live, in the keystore."""

    def __init__(self, keystore: Keystore, component_domain: str) -> None:
        self._keystore = keystore
        self._domain = component_domain

    async def contact(self, jid: JID) -> AppContact:
        if jid.domain != self._domain or not jid.user:
            return _UNKNOWN
        try:
            app = await self._keystore.get_app(parse_app_id(jid.user))
        except (InvalidIdentifier, AppNotFound):
            return _UNKNOWN
        state = ContactState.SUSPENDED if app.suspended else ContactState.ACTIVE
        return AppContact(state, app.display_name)
