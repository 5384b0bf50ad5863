"""Dispatching stored messages to the IM server, in priority order, and resending what
a lost link may have dropped.

A component link has no stream management (XEP-0198): a stanza written just before the
link fails may never reach the server. The dispatcher therefore remembers what it wrote
within the resend window and, after a reconnect, writes again every such message that
has no receipt yet, under the same stanza id; devices show a message id once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from cmaas.clock import now_ms
from cmaas.delivery.queues import PriorityQueues
from cmaas.delivery.urgency import MessageKey, UrgentTraffic
from cmaas.keystore import (
    MessageStore,
    OutboxEntry,
    Takeover,
)
from cmaas.keystore.models import StatusEvent
from cmaas.lifecycle import (
    MessageStatus,
    Priority,
    StatusChange,
)
from cmaas.xmpp.link import wait_first

__all__ = ["MAX_RETURNS", "Dispatcher", "StanzaSender"]

MAX_RETURNS = 3
"""How often a message is written again because a copy came back."""
_RETURNS_REMEMBERED = 10_000
# For this long after a high-priority message arrives, one round stands at the server
# instead of ``rounds_in_flight``: OTPs come in runs (a login wave), and each one then
# finds at most a round of bulk ahead of it at the server.
_URGENT_SPELL_S = 1.0
_URGENT_ROUND = 8

log = logging.getLogger(__name__)

_FINISHED = frozenset(
    {MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED, MessageStatus.EXPIRED}
)


class WrittenLately:
    """The messages written within the resend window that have no final report yet:
    what a lost link may have dropped.

    A flood's receipts may lag its writes by the whole window: 100,000 messages on a
    2-core VM, when the device's server falls behind. So each is kept by its sequence
    number alone, about 100 bytes, against 600 for its outbox entry and key; what a
    resend needs besides is read back from the store. Only high-priority messages are
    also kept by key, for their reports to be recorded first.
    """

    def __init__(self) -> None:
        self._rounds: deque[tuple[float, list[int]]] = deque()
        # Each message's latest write: a message written again is in two rounds.
        self._unreported: dict[int, float] = {}
        self._urgent: OrderedDict[MessageKey, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._unreported)

    def add(self, entries: Sequence[OutboxEntry], written_at: float) -> None:
        """Remember a round written at ``written_at`` (monotonic seconds)."""
        seqs = [entry.seq for entry in entries]
        self._rounds.append((written_at, seqs))
        self._unreported.update(dict.fromkeys(seqs, written_at))
        for entry in entries:
            if entry.priority is Priority.HIGH:
                key = (entry.app_id, entry.message_id)
                self._urgent.pop(key, None)
                self._urgent[key] = written_at

    def is_urgent(self, key: MessageKey) -> bool:
        """Whether a high-priority message written lately and not finished has ``key``."""
        return key in self._urgent

    def finished(self, event: StatusEvent) -> None:
        """The message ``event`` is about needs no resend any more."""
        self._unreported.pop(event.seq, None)
        self._urgent.pop((event.app_id, event.message_id), None)

    def forget_before(self, horizon: float) -> None:
        """Forget what was written before ``horizon``: the server has had it."""
        while self._rounds and self._rounds[0][0] < horizon:
            _, seqs = self._rounds.popleft()
            for seq in seqs:
                if self._unreported.get(seq, horizon) < horizon:
                    del self._unreported[seq]
        while self._urgent and next(iter(self._urgent.values())) < horizon:
            self._urgent.popitem(last=False)

    def take_since(self, since: float) -> list[int]:
        """The messages with no final report written since ``since``, in the order they
        were last written; everything is forgotten."""
        unreported = self._unreported
        seqs = [
            seq
            for written_at, round_seqs in self._rounds
            if written_at >= since
            for seq in round_seqs
            if unreported.get(seq) == written_at
        ]
        self.clear()
        return seqs

    def clear(self) -> None:
        self._rounds.clear()
        self._unreported.clear()
        self._urgent.clear()


class OutgoingSealed(NamedTuple):
    """One sealed message to write: an envelope, a legacy-OMEMO element, or both."""

    app_id: str
    recipient: str
    message_id: str
    envelope_json: str | None
    omemo_xml: str | None = None


class StanzaSender(Protocol):
    """The component, as the dispatcher sees it."""

    def send_sealed_many(self, messages: Sequence[OutgoingSealed]) -> bool:
        """Write the messages, in order, in one write to the link; ``False`` if the
        link is down and nothing was written."""
        ...

    async def barrier(self) -> None:
        """Return once the IM server has processed everything written before the call."""
        ...


class Dispatcher:
    """Takes queued messages in priority order and writes them to the component.

    Args:
        resend_window_s: Messages written this long before a link was lost are
            written again after the reconnect.
        batch: Messages loaded and written per round.
        rounds_in_flight: Rounds written that the IM server has not yet confirmed
            (each round ends with a ping, :meth:`StanzaSender.barrier`). Without this
            bound, socket buffers and the server's queue fill with thousands of bulk
            messages, and an urgent message queued late waits behind all of them; with
            it, at most this many rounds stand before it. The defaults let 96 stand,
            as 3 rounds of 32 did, with a third fewer rounds (each costs a database
            read, a write and a ping): 10 to 15 % less CPU per message on a flood.
            One round of 96 cost as little, but left Prosody idle between rounds.
        owner: This instance's epoch: it dispatches only the messages it owns, and
            records only about those (``None``: every message, for tests).
        urgent: The high-priority messages on their way: told of those queued and
            answered; other rounds wait while any written lately is unanswered
            (:class:`~cmaas.delivery.urgency.UrgentTraffic`).
    """

    def __init__(
        self,
        store: MessageStore,
        sender: StanzaSender,
        *,
        resend_window_s: float = 15.0,
        batch: int = 48,
        rounds_in_flight: int = 2,
        owner: int | None = None,
        urgent: UrgentTraffic | None = None,
        clock_ms: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._urgent_traffic = urgent or UrgentTraffic()
        self._urgent_queued = asyncio.Event()
        # A round of other messages goes between two waits for urgent traffic.
        self._held_last_round = False
        self._sender = sender
        self._owner = owner
        self._fenced = asyncio.Event()
        self._released = False
        # When a high-priority message last arrived (monotonic seconds).
        self._urgent_at = float("-inf")
        self._window = resend_window_s
        self._batch = batch
        self._rounds_in_flight = rounds_in_flight
        self._barriers: deque[asyncio.Task[None]] = deque()
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._queues = PriorityQueues()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._lost_at: float | None = None
        self._written = WrittenLately()
        self._resending: set[asyncio.Task[None]] = set()
        self._marking: set[asyncio.Task[list[StatusEvent]]] = set()
        # Copies returned per message, so that a client that returns every copy cannot
        # make the gateway write the message forever.
        self._returned: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.resent = 0

    def adopt(self, takeover: Takeover) -> None:
        """Queue what this instance took over: messages never dispatched, and those
        dispatched lately, which the previous owner may have lost with its link."""
        for entry in takeover.resend:
            self._queues.push(entry)
        for entry in takeover.accepted:
            self._queues.push(entry)
        self._note_urgent([*takeover.resend, *takeover.accepted])
        self.resent += len(takeover.resend)
        if takeover.accepted or takeover.resend:
            log.info(
                "outbox: %d messages to dispatch, %d to resend, taken over from %s",
                len(takeover.accepted),
                len(takeover.resend),
                ", ".join(f"instance {epoch}" for epoch in takeover.fenced) or "no instance",
            )
        self._wake.set()

    def fence(self) -> None:
        """This instance was taken for dead and its messages moved: write nothing more."""
        self._fenced.set()
        self._queues = PriorityQueues()
        self._written.clear()
        self._connected.clear()
        self._drop_barriers()
        self._wake.set()

    @property
    def fenced(self) -> bool:
        return self._fenced.is_set()

    @property
    def connected(self) -> bool:
        """Whether the component link is up (this instance can write messages)."""
        return self._connected.is_set()

    @property
    def released(self) -> bool:
        """Whether this instance gave up its messages while its link was down."""
        return self._released

    def release(self) -> None:
        """Forget the queue: the link is down and the messages go to a linked instance.
        Messages accepted until :meth:`rejoin` are left to whoever takes them over."""
        self._released = True
        self._queues = PriorityQueues()
        self._written.clear()

    def rejoin(self) -> None:
        """The link is back: accept messages of this instance's own again."""
        self._released = False

    def owner_for_new(self) -> int | None:
        """Who owns a message accepted now: this instance, or nobody while it has given
        up its messages (the next takeover of a linked instance moves those)."""
        return None if self._released else self._owner

    def enqueue(self, entries: Iterable[OutboxEntry]) -> None:
        """Queue newly accepted messages."""
        if self._fenced.is_set() or self._released:
            return  # whoever fenced this instance, or takes over released ones, sends them
        entries = list(entries)
        for entry in entries:
            self._queues.push(entry)
        self._note_urgent(entries)
        self._wake.set()

    def depth(self) -> dict[Priority, int]:
        return self._queues.depth()

    def reported(self, app_id: str, message_id: str) -> bool:
        """A report on a message (a receipt, a marker, a bounce) arrived and is about to
        be recorded: other rounds no longer wait for it.

        Returns: whether the message, written lately and not yet finished, is
        high-priority (its report is recorded ahead of the other writes).
        """
        key = (app_id, message_id)
        self._urgent_traffic.answered(key)
        return self._written.is_urgent(key)

    @property
    def inflight(self) -> int:
        """Messages written within the resend window with no receipt yet."""
        return len(self._written)

    def link_up(self) -> None:
        """The component (re)connected: resend what the lost link may have dropped."""
        if self._fenced.is_set():
            return
        if self._lost_at is not None:
            self._resend_unconfirmed(self._lost_at - self._window, "the link was lost")
        self._connected.set()
        self._wake.set()

    def instance_died(self) -> None:
        """An instance sharing the component died: receipts for this one's messages that
        the IM server had handed to its link are lost with it, so resend what has none."""
        if not self._fenced.is_set():
            self._resend_unconfirmed(self._monotonic() - self._window, "an instance died")
            self._wake.set()

    def _resend_unconfirmed(self, since: float, why: str) -> None:
        """Queue again, first, what was written since ``since`` and has no receipt: the
        next round waits until it is queued."""
        seqs = self._written.take_since(since)
        if seqs:
            task = asyncio.create_task(self._requeue(seqs, why), name="outbox-resend")
            self._resending.add(task)
            task.add_done_callback(self._requeued)

    async def _requeue(self, seqs: list[int], why: str) -> None:
        entries = await self._store.pending_entries(seqs, owner=self._owner)
        if self._fenced.is_set() or self._released:
            return
        for entry in reversed(entries):
            self._queues.push(entry, front=True)
        self.resent += len(entries)
        if entries:
            log.info("outbox: resending %d messages written before %s", len(entries), why)
        self._wake.set()

    def _requeued(self, task: asyncio.Task[None]) -> None:
        self._resending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox: reading messages to resend failed", exc_info=task.exception())

    async def resend(self, app_id: str, message_id: str) -> bool:
        """Write a pending message again, ahead of its class (a copy of it came back).

        Returns: ``False`` when it is no longer pending or was written again
        :data:`MAX_RETURNS` times already.
        """
        key = (app_id, message_id)
        returned = self._returned.pop(key, 0) + 1
        self._returned[key] = returned
        while len(self._returned) > _RETURNS_REMEMBERED:
            self._returned.popitem(last=False)
        if returned > MAX_RETURNS or self._fenced.is_set():
            return False
        entry = await self._store.pending_entry(app_id, message_id)
        if entry is None:
            return False
        self._queues.push(entry, front=True)
        self.resent += 1
        self._wake.set()
        return True

    def link_down(self) -> None:
        if self._connected.is_set():
            self._lost_at = self._monotonic()
        self._connected.clear()
        self._drop_barriers()

    def _drop_barriers(self) -> None:
        while self._barriers:
            self._barriers.popleft().cancel()

    def on_events(self, events: Sequence[StatusEvent]) -> None:
        """Forget messages that need no resend any more (store listener)."""
        for event in events:
            if event.status in _FINISHED:
                self._written.finished(event)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set."""
        try:
            while not stop.is_set() and not self._fenced.is_set():
                try:
                    await self._round(stop)
                except Exception:
                    # A dispatcher that dies leaves the outbox silently stuck: never let one
                    # bad round end it.
                    log.exception("outbox: a dispatch round failed; carrying on")
                    await asyncio.sleep(0.1)
        finally:
            self._drop_barriers()
            if self._marking or self._resending:
                await asyncio.gather(*self._marking, *self._resending, return_exceptions=True)

    async def _round(self, stop: asyncio.Event) -> None:
        if not self._connected.is_set():
            await wait_first(stop, self._fenced, self._connected)
            return
        self._forget_old()
        # A turn for the reading side first: with the rounds confirmed counted out here
        # and the database read on this thread, rounds could follow one another without
        # ever yielding, and receipts waited unread (Prosody's drain fell from about
        # 1,700 to 1,160 msg/s).
        await asyncio.sleep(0)
        while self._barriers and self._barriers[0].done():
            self._barriers.popleft()  # the server answers pings in order
        # Past the bound, only high-priority messages go out (they skip it); bulk in
        # their rounds would stand at the server ahead of the next OTP, beyond the bound.
        over_bound = len(self._barriers) > self._rounds_standing()
        if over_bound and not self._queues.depth()[Priority.HIGH]:
            await self._wait_for_server(stop)
            return
        if await self._held_for_urgent():
            return
        if self._resending:
            # What a lost link may have dropped goes ahead of what is queued.
            await asyncio.wait(set(self._resending))
        batch = self._take(only=Priority.HIGH if over_bound else None)
        if not batch:
            self._wake.clear()
            if not len(self._queues):
                await wait_first(stop, self._fenced, self._wake)
            return
        if await self._dispatch(batch):
            self._barriers.append(asyncio.create_task(self._sender.barrier()))
            await self._wait_for_server(stop)

    async def _wait_for_server(self, stop: asyncio.Event) -> None:
        """Hold the next round until the server has confirmed all but the last few.

        A high-priority message never waits here: it goes out in the next round, ahead
        of everything still queued. While they arrive, fewer rounds stand, so that what
        the server has yet to pass on ahead of the next one stays short.
        """
        while len(self._barriers) > self._rounds_standing():
            if self._queues.depth()[Priority.HIGH]:
                return
            oldest = self._barriers[0]
            await self._until_first_done({oldest}, within_s=0.5)
            if stop.is_set() or not self._connected.is_set():
                return  # a lost link drops the barriers; the next link starts afresh
            if oldest.done() and self._barriers and self._barriers[0] is oldest:
                self._barriers.popleft()

    async def _until_first_done(
        self, tasks: set[asyncio.Task[Any]], within_s: float | None = None
    ) -> None:
        """Wait until one of ``tasks`` is done, ``within_s`` pass, or something is
        queued (the callers look for a high-priority message before they wait)."""
        self._wake.clear()
        waking = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {*tasks, waking}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waking.cancel()

    async def _held_for_urgent(self) -> bool:
        """Wait while high-priority messages written lately have no report yet and none
        is queued, a bounded time, then let one round of others go before waiting again;
        whether it waited (the caller starts its round again)."""
        if (
            self._held_last_round
            or self._urgent_traffic.all_answered
            or self._queues.depth()[Priority.HIGH]
            or not len(self._queues)
        ):
            self._held_last_round = False
            return False
        self._held_last_round = True
        self._urgent_queued.clear()
        await self._urgent_traffic.until_answered(or_until=self._urgent_queued)
        return True

    def _rounds_standing(self) -> int:
        return 1 if self._in_urgent_spell() else self._rounds_in_flight

    def _in_urgent_spell(self) -> bool:
        return self._monotonic() - self._urgent_at < _URGENT_SPELL_S

    def _note_urgent(self, entries: Iterable[OutboxEntry]) -> None:
        urgent = [(e.app_id, e.message_id) for e in entries if e.priority is Priority.HIGH]
        if urgent:
            self._urgent_at = self._monotonic()
            self._urgent_traffic.stored(urgent)
            self._urgent_queued.set()

    def _take(self, only: Priority | None = None) -> list[int]:
        """The sequence numbers of the next round's messages."""
        batch: list[int] = []
        # In an OTP spell, rounds are short too: what stands at the server ahead of the
        # next OTP is a few messages, not a full round.
        size = min(self._batch, _URGENT_ROUND) if self._in_urgent_spell() else self._batch
        while len(batch) < size:
            seq = self._queues.pop(only)
            if seq is None:
                break
            batch.append(seq)
        return batch

    def _forget_old(self) -> None:
        """While the link is up, what was written a window ago has reached the server."""
        self._written.forget_before(self._monotonic() - self._window)

    async def _dispatch(self, batch: list[int]) -> bool:
        """Write a round; returns whether anything was written."""
        payloads = await self._store.sealed(batch, owner=self._owner)
        now_ms = self._clock_ms()
        expired: list[StatusChange] = []
        writable: list[tuple[OutboxEntry, OutgoingSealed]] = []
        for seq in batch:
            payload = payloads.get(seq)
            if payload is None:
                continue  # finished meanwhile (delivered, failed or expired), or taken over
            entry = payload.entry
            if entry.expires_ms <= now_ms:
                expired.append(
                    StatusChange(
                        entry.app_id,
                        entry.message_id,
                        MessageStatus.EXPIRED,
                        now_ms,
                        detail="expired before it could be dispatched",
                    )
                )
                continue
            writable.append(
                (
                    entry,
                    OutgoingSealed(
                        entry.app_id,
                        entry.recipient_jid,
                        entry.message_id,
                        None if payload.envelope is None else payload.envelope.decode(),
                        None if payload.omemo is None else payload.omemo.decode(),
                    ),
                )
            )
        # One write for the round rather than a system call per message. (On loopback
        # the kernel's cost follows the bytes: this saved calls, not measurable CPU.)
        if writable and (
            self._fenced.is_set()
            or not self._connected.is_set()
            or not self._sender.send_sealed_many([message for _, message in writable])
        ):
            for entry, _ in reversed(writable):
                self._queues.push(entry, front=True)
            writable = []
        sent = [entry.seq for entry, _ in writable]
        if writable:
            self._written.add([entry for entry, _ in writable], self._monotonic())
        if expired:
            await self._store.record(expired)
        if sent:
            # Recording runs beside the next round; a crash before it commits leaves the
            # message 'accepted', and a restart sends it again (devices show it once).
            urgent = any(entry.priority is Priority.HIGH for entry, _ in writable)
            task = asyncio.create_task(
                self._store.mark_dispatched(sent, now_ms, owner=self._owner, urgent=urgent)
            )
            self._marking.add(task)
            task.add_done_callback(self._marked)
            # An OTP queued meanwhile goes out first; the records catch up after it.
            while len(self._marking) > 4 and not self._queues.depth()[Priority.HIGH]:
                await self._until_first_done(set(self._marking))
        return bool(sent)

    def _marked(self, task: asyncio.Task[list[StatusEvent]]) -> None:
        self._marking.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox: recording dispatched messages failed", exc_info=task.exception())
