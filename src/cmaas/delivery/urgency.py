"""High-priority messages on their way, for other work to step aside for.

One process admits, stores and dispatches every message, and on a small machine it
shares the CPU with the IM server. An OTP's way crosses the event loop, the database's
thread and the IM server several times, and every step waited behind whatever other
work was ready then: other requests' slices and their commits, rounds of bulk stanzas
and their receipts. So other work steps aside, a bounded time at a time:

- Admission: while an OTP is being admitted, and for ``linger_s`` after one is stored,
  other requests pause between their slices (:meth:`UrgentTraffic.make_way`). OTPs come
  in waves (a login rush): bulk admitted at full speed between two of them is work the
  next one finds queued ahead of it in the loop and the database's thread.
- Dispatch: while an OTP written to the IM server has no report yet (``unanswered_s``
  at most), rounds of other messages wait (:meth:`UrgentTraffic.until_answered`), so
  that the server and the device pass on its stanza and its receipt without a flood
  beside them.

Each wait lasts ``max_wait_s`` at most, and a slice or a round goes between two waits:
a steady stream of OTPs slows other work and never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

__all__ = ["MessageKey", "UrgentTraffic"]

MessageKey = tuple[str, str]
"""(app id, message id)."""


class UrgentTraffic:
    """The high-priority messages being admitted, lately stored, and not yet answered.

    Args:
        max_wait_s: The longest one slice or round of other work waits at a time.
        linger_s: How long after a high-priority message is stored other admissions
            still pause.
        unanswered_s: How long a high-priority message holds other rounds at most if no
            report on it comes back (its device is offline, say).
    """

    def __init__(
        self, max_wait_s: float = 0.02, linger_s: float = 0.06, unanswered_s: float = 0.06
    ) -> None:
        self._max_wait_s = max_wait_s
        self._linger_s = linger_s
        self._unanswered_s = unanswered_s
        self._admitting = 0
        self._lingering: asyncio.TimerHandle | None = None
        self._unanswered: dict[MessageKey, asyncio.TimerHandle] = {}
        self._admissions_quiet = asyncio.Event()
        self._admissions_quiet.set()
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self.waiting = 0
        """Slices and rounds of other work waiting now."""

    @property
    def admitting(self) -> int:
        """High-priority admissions in progress."""
        return self._admitting

    @property
    def all_answered(self) -> bool:
        """Whether no high-priority message written lately still awaits its report."""
        return self._all_answered.is_set()

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Count one high-priority admission for as long as the block runs."""
        self._admitting += 1
        self._admissions_quiet.clear()
        try:
            yield
        finally:
            self._admitting -= 1
            self._settle_admissions()

    def stored(self, keys: Iterable[MessageKey]) -> None:
        """These high-priority messages are stored and queued: admissions pause for
        ``linger_s`` more, and dispatch rounds until a report on each comes back
        (:meth:`answered`) or ``unanswered_s`` has passed."""
        loop = asyncio.get_running_loop()
        keys = list(keys)
        for key in keys:
            former = self._unanswered.pop(key, None)
            if former is not None:
                former.cancel()
            self._unanswered[key] = loop.call_later(self._unanswered_s, self.answered, key)
            self._all_answered.clear()
        if keys:
            if self._lingering is not None:
                self._lingering.cancel()
            self._lingering = loop.call_later(self._linger_s, self._lingered)
            self._admissions_quiet.clear()

    def answered(self, key: MessageKey) -> None:
        """A report on this message came back (or it no longer counts)."""
        timer = self._unanswered.pop(key, None)
        if timer is None:
            return
        timer.cancel()
        if not self._unanswered:
            self._all_answered.set()

    def _lingered(self) -> None:
        self._lingering = None
        self._settle_admissions()

    def _settle_admissions(self) -> None:
        if not self._admitting and self._lingering is None:
            self._admissions_quiet.set()

    async def make_way(self) -> None:
        """An admission's pause between two slices: one turn of the loop, or while a
        high-priority message is being admitted or was stored lately, until then or
        ``max_wait_s`` has passed."""
        if self._admissions_quiet.is_set():
            await asyncio.sleep(0)
            return
        await self._until(self._admissions_quiet)

    async def until_answered(self, *, or_until: asyncio.Event | None = None) -> None:
        """A dispatch round's wait: until every high-priority message written lately is
        answered, ``or_until`` is set, or ``max_wait_s`` has passed."""
        await self._until(self._all_answered, or_until)

    async def _until(self, *events: asyncio.Event | None) -> None:
        self.waiting += 1
        waits = {asyncio.ensure_future(event.wait()) for event in events if event is not None}
        try:
            await asyncio.wait(waits, timeout=self._max_wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
            for waiting in waits:
                waiting.cancel()
