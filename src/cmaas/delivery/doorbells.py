"""Per-app wake-ups for long-polls: a reader reads, and if there is nothing yet waits for
its app's bell; whoever commits something for the app rings it.

One process rings its own bells. Where several instances share the database, a
:class:`BellRelay` carries each ring to the others too; a notification can still be lost
(a listener reconnecting), so a waiting reader there also reads again every few seconds:
a lost ring costs latency, never an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

__all__ = ["SHARED_POLL_FLOOR_S", "BellRelay", "Doorbells"]

T = TypeVar("T")

SHARED_POLL_FLOOR_S = 5.0
"""How often a waiting reader reads again when rings come from other instances too."""


class BellRelay(Protocol):
    """Carries rings between the instances sharing a database."""

    def publish(self, bells: str, key: str) -> None:
        """Ring ``key`` of the bells named ``bells`` at the other instances, soon (after
        this instance's commit, which the caller has seen)."""
        ...

    def subscribe(
        self, bells: str, ring: Callable[[str], None], wake_all: Callable[[], None]
    ) -> None:
        """Call ``ring`` with each key that another instance rings of ``bells``, and
        ``wake_all`` when rings may have been lost (the relay reconnected)."""
        ...


class Doorbells:
    """One bell per key, made when a reader first waits and dropped when rung.

    Args:
        name: Which bells these are, among those a relay carries.
        relay: Carries this process's rings to the other instances, and theirs here.
        poll_floor_s: A waiting reader reads again at least this often; ``None``: it
            waits for a ring only (every ring is rung in this process).
    """

    def __init__(
        self,
        name: str = "",
        relay: BellRelay | None = None,
        poll_floor_s: float | None = None,
    ) -> None:
        self._bells: dict[str, asyncio.Event] = {}
        self._name = name
        self._relay = relay
        self._poll_floor_s = poll_floor_s
        self._released = False
        if relay is not None:
            relay.subscribe(name, self.ring_here, self.wake_all)

    def ring(self, key: str) -> None:
        """Something was committed for ``key``: wake its readers, here and elsewhere."""
        self.ring_here(key)
        if self._relay is not None:
            self._relay.publish(self._name, key)

    def ring_here(self, key: str) -> None:
        """Wake the readers of ``key`` in this process only."""
        bell = self._bells.pop(key, None)
        if bell is not None:
            bell.set()

    def wake_all(self) -> None:
        """Make every waiting reader read again (rings may have been lost); those that
        still find nothing go on waiting."""
        bells, self._bells = self._bells, {}
        for bell in bells.values():
            bell.set()

    def release(self) -> None:
        """Wake every waiting reader (the gateway is stopping): each answers with what it
        has, so that the HTTP server need not wait out their timeouts."""
        self._released = True
        self.wake_all()

    async def read(
        self, key: str, read: Callable[[], Awaitable[Sequence[T]]], wait_s: float
    ) -> Sequence[T]:
        """What ``read`` finds; when nothing, reads again on each ring (and at least
        every ``poll_floor_s``) until it finds something or ``wait_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            # Taken before reading, so that a ring between the read and the wait wakes us.
            bell = self._bells.setdefault(key, asyncio.Event())
            found = await read()
            left = deadline - loop.time()
            if found or left <= 0 or self._released:
                return found
            if self._poll_floor_s is not None:
                left = min(left, self._poll_floor_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await bell.wait()
