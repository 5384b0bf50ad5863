"""High-priority admissions in progress, for bulk admissions to step aside for.

One event loop admits every request. Between two slices of a large request the loop
serves whatever is ready, an OTP's request among the other bulk requests' slices: with
four bulk requests in flight, the OTP's every step waited behind up to four slices.
While an OTP is being admitted, bulk slices now wait for it instead, for a bounded time
each, so that a steady stream of OTPs slows bulk intake and never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["UrgentAdmissions"]


class UrgentAdmissions:
    """Counts the high-priority admissions in progress.

    Args:
        max_wait_s: The longest one bulk slice waits for them to finish.
    """

    def __init__(self, max_wait_s: float = 0.02) -> None:
        self._max_wait_s = max_wait_s
        self._admitting = 0
        self._none = asyncio.Event()
        self._none.set()
        self.waiting = 0
        """Bulk slices waiting now."""

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Count one high-priority admission for as long as the block runs."""
        self._admitting += 1
        self._none.clear()
        try:
            yield
        finally:
            self._admitting -= 1
            if not self._admitting:
                self._none.set()

    async def make_way(self) -> None:
        """A bulk slice's pause: one turn of the loop, or while high-priority admissions
        are in progress, until they are done or ``max_wait_s`` has passed."""
        if not self._admitting:
            await asyncio.sleep(0)
            return
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none.wait(), self._max_wait_s)
        finally:
            self.waiting -= 1
