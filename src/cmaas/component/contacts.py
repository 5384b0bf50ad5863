"""App accounts as XMPP contacts: what a user sees when they add or probe an app's JID."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from slixmpp import JID

from cmaas.identifiers import InvalidIdentifier, parse_app_id
from cmaas.keystore import App, AppNotFound, DeviceNotFound, Keystore
from cmaas.wire import OmemoBundle
from cmaas.wire.omemo import MAX_OMEMO_ID
from cmaas.xmpp.omemo import BUNDLES_NODE_PREFIX, DEVICELIST_NODE

__all__ = ["AppContact", "AppContacts", "ContactState", "PepItem"]

PepItem = list[int] | OmemoBundle
"""What an app JID's PEP node holds: its OMEMO device ids, or one device's bundle."""


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
        app = await self._app(jid)
        if app is None:
            return _UNKNOWN
        state = ContactState.SUSPENDED if app.suspended else ContactState.ACTIVE
        return AppContact(state, app.display_name)

    async def active_app_id(self, jid: JID) -> str | None:
        """The app id of ``jid`` when it is the JID of an app that is not suspended."""
        app = await self._app(jid)
        return None if app is None or app.suspended else app.app_id

    async def pep_item(self, jid: JID, node: str) -> PepItem | None:
        """The current item of the app JID's PEP node ``node``, served to anyone, as an
        ``open`` access model would: an app with no device has an empty list, so that
        clients drop devices it retired. ``None``: no such app or node.
        """
        app_id = await self._known_app(jid)
        if app_id is None:
            return None
        if node == DEVICELIST_NODE:
            return await self._keystore.omemo.device_ids(app_id)
        suffix = node.removeprefix(BUNDLES_NODE_PREFIX)
        # Only the canonical spelling of an id: "007" or "+7" name no node.
        if suffix == node or not (suffix.isascii() and suffix.isdigit()) or len(suffix) > 10:
            return None
        device_id = int(suffix)
        if str(device_id) != suffix or not 1 <= device_id <= MAX_OMEMO_ID:
            return None
        try:
            return await self._keystore.omemo.bundle(app_id, device_id)
        except DeviceNotFound:
            return None

    async def _known_app(self, jid: JID) -> str | None:
        """The app id of an app JID of this component whose app exists."""
        app = await self._app(jid)
        return None if app is None else app.app_id

    async def _app(self, jid: JID) -> App | None:
        """The app whose JID of this component ``jid`` is, if it exists."""
        if jid.domain != self._domain or not jid.user:
            return None
        try:
            return await self._keystore.get_app(parse_app_id(jid.user))
        except (InvalidIdentifier, AppNotFound):
            return None
