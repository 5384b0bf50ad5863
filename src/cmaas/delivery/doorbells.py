"""Per-app wake-ups for long-polls: a reader reads, and if there is nothing yet waits for
its app's bell; whoever commits something for the app rings it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["Doorbells"]

T = TypeVar("T")


class Doorbells:
    """One bell per key, made when a reader first waits and dropped when rung."""

    def __init__(self) -> None:
        self._bells: dict[str, asyncio.Event] = {}

    def ring(self, key: str) -> None:
        bell = self._bells.pop(key, None)
        if bell is not None:
            bell.set()

    def release(self) -> None:
        """Wake every waiting reader (the gateway is stopping): each answers with what it
        has, so that the HTTP server need not wait out their timeouts."""
        for bell in self._bells.values():
            bell.set()
        self._bells.clear()

    async def read(
        self, key: str, read: Callable[[], Awaitable[Sequence[T]]], wait_s: float
    ) -> Sequence[T]:
        """What ``read`` finds; when nothing, waits up to ``wait_s`` for a ring, then
        reads again."""
        # Taken before reading, so that a ring between the read and the wait wakes us.
        bell = self._bells.setdefault(key, asyncio.Event())
        found = await read()
        if found or wait_s <= 0:
            return found
        try:
            async with asyncio.timeout(wait_s):
                await bell.wait()
        except TimeoutError:
            return found
        return await read()
