"""Status events as apps receive them: long-poll waits, and consumers that deliver each
app's events in order from a persisted cursor (webhooks, XMPP notices)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from cmaas.delivery.doorbells import Doorbells
from cmaas.keystore import App, CursorState, Keystore, StatusEvent

__all__ = ["ConsumerFailed", "CursorConsumer", "Deposed", "EventHub"]

log = logging.getLogger(__name__)

MAX_EVENTS_PER_READ = 100
APP_FRESHNESS_S = 2.0
"""How stale a consumer's copy of an app's settings (callback URL, bound JIDs) may be."""


class EventHub:
    """Wakes those waiting for an app's events when a commit records some."""

    def __init__(self, keystore: Keystore, bells: Doorbells | None = None) -> None:
        """Args:
        bells: Wake the long-polls; by default, this process's own.
        """
        self._store = keystore.messages
        self._bells = bells or Doorbells()
        self._subscribers: list[Callable[[set[str]], None]] = []

    def subscribe(self, subscriber: Callable[[set[str]], None]) -> None:
        """Call ``subscriber`` with the apps that have new events after each commit."""
        self._subscribers.append(subscriber)

    def on_events(self, events: Sequence[StatusEvent]) -> None:
        """Store listener: runs on the event loop right after a commit."""
        apps = {event.app_id for event in events}
        for app_id in apps:
            self._bells.ring(app_id)
        for subscriber in self._subscribers:
            subscriber(apps)

    def release(self) -> None:
        """Wake every waiting long-poll (the gateway is stopping): each answers with what
        it has, so that the HTTP server need not wait out their timeouts."""
        self._bells.release()

    async def wait_events(
        self, app_id: str, after: int, wait_s: float, limit: int = MAX_EVENTS_PER_READ
    ) -> list[StatusEvent]:
        """The app's events after ``after``; waits up to ``wait_s`` for the first one."""
        events = await self._bells.read(
            app_id, lambda: self._store.events_after(app_id, after, limit), wait_s
        )
        return list(events)


class Deposed(Exception):
    """Another instance leads now: a consumer here saves no cursor and delivers no more."""


class ConsumerFailed(Exception):
    """A consumer could not deliver a batch; it is retried with backoff."""


