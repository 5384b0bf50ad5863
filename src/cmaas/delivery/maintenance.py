"""Housekeeping on a timer: expiring undelivered messages, forgetting old nonces and
expired ad-hoc sessions and rate buckets that have refilled, and purging finished
messages past their retention.

It runs on one instance only, the leader, where several share the database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cmaas.delivery.blobs import BlobService
from cmaas.delivery.omemo import AppOmemo
from cmaas.keystore import MessageStore, RateStore
from cmaas.xmpp.link import wait_first

__all__ = ["Housekeeper"]

log = logging.getLogger(__name__)


class Housekeeper:
    """Args:
    retention_s: Finished messages (and their events) are deleted this long after
        their last change; message ids can be reused by the app after that.
    purge_sessions: Deletes the ad-hoc sessions past their bounds; returns how many.
    rates: The rate buckets in the database, where the instances share them: those
        that have refilled are deleted (a missing bucket is a full one).
    """

    def __init__(
        self,
        store: MessageStore,
        *,
        retention_s: float,
        expiry_every_s: float = 1.0,
        blobs: BlobService | None = None,
        omemo: AppOmemo | None = None,
        purge_sessions: Callable[[], Awaitable[int]] | None = None,
        rates: RateStore | None = None,
    ) -> None:
        self._store = store
        self._purge_sessions = purge_sessions
        self._rates = rates
        self._blobs = blobs
        self._omemo = omemo
        self._retention_ms = int(retention_s * 1000)
        self._every = expiry_every_s

    async def run(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            try:
                await self.tidy(purge=rounds % 600 == 0)
            except Exception:
                log.exception("housekeeping failed; trying again")
            rounds += 1
            await wait_first(stop, seconds=self._every)

    async def tidy(self, *, purge: bool) -> None:
        now_ms = int(time.time() * 1000)
        while len(await self._store.expire_due(now_ms)) >= 1000:
            pass
        if purge:
            if self._blobs is not None:
                await self._blobs.sweep()
            await self._store.purge_nonces(now_ms // 1000)
            await self._store.purge_instances(now_ms - self._retention_ms)
            if self._rates is not None:
                while await self._rates.purge_full() >= 5000:
                    pass
            if self._omemo is not None:
                await self._omemo.purge_inbound()
            if self._purge_sessions is not None:
                await self._purge_sessions()
            purged = 0
            # In slices, so other writers get the database between them; bounded per round.
            for _ in range(200):
                deleted = await self._store.purge_finished(now_ms - self._retention_ms)
                purged += deleted
                if deleted < 5000:
                    break
            if purged:
                log.info("purged %d finished messages past retention", purged)
