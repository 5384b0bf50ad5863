"""Status notices over XMPP for apps with bound JIDs (bots): each event becomes a
``<message type='normal'>`` from the app's JID carrying ``<status xmlns='urn:cmaas:status:1'/>``,
sent to every bound JID while the component link is up."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from cmaas.delivery.events import CursorConsumer
from cmaas.keystore import Keystore, StatusEvent

__all__ = ["NoticeConsumer", "NoticeSender"]

log = logging.getLogger(__name__)


class NoticeSender(Protocol):
    def send_status(self, app_id: str, to: str, event: StatusEvent) -> None: ...


class NoticeConsumer(CursorConsumer):
    consumer = "xmpp"

    def __init__(
        self, keystore: Keystore, sender: NoticeSender, connected: Callable[[], bool]
    ) -> None:
        super().__init__(keystore)
        self._sender = sender
        self._connected = connected

    async def deliver(self, app_id: str, events: Sequence[StatusEvent]) -> bool:
        app = await self._keystore.get_app(app_id)
        if not app.jids:
            # Nobody to tell: move on, so binding a JID later does not replay history.
            return True
        if not self._connected():
            return False
        for event in events:
            for jid in app.jids:
                self._sender.send_status(app_id, jid, event)
        log.debug("told %s of %d status events of %s", ", ".join(app.jids), len(events), app_id)
        return True
