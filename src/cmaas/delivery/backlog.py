"""The outbox's depth as admission reads it where several instances share the database:
the messages queued by all of them (accepted, not yet dispatched), counted there at
most about once a second, so that back-pressure costs a request no query most of the
time. Where one process has the database (SQLite), its dispatcher's own count is the
same number, and is read instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from cmaas.keystore import MessageStore
from cmaas.lifecycle import Priority

__all__ = ["SharedDepth"]


class SharedDepth:
    """Queued messages per priority, across the instances, cached for ``every_s``."""

    def __init__(
        self,
        store: MessageStore,
        *,
        every_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._every_s = every_s
        self._monotonic = monotonic
        self._depth: Mapping[Priority, int] = dict.fromkeys(Priority, 0)
        self._read_at: float | None = None
        # Requests that find the count stale wait for one query, not one each.
        self._reading = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._read_at is not None and self._monotonic() - self._read_at < self._every_s

    async def __call__(self) -> Mapping[Priority, int]:
        """Raises: KeystoreError, psycopg.Error, sqlite3.Error: The count could not be
        read."""
        if not self._fresh():
            async with self._reading:
                if not self._fresh():
                    self._depth = await self._store.depth()
                    self._read_at = self._monotonic()
        return self._depth