class CursorConsumer(ABC):
    """Delivers each app's events in order, at least once, from a cursor kept in the
    database: a restart resumes after the last batch delivered.

    Events older than ``max_age_s`` are skipped (webhooks retry until
    an event is 24 hours old). Failures back off exponentially per app, so one app's
    dead endpoint never delays another's.
    """

    consumer: str = ""

    def __init__(
        self,
        keystore: Keystore,
        *,
        max_age_s: float = 86_400.0,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keystore = keystore
        self._store = keystore.messages
        self._max_age_ms = int(max_age_s * 1000)
        self._first_backoff = first_backoff_s
        self._max_backoff = max_backoff_s
        self._clock = clock
        self._cursors: dict[str, CursorState] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._kicked: set[str] = set()
        # Apps skipped because they had nowhere to receive events (see _drain_once).
        self._unwanted: set[str] = set()
        self._apps: dict[str, tuple[float, App]] = {}
        self._stopped = False
        # The epoch this consumer delivers as leader, once it leads: its cursor writes
        # are refused when another instance leads. None: not checked.
        self._leader: int | None = None
        self._following = False
        self.delivered = 0
        self.failures = 0
        self.skipped = 0

    def wants(self, app: App) -> bool:
        """Whether the app has somewhere to receive events now; if not, they wait."""
        return True

    async def app(self, app_id: str) -> App:
        """The app as stored, read at most every ``APP_FRESHNESS_S`` per app: consumers
        are woken by every commit, and an app's settings change rarely.

        Raises: AppNotFound.
        """
        now = time.monotonic()
        cached = self._apps.get(app_id)
        if cached is None or now - cached[0] > APP_FRESHNESS_S:
            cached = self._apps[app_id] = (now, await self._keystore.get_app(app_id))
        return cached[1]

    @abstractmethod
    async def deliver(self, app_id: str, events: Sequence[StatusEvent]) -> bool:
        """Deliver one batch of an app's events.

        Returns: ``False`` when the app has nowhere to receive them now (no callback
            URL, no bound JID, link down): the cursor stays, to resume later.
        Raises: ConsumerFailed: Retry later with backoff.
        """

    def follow(self) -> None:
        """Deliver nothing until :meth:`lead`: another instance may be the leader."""
        self._following = True

    def lead(self, epoch: int) -> None:
        """Deliver from now on, as the leader of ``epoch``; :meth:`start` next."""
        self._leader = epoch
        self._following = False

    async def start(self) -> None:
        """Load the cursors and resume every app that has events left to deliver."""
        if self._following:
            return
        last = await self._store.last_event_id()
        for state in await self._store.cursors(self.consumer):
            self._cursors[state.app_id] = state
            if state.event_id < last:
                self.kick({state.app_id})

    async def catch_up(self) -> None:
        """Deliver the events committed by other instances sharing the database, whose
        commits wake no one here: every app behind the last event is kicked."""
        last = await self._store.last_event_id()
        for state in await self._store.cursors(self.consumer):
            # Cursors held here are at least as new as the database's.
            if self._cursors.setdefault(state.app_id, state).event_id < last:
                self.kick({state.app_id})

    def kick(self, app_ids: set[str]) -> None:
        """Deliver these apps' new events (an :class:`EventHub` subscriber)."""
        if self._stopped or self._following:
            return  # shutting down, or not leading: the cursors say where to resume
        for app_id in app_ids:
            self._kicked.add(app_id)
            running = self._running.get(app_id)
            # A drain that has returned but whose done-callback has not run yet would
            # never see this kick: start a new one.
            if running is None or running.done():
                task = asyncio.get_running_loop().create_task(
                    self._drain(app_id), name=f"cmaas {self.consumer} {app_id}"
                )
                self._running[app_id] = task
                task.add_done_callback(functools.partial(self._finished, app_id))

    def _finished(self, app_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(app_id) is task:
            del self._running[app_id]

    async def stop(self) -> None:
        """Stop delivering; nothing starts again after this."""
        self._stopped = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def state(self, app_id: str) -> CursorState:
        return self._cursors.get(app_id) or CursorState(app_id, 0, 0, "")

    async def _drain(self, app_id: str) -> None:
        try:
            while app_id in self._kicked:
                self._kicked.discard(app_id)
                await self._drain_once(app_id)
        except asyncio.CancelledError:
            raise
        except Deposed as deposed:
            log.error("%s; delivery stops on this instance", deposed)
        except Exception:
            log.exception("%s: delivering events of %s failed", self.consumer, app_id)

    async def _drain_once(self, app_id: str) -> None:
        while True:
            if not self.wants(await self.app(app_id)):
                self._unwanted.add(app_id)
                return
            if app_id in self._unwanted:
                # The keystore may have moved the cursor meanwhile (a first bound JID).
                self._unwanted.discard(app_id)
                await self._reload(app_id)
            state = self.state(app_id)
            events = await self._store.events_after(app_id, state.event_id, MAX_EVENTS_PER_READ)
            if not events:
                return
            horizon = int(self._clock() * 1000) - self._max_age_ms
            fresh = [event for event in events if event.at_ms >= horizon]
            if len(fresh) < len(events):
                self.skipped += len(events) - len(fresh)
                log.warning(
                    "%s: %d events of %s older than %d h dropped undelivered",
                    self.consumer,
                    len(events) - len(fresh),
                    app_id,
                    self._max_age_ms // 3_600_000,
                )
            try:
                if fresh and not await self.deliver(app_id, fresh):
                    return
            except ConsumerFailed as error:
                failures = state.failures + 1
                self.failures += 1
                await self._save(CursorState(app_id, state.event_id, failures, str(error)[:500]))
                delay = min(self._first_backoff * 2 ** (failures - 1), self._max_backoff)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                continue
            self.delivered += len(fresh)
            await self._save(CursorState(app_id, events[-1].event_id, 0, ""))

    async def _reload(self, app_id: str) -> None:
        for state in await self._store.cursors(self.consumer):
            if state.app_id == app_id:
                self._cursors[app_id] = state

    async def _save(self, state: CursorState) -> None:
        self._cursors[state.app_id] = state
        if not await self._store.save_cursor(self.consumer, state, leader=self._leader):
            # Another instance leads now and delivers from the saved cursors; this one's
            # process is on its way out (its leader lock is gone).
            self._stopped = True
            raise Deposed(f"{self.consumer}: another instance leads now")
