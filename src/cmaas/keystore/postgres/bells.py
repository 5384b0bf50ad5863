"""Doorbells rung across the gateway instances sharing one PostgreSQL database, by
LISTEN/NOTIFY: a long-poll waiting on one instance wakes when another commits its
answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator

import psycopg
from psycopg.rows import DictRow

from cmaas.keystore.postgres._connection import connect

__all__ = ["CHANNEL", "MAX_PAYLOAD_BYTES", "PostgresBellRelay", "payloads"]

log = logging.getLogger(__name__)

CHANNEL = "cmaas_doorbells"
MAX_PAYLOAD_BYTES = 7900
"""Room in a notification's payload, under PostgreSQL's limit of 8000 bytes."""

_Connection = psycopg.AsyncConnection[DictRow]


def payloads(origin: str, rings: dict[str, set[str]]) -> Iterator[str]:
    """Notification payloads that together carry ``rings`` (bells name to keys), each
    at most :data:`MAX_PAYLOAD_BYTES` of UTF-8: ``{"from": origin, "rings": {...}}``.

    A key too long to fit any payload is left out (the readers' poll floor finds what
    it rang for).
    """
    batch: dict[str, list[str]] = {}
    size = _size(origin, batch)
    for bells in sorted(rings):
        for key in sorted(rings[bells]):
            # The key, its quotes and comma, and the bells' entry if it is new.
            grows = len(json.dumps(key).encode()) + 1
            if bells not in batch:
                grows += len(json.dumps(bells).encode()) + 4
            if size + grows > MAX_PAYLOAD_BYTES and batch:
                yield _payload(origin, batch)
                batch = {}
                size = _size(origin, batch)
                grows += len(json.dumps(bells).encode()) + 4
            if size + grows > MAX_PAYLOAD_BYTES:
                log.warning("a doorbell key of %d bytes is too long to notify", len(key))
                continue
            batch.setdefault(bells, []).append(key)
            size += grows
    if batch:
        yield _payload(origin, batch)


def _payload(origin: str, batch: dict[str, list[str]]) -> str:
    return json.dumps({"from": origin, "rings": batch}, separators=(",", ":"))


def _size(origin: str, batch: dict[str, list[str]]) -> int:
    return len(_payload(origin, batch).encode())


class PostgresBellRelay:
    """:class:`~cmaas.delivery.doorbells.BellRelay` on LISTEN/NOTIFY.

    Rings published within ``coalesce_s`` of each other leave in one notification (or
    as few as their size allows), sent on a connection of its own in a transaction of
    its own: a NOTIFY takes a lock across the whole database at commit, which must not
    lengthen the transactions that wrote what was rung. One connection listens, and
    rings the bells here; it reconnects after a failure, and then wakes every reader
    here to read again, since rings may have been lost meanwhile.

    Args:
        origin: This instance, distinct from every other: its own notifications, which
            come back to its listener, ring nothing twice.
    """

    def __init__(
        self,
        url: str,
        origin: str,
        *,
        coalesce_s: float = 0.005,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> None:
        self._url = url
        self._origin = origin
        self._coalesce_s = coalesce_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._pending: dict[str, set[str]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._sender: _Connection | None = None
        self._rings: dict[str, Callable[[str], None]] = {}
        self._wakes: list[Callable[[], None]] = []
        self.listening = asyncio.Event()
        """Set while the listener is connected and listening (tests wait for it)."""
        self.sent = 0
        self.received = 0
        self._stopped = False

    def publish(self, bells: str, key: str) -> None:
        if self._stopped:
            return  # the gateway is stopping: the other instances poll
        self._pending.setdefault(bells, set()).add(key)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(
                self._flush(), name="cmaas doorbell notify"
            )

    def subscribe(
        self, bells: str, ring: Callable[[str], None], wake_all: Callable[[], None]
    ) -> None:
        self._rings[bells] = ring
        self._wakes.append(wake_all)

    async def _flush(self) -> None:
        await asyncio.sleep(self._coalesce_s)
        rings, self._pending = self._pending, {}
        # Rings published from here on start a flush of their own.
        self._flushing = None
        try:
            if self._sender is None or self._sender.broken:
                self._sender = await connect(self._url)
            for payload in payloads(self._origin, rings):
                await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                self.sent += 1
        except psycopg.Error as error:
            # The readers elsewhere find these answers at their poll floor.
            log.warning("doorbells not rung at the other instances: %s", error)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``, reconnecting after failures."""
        listening = asyncio.create_task(self._listen(), name="cmaas doorbell listener")
        try:
            await stop.wait()
        finally:
            self._stopped = True
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            if self._flushing is not None:
                self._flushing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flushing
            if self._sender is not None:
                await self._sender.close()

    async def _listen(self) -> None:
        delay = self._retry_s
        connected_before = False
        while True:
            try:
                async with await connect(self._url) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = self._retry_s
                    if connected_before:
                        log.info("doorbell listener reconnected; every long-poll reads again")
                        for wake_all in self._wakes:
                            wake_all()
                    connected_before = True
                    async for notification in connection.notifies():
                        self._received(notification.payload)
            except psycopg.Error as error:
                log.warning("doorbell listener lost (%s); reconnecting in %.0f s", error, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_s)

    def _received(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["from"] == self._origin:
                return
            rings = message["rings"]
            self.received += 1
            for bells, keys in rings.items():
                ring = self._rings.get(bells)
                if ring is not None:
                    for key in keys:
                        ring(str(key))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("a doorbell notification that is not ours was ignored")
