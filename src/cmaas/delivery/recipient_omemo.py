"""Recipients' legacy OMEMO devices, read from their PEP on an app's behalf, for the key
lookup: the device list and the listed devices' bundles, cached for a while.

The gateway relays the items' XML text without judging it beyond finding the device ids;
the app's client service validates what it seals to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cmaas.wire import OmemoUnreadable, RecipientBundle, RecipientOmemo, UnreadableReason
from cmaas.xmpp.omemo import DEVICELIST_NODE, bundle_node, device_ids

__all__ = [
    "OmemoLookupLimits",
    "PepReader",
    "PepUnreadable",
    "RecipientOmemoLookup",
    "SubscriptionAsker",
]


class PepUnreadable(Exception):
    """A PEP item could not be read: ``reason``, and ``condition`` as the server gave it
    (or what went wrong)."""

    def __init__(self, reason: UnreadableReason, condition: str) -> None:
        super().__init__(f"{reason.value}: {condition}")
        self.reason = reason
        self.condition = condition


class PepReader(Protocol):
    async def pep_item(self, app_id: str, owner: str, node: str, payload: str) -> str | None:
        """The XML text of the ``payload`` element of the item in ``owner``'s PEP node
        ``node``, asked for from ``app_id``'s JID; None when the node holds no item.

        Raises: PepUnreadable.
        """
        ...


class SubscriptionAsker(Protocol):
    def ask_subscription(self, app_id: str, jid: str) -> None:
        """Ask ``jid``, from ``app_id``'s JID, to accept the app as a contact (a presence
        subscription request); their client shows the request to the person."""
        ...


@dataclass(frozen=True, slots=True)
class OmemoLookupLimits:
    """``ttl_s``: how long a read device list and its bundles are reused;
    ``unreadable_ttl_s``: how long a failure is; ``max_entries``: (app, recipient) pairs
    kept, the least recently used dropped first; ``max_devices``: listed devices whose
    bundles are fetched, in the list's order."""

    ttl_s: float = 300.0
    unreadable_ttl_s: float = 30.0
    max_entries: int = 10_000
    max_devices: int = 16
    ask_again_s: float = 86_400.0


def _detail(jid: str, error: PepUnreadable) -> str:
    match error.reason:
        case UnreadableReason.FORBIDDEN:
            return (
                f"{jid}'s server refused to show its OMEMO device list to the app "
                f"({error.condition}): the recipient must accept the app as a contact first"
            )
        case UnreadableReason.ITEM_NOT_FOUND:
            return f"{jid} has published no OMEMO device list"
        case UnreadableReason.TIMEOUT:
            return f"{jid}'s server did not answer in time ({error.condition})"
        case UnreadableReason.UNAVAILABLE:
            return "the gateway is not connected to its IM server"
        case UnreadableReason.MALFORMED:
            return f"{jid}'s OMEMO device list is malformed: {error.condition}"
        case _:
            return f"{jid}'s server answered {error.condition}"


class RecipientOmemoLookup:
    """Reads recipients' legacy OMEMO devices through a :class:`PepReader`, per app, since
    a server may show a node to one app's JID (a contact) and not to another's."""

    def __init__(
        self,
        reader: PepReader,
        limits: OmemoLookupLimits | None = None,
        *,
        asker: SubscriptionAsker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        asker: Asks a person whose server refuses the app their device list to accept
            the app as a contact (:meth:`ask_if_refused`), once per ``ask_again_s``;
            without it, nobody is asked.
        """
        self._reader = reader
        self.limits = limits or OmemoLookupLimits()
        self._asker = asker
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, RecipientOmemo]] = OrderedDict()
        self._asked: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def lookup(self, app_id: str, jid: str) -> RecipientOmemo:
        """``jid``'s device list and readable bundles, or why the list is unreadable;
        never raises for what the recipient's server answers."""
        key = (app_id, jid)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        found = await self._read(app_id, jid)
        ttl = self.limits.unreadable_ttl_s if found.unreadable else self.limits.ttl_s
        self._cache[key] = (self._clock() + ttl, found)
        self._cache.move_to_end(key)
        while len(self._cache) > self.limits.max_entries:
            self._cache.popitem(last=False)
        return found

    def ask_if_refused(self, app_id: str, jid: str, found: RecipientOmemo) -> RecipientOmemo:
        """When ``jid``'s server refused the app their OMEMO devices, ask them to accept
        the app as a contact (once per ``ask_again_s``) and say so in the answer's detail.

        For a recipient the message cannot otherwise reach: one with CMaaS devices gets
        it anyway, and is not sent contact requests by every app that writes to them.
        """
        unreadable = found.unreadable
        if (
            unreadable is None
            or unreadable.reason is not UnreadableReason.FORBIDDEN
            or not self._ask(app_id, jid)
        ):
            return found
        asked = f"{unreadable.detail} (the app has asked them to, as a contact request)"
        return dataclasses.replace(found, unreadable=dataclasses.replace(unreadable, detail=asked))

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self, app_id: str, jid: str) -> None:
        """Read ``jid`` afresh for ``app_id`` next time (they just accepted the app as a
        contact, so what was refused may now be readable)."""
        self._cache.pop((app_id, jid), None)

    def _ask(self, app_id: str, jid: str) -> bool:
        """Whether ``jid`` has been asked to accept the app (now or lately)."""
        if self._asker is None:
            return False
        key, now = (app_id, jid), self._clock()
        asked = self._asked.get(key)
        if asked is not None and asked + self.limits.ask_again_s > now:
            return True
        self._asker.ask_subscription(app_id, jid)
        self._asked[key] = now
        self._asked.move_to_end(key)
        while len(self._asked) > self.limits.max_entries:
            self._asked.popitem(last=False)
        return True

    async def _read(self, app_id: str, jid: str) -> RecipientOmemo:
        try:
            listed = await self._reader.pep_item(app_id, jid, DEVICELIST_NODE, "list")
            ids = device_ids(listed) if listed is not None else []
        except ValueError as error:
            failure = PepUnreadable(UnreadableReason.MALFORMED, str(error))
            return RecipientOmemo(unreadable=OmemoUnreadable(failure.reason, _detail(jid, failure)))
        except PepUnreadable as error:
            return RecipientOmemo(unreadable=OmemoUnreadable(error.reason, _detail(jid, error)))
        wanted = ids[: self.limits.max_devices]
        answers = await asyncio.gather(
            *(self._reader.pep_item(app_id, jid, bundle_node(i), "bundle") for i in wanted),
            return_exceptions=True,
        )
        # A listed device without a readable bundle is left out, as clients do: lists
        # keep stale devices for months.
        bundles = tuple(
            RecipientBundle(device_id, answer)
            for device_id, answer in zip(wanted, answers, strict=True)
            if isinstance(answer, str)
        )
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(
                answer, PepUnreadable | ValueError
            ):
                raise answer
        refused = [a for a in answers if isinstance(a, PepUnreadable)]
        if wanted and not bundles and refused:
            # Prosody shows a list published open but bundles published without options
            # to contacts only: the person has to accept the app, as for a hidden list.
            failure = next(
                (a for a in refused if a.reason is UnreadableReason.FORBIDDEN), refused[0]
            )
            detail = _detail(jid, failure).replace("OMEMO device list", "OMEMO bundles")
            return RecipientOmemo(listed, (), OmemoUnreadable(failure.reason, detail))
        return RecipientOmemo(listed, bundles)
