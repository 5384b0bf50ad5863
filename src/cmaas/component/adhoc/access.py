"""Who may run what: the one place ad-hoc access is decided."""

from __future__ import annotations

from slixmpp import JID

from cmaas.component.adhoc.command import Access
from cmaas.keystore import Keystore

__all__ = ["AccessPolicy"]


class AccessPolicy:
    """Decides access from the server-stamped sender, never from form fields.

    Reads the keystore on each call, so binding or unbinding a bot's JID takes
    effect on the very next step of any session.
    """

    def __init__(
        self, admins: frozenset[str], served_domains: frozenset[str], keystore: Keystore
    ) -> None:
        self._admins = admins
        self._served_domains = served_domains
        self._keystore = keystore

    async def allows(self, access: Access, requester: JID) -> bool:
        bare = str(requester.bare)
        if not requester.user:
            return False  # servers and components are never operators or users
        if access is Access.ADMIN:
            return bare in self._admins
        if access is Access.USER:
            return str(requester.domain) in self._served_domains
        return await self._keystore.app_for_jid(bare) is not None
