"""Resolving a submission's ``to``: a JID of a served domain, or an email or E.164 mobile
number bound in the directory."""

from __future__ import annotations

from cmaas.identifiers import InvalidIdentifier, parse_address, parse_bare_jid
from cmaas.keystore import Keystore

__all__ = ["RecipientResolver"]


class RecipientResolver:
    """An address is looked up in the directory first; a bare JID of a served domain
    that is not in it is that JID. Anything else is unknown: an email address is never
    taken for a JID of a foreign domain, where it would bounce or, worse, arrive."""

    def __init__(self, keystore: Keystore, served_domains: frozenset[str]) -> None:
        self._keystore = keystore
        self._served = served_domains

    async def resolve(self, to: str) -> str | None:
        """The recipient's bare JID, or ``None`` when it is unknown.

        Raises:
            InvalidIdentifier: ``to`` is neither a JID, an email nor an E.164 number.
        """
        try:
            _, address = parse_address(to)
        except InvalidIdentifier:
            address = None
        if address is not None:
            found = await self._keystore.resolve_address(address)
            if found is not None:
                return found
        try:
            jid = parse_bare_jid(to)
        except InvalidIdentifier:
            if address is None:
                raise
            return None
        return jid if jid.split("@", 1)[1] in self._served else None
