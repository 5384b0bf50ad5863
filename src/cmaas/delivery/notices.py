"""Status notices over XMPP for apps with bound JIDs (bots): each event becomes a
``<message type='normal'>`` from the app's JID carrying ``<status xmlns='urn:cmaas:status:1'/>``,
sent to every bound JID while the component link is up.

A component link has no acknowledgements: notices written shortly before the link falls
may be lost with it. The consumer rewinds each app's cursor to the first notice written
within the resend window before the loss, so those are sent again after the reconnect
(at least once; bots de-duplicate by event id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from cmaas.delivery.events import CursorConsumer
from cmaas.keystore import NOTICES_CONSUMER, App, CursorState, Keystore, StatusEvent

__all__ = ["NoticeConsumer", "NoticeSender"]

log = logging.getLogger(__name__)


class NoticeSender(Protocol):
    def send_status(self, app_id: str, to: str, event: StatusEvent) -> None: ...


class NoticeConsumer(CursorConsumer):
    consumer = NOTICES_CONSUMER

    def __init__(
        self,
        keystore: Keystore,
        sender: NoticeSender,
        *,
        resend_window_s: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(keystore)
        self._sender = sender
        self._connected = False
        self._window = resend_window_s
        self._monotonic = monotonic
        # (written at, app, the cursor from which that batch was read)
        self._recent: deque[tuple[float, str, int]] = deque()
        self._rewinding: asyncio.Task[None] | None = None
        self._resuming: set[asyncio.Task[None]] = set()

    def wants(self, app: App) -> bool:
        # An app without a bound JID costs nothing per event; binding its first JID moves
        # this cursor to its latest event in the keystore, so history is not replayed.
        return bool(app.jids)

    async def deliver(self, app_id: str, events: Sequence[StatusEvent]) -> bool:
        app = await self.app(app_id)
        if not app.jids:
            return True  # unbound since wants() was asked: nobody to tell
        if not self._connected:
            return False
        for event in events:
            for jid in app.jids:
                self._sender.send_status(app_id, jid, event)
        now = self._monotonic()
        self._recent.append((now, app_id, events[0].event_id - 1))
        while self._recent and self._recent[0][0] < now - self._window:
            self._recent.popleft()
        log.debug("told %s of %d status events of %s", ", ".join(app.jids), len(events), app_id)
        return True

    def link_up(self) -> None:
        """The component link is up: deliver from each app's cursor."""
        self._connected = True
        task = asyncio.get_running_loop().create_task(self.start())
        self._resuming.add(task)
        task.add_done_callback(self._resuming.discard)

    def link_down(self) -> None:
        """The component link fell: what it carried lately may be lost, so rewind."""
        self._connected = False
        horizon = self._monotonic() - self._window
        rewind: dict[str, int] = {}
        for sent_at, app_id, cursor in self._recent:
            if sent_at >= horizon:
                rewind[app_id] = min(rewind.get(app_id, cursor), cursor)
        self._recent.clear()
        if rewind and not self._stopped:
            self._rewinding = asyncio.get_running_loop().create_task(self._rewind(rewind))

    async def _rewind(self, rewind: dict[str, int]) -> None:
        for app_id, cursor in rewind.items():
            if cursor < self.state(app_id).event_id:
                await self._save(CursorState(app_id, cursor, 0, ""))
        log.info("status notices of %d apps will be sent again after the reconnect", len(rewind))

    async def stop(self) -> None:
        await asyncio.gather(*self._resuming, return_exceptions=True)
        if self._rewinding is not None:
            await asyncio.gather(self._rewinding, return_exceptions=True)
        await super().stop()

    async def start(self) -> None:
        if self._rewinding is not None:
            await self._rewinding
            self._rewinding = None
        if not self._stopped:
            await super().start()
