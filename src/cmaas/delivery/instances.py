"""This gateway process among the instances that share one database: its epoch and
heartbeat, the takeover of dead instances' messages, and the leadership that runs the
periodic jobs and the event consumers on one instance only.

Each instance dispatches only the messages it owns. One whose heartbeat stops for
``dead_after_s`` is fenced by the first survivor to notice, which takes over its pending
messages in the same transaction; a fenced instance that still runs finds out at its
next heartbeat and stops (its supervisor starts it again, as a new instance). One whose
link to the IM server is down (its ejabberd node died; a Prosody standby) stays alive,
serving its HTTP API, but gives up its messages at each heartbeat, and takes none, until
the link is back.

Admission needs no instance of its own: what it shares (request nonces, rate buckets,
the queue's depth for back-pressure) lives in the database; see
:mod:`cmaas.delivery.submission`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from cmaas.delivery.dispatcher import Dispatcher
from cmaas.errors import CmaasError
from cmaas.keystore import MessageStore
from cmaas.xmpp.link import wait_first

__all__ = [
    "Instance",
    "InstanceFenced",
    "InstanceLeadership",
    "LeaderLock",
    "lead",
]

log = logging.getLogger(__name__)


class InstanceFenced(CmaasError):
    """Another instance took this one for dead and took over its messages, or this one
    lost the database (its heartbeat or its leadership) for too long: it must stop."""


class Instance:
    """One registered gateway process: heartbeats, and takes over dead instances.

    Args:
        dead_after_s: An instance silent this long is taken for dead; ``None`` where
            one process has the database (SQLite), whose predecessors are all dead.
    """

    def __init__(
        self,
        store: MessageStore,
        dispatcher: Dispatcher,
        epoch: int,
        *,
        heartbeat_s: float,
        dead_after_s: float | None,
        resend_window_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self.epoch = epoch
        self._heartbeat_s = heartbeat_s
        self._dead_after_s = dead_after_s
        self._window_ms = int(resend_window_s * 1000)
        self._monotonic = monotonic
        self.fenced = asyncio.Event()
        self._last_fenced_ms: int | None = None
        self._took_over = False

    async def take_over(self) -> None:
        """Fence the dead instances and queue their pending messages here; when any
        instance was fenced since the last call, resend this one's unconfirmed messages
        too (their receipts may have gone to the dead instance's link).

        Raises: KeystoreError, sqlite3.Error, psycopg.Error: The database failed.
        """
        dead_after_ms = None if self._dead_after_s is None else int(self._dead_after_s * 1000)
        takeover = await self._store.take_over(
            self.epoch, self._window_ms, dead_after_ms=dead_after_ms
        )
        if takeover.fenced:
            log.warning(
                "instance %d: took over from dead instances %s",
                self.epoch,
                ", ".join(map(str, takeover.fenced)),
            )
        self._dispatcher.adopt(takeover)
        if self._took_over and takeover.last_fenced_ms != self._last_fenced_ms:
            self._dispatcher.instance_died()
        self._took_over = True
        self._last_fenced_ms = takeover.last_fenced_ms

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat, and take over (or, without a link, release), every
        ``heartbeat_s``, until ``stop``, or until this instance is fenced: then
        :attr:`fenced` is set and the dispatcher stopped."""
        # Apart: a takeover waits for the writes queued before it, and a flood's can
        # take longer than CMAAS_DEAD_AFTER; the heartbeat must not wait behind them.
        beating = asyncio.create_task(self._beat(stop), name="cmaas heartbeat")
        try:
            while not stop.is_set() and not self.fenced.is_set():
                await wait_first(stop, self.fenced, seconds=self._heartbeat_s)
                if stop.is_set() or self.fenced.is_set():
                    return
                try:
                    if self._dead_after_s is not None and not self._dispatcher.connected:
                        await self._release()
                        continue
                    if self._dispatcher.released:
                        await self._rejoin()
                    await self.take_over()
                except Exception:
                    log.exception("instance %d: takeover failed; trying again", self.epoch)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    async def _beat(self, stop: asyncio.Event) -> None:
        alive_at = self._monotonic()
        # Without a heartbeat for that long, the others may have fenced this instance
        # already; it stops writing before it can find out.
        give_up_s = self._dead_after_s if self._dead_after_s is not None else float("inf")
        while not stop.is_set():
            await wait_first(stop, seconds=self._heartbeat_s)
            if stop.is_set():
                return
            try:
                # A database that stopped answering must count as a failure, not a wait.
                async with asyncio.timeout(min(give_up_s, 2 * self._heartbeat_s + 5.0)):
                    alive = await self._store.heartbeat(self.epoch)
                if not alive:
                    self._stop("another instance took this one for dead and took over its messages")
                    return
                alive_at = self._monotonic()
            except Exception:
                log.exception("instance %d: heartbeat failed", self.epoch)
                if self._monotonic() - alive_at > give_up_s:
                    self._stop(f"no heartbeat recorded for {give_up_s:g} s")
                    return

    async def _release(self) -> None:
        """Without a link this instance can send nothing: give its messages up to the
        linked instances, again at every heartbeat while down (a submission that
        chose this instance as owner just before may commit after the last release)."""
        first = not self._dispatcher.released
        self._dispatcher.release()
        released = await self._store.release(self.epoch)
        if first or released:
            log.warning(
                "instance %d: link down; %d messages left to the linked instances",
                self.epoch,
                released,
            )

    async def _rejoin(self) -> None:
        """The link is back: release what was still owned here from the time without
        it (none of it is queued), then own new messages again; the takeover that
        follows brings back whatever no one took meanwhile."""
        await self._store.release(self.epoch)
        self._dispatcher.rejoin()
        log.info("instance %d: link up again; taking messages again", self.epoch)

    def _stop(self, why: str) -> None:
        self._dispatcher.fence()
        log.error(
            "instance %d fenced: %s; stopping (a supervisor starts it again as a new instance)",
            self.epoch,
            why,
        )
        self.fenced.set()


class LeaderLock(Protocol):
    """Leadership among the instances: held by one at a time, until its process ends."""

    async def try_take(self) -> bool:
        """Take it if free, without waiting; returns whether this process holds it."""
        ...

    async def still_held(self) -> bool: ...

    async def release(self) -> None: ...


class InstanceLeadership:
    """The leadership among the instances sharing one database, as a row naming the
    leading instance: it lasts as long as that instance is not fenced, so it goes with
    the heartbeat (and ``CMAAS_DEAD_AFTER``) and never depends on the database noticing
    that a vanished host's connection is gone."""

    def __init__(self, store: MessageStore, epoch: int) -> None:
        self._store = store
        self._epoch = epoch

    async def try_take(self) -> bool:
        return await self._store.take_lead(self._epoch)

    async def still_held(self) -> bool:
        return await self._store.leads(self._epoch)

    async def release(self) -> None:
        await self._store.resign(self._epoch)


async def lead(
    lock: LeaderLock,
    stop: asyncio.Event,
    lost: asyncio.Event,
    *,
    every_s: float,
    on_lead: Callable[[], Awaitable[None]],
    while_leading: Callable[[], Awaitable[None]],
) -> None:
    """Try for the leadership every ``every_s`` until ``stop``; once held, run
    ``on_lead`` once and ``while_leading`` every ``every_s``. A leadership lost (its
    connection broke: another instance may lead now) sets ``lost`` and returns."""
    leading = False
    while not stop.is_set():
        try:
            if not leading:
                leading = await lock.try_take()
                if leading:
                    log.info("this instance leads: periodic jobs and event consumers run here")
                    await on_lead()
            elif not await lock.still_held():
                log.error("leadership lost (this instance was taken for dead); stopping")
                lost.set()
                return
            else:
                await while_leading()
        except Exception:
            log.exception("leadership: taking it or leading failed; trying again")
        await wait_first(stop, seconds=every_s)
