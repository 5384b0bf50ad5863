"""The durable outbox, on either backend: messages, their status events, consumers'
cursors, request nonces (claimed alone, or with the messages of the request) and daily
usage.

Writes go through the backend's :class:`~cmaas.keystore._db.Runner`: on SQLite one
:class:`~cmaas.keystore._sql.GroupCommit`, so that a burst of submissions and receipts
shares its fsyncs. A write returns only once committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from cmaas.keystore._db import Db, Row, Runner, Transactions, Work, database_ms
from cmaas.keystore._rows import (
    DAY_MS,
    conflict,
    duplicate_outcome,
    event_from_row,
    message_record,
    outbox_entry,
    quota_outcome,
    sealed_to_set,
    sealed_to_text,
)
from cmaas.keystore.errors import MessageConflict, MessageNotFound, NonceUsed, QuotaExhausted
from cmaas.keystore.models import (
    CursorState,
    MessageRecord,
    NewMessage,
    OutboxEntry,
    RequestNonce,
    SealedPayload,
    StatusEvent,
    Takeover,
)
from cmaas.lifecycle import MessageStatus, Priority, StatusChange, transition

T = TypeVar("T")

__all__ = ["EventListener", "SqlMessageStore"]

EventListener = Callable[[Sequence[StatusEvent]], None]
"""Called with the events of every commit, in order, after the commit."""

_SELECT_MESSAGE = (
    "SELECT seq, app_id, message_id, recipient, recipient_jid, priority, status, detail,"
    " expires_ms, created_ms, updated_ms FROM messages"
)
_ENTRY_COLUMNS = "seq, app_id, message_id, recipient_jid, priority, expires_ms"
_SELECT_ENTRY = f"SELECT {_ENTRY_COLUMNS} FROM messages"  # noqa: S608
# A message is pending while it may still be written: not finished, something sealed.
_PENDING = (
    " AND status IN ('accepted', 'dispatched') AND (envelope IS NOT NULL OR omemo IS NOT NULL)"
)
_SELECT_EVENT = (
    "SELECT event_id, seq, app_id, message_id, status, at_ms, device, detail FROM status_events"
)


class SqlMessageStore:
    """The outbox and its events; see :class:`~cmaas.keystore.interface.MessageStore`.

    Args:
        submit_slice: See :attr:`submit_slice`.
    """

    def __init__(
        self,
        transactions: Transactions,
        write: Runner,
        clock_ms: Callable[[], int],
        *,
        submit_slice: int | None = None,
    ) -> None:
        self._tx = transactions
        self._write = write
        self._clock_ms = clock_ms
        self._submit_slice = submit_slice
        self._listeners: list[EventListener] = []
        # Status changes wait here for the next transaction.
        self._batch: _ChangeBatch | None = None
        self._batches: set[asyncio.Task[None]] = set()

    def listen(self, listener: EventListener) -> None:
        """Call ``listener`` with the events of each commit from now on."""
        self._listeners.append(listener)

    async def _write_events(
        self, work: Work[list[StatusEvent]], *, urgent: bool = False
    ) -> list[StatusEvent]:
        events = await self._write(work, urgent=urgent)
        if events:
            for listener in self._listeners:
                listener(events)
        return events

    # Submission

    @property
    def submit_slice(self) -> int | None:
        """How many messages a caller should hand to one :meth:`submit`, or ``None``
        for any number.

        Where the writes share a group commit (SQLite), each call is one operation on
        the database's one thread, and an urgent operation waits for the one under
        way: a request of 500 bulk messages stored in one call held an OTP's own
        commit up by 30 to 60 ms on a busy machine. In slices, the OTP waits for one
        slice. On PostgreSQL each call is a transaction with its round trips, and
        the whole request goes in one.
        """
        return self._submit_slice

    async def submit(
        self,
        messages: Sequence[NewMessage],
        *,
        daily_quota: int | None,
        owner: int | None = None,
        nonce: RequestNonce | None = None,
    ) -> list[MessageRecord | MessageConflict | QuotaExhausted]:
        """Store new messages (status ``accepted``) in one transaction, owned by the
        instance of epoch ``owner`` (``None``: by nobody, until an instance takes them
        over), and claim the request's ``nonce`` in it: a request's messages and its
        nonce are committed together, or neither is (``messages`` may be empty).

        A message whose id the app used before comes back as the stored record with
        ``duplicate`` set when the request is the same, else as a
        :class:`MessageConflict`. New messages over the app's daily quota come back as
        :class:`QuotaExhausted`. A message with ``failure`` set is failed at once.

        Returns: one outcome per message, in order; errors are returned, not raised.
        Raises: NonceUsed: ``nonce`` was claimed before; nothing was stored.
        """
        now = self._clock_ms()
        day = now // DAY_MS
        outcomes: list[MessageRecord | MessageConflict | QuotaExhausted] = []

        async def work(db: Db) -> list[StatusEvent]:
            if nonce is not None and not await _claim_nonce(db, nonce):
                raise NonceUsed(f"nonce {nonce.nonce!r} was used before")
            stored = await _messages_by_id(
                db, "*", ((message.app_id, message.message_id) for message in messages)
            )
            used = {
                app_id: await _used_today(db, app_id, day)
                for app_id in dict.fromkeys(message.app_id for message in messages)
            }
            # Each message's outcome is decided in order, as one at a time would: a
            # repeated id is a duplicate of what was stored before or earlier in this
            # request; the rest are inserted together, a few statements for all.
            decided: list[MessageRecord | MessageConflict | QuotaExhausted | NewMessage] = []
            first: dict[tuple[str, str], NewMessage] = {}
            for message in messages:
                key = (message.app_id, message.message_id)
                if key in stored:
                    decided.append(duplicate_outcome(stored[key], message))
                elif key in first:
                    decided.append(message)
                else:
                    refusal = quota_outcome(used[message.app_id], daily_quota)
                    if refusal is not None:
                        decided.append(refusal)
                        continue
                    used[message.app_id] += 1
                    first[key] = message
                    decided.append(message)
            records, events = await _insert_messages(db, list(first.values()), now, owner)
            for outcome in decided:
                if not isinstance(outcome, NewMessage):
                    outcomes.append(outcome)
                    continue
                key = (outcome.app_id, outcome.message_id)
                if first[key] is outcome:
                    outcomes.append(records[key])
                elif first[key].request_sha256 == outcome.request_sha256:
                    outcomes.append(replace(records[key], duplicate=True))
                else:
                    outcomes.append(conflict(outcome))
            await db.many(
                "INSERT INTO daily_usage (app_id, day, count) VALUES (?, ?, ?)"
                " ON CONFLICT (app_id, day) DO UPDATE SET count = excluded.count",
                [(app_id, day, count) for app_id, count in used.items()],
            )
            return events

        urgent = any(message.priority is Priority.HIGH for message in messages)
        await self._write_events(work, urgent=urgent)
        return outcomes

    # Dispatch

    # Instances: each gateway process owns the messages it admitted

    async def register_instance(self, name: str, *, dead_after_ms: int | None = None) -> int:
        """Register a starting gateway process, alive as of now, that others may take for
        dead after ``dead_after_ms`` of silence (``None``: it never heartbeats, as one
        process on a SQLite file).

        Returns: its epoch, above every earlier instance's.
        """

        async def work(db: Db) -> int:
            now = await self._database_ms(db)
            row = await db.one(
                "INSERT INTO gateway_instances (name, started_at, heartbeat_at, dead_after_ms)"
                " VALUES (?, ?, ?, ?) RETURNING epoch",
                (name, now, now, dead_after_ms),
            )
            assert row is not None  # INSERT ... RETURNING gives its row
            return int(row["epoch"])

        return await self._write(work, urgent=True)

    async def heartbeat(self, epoch: int) -> bool:
        """Record that the instance of ``epoch`` is alive.

        Returns: ``False`` when it was fenced (taken for dead): it must stop at once.
        """

        # In a lane of its own: queued behind a flood's writes, a heartbeat could come
        # late enough for the others to take this instance for dead.
        async with self._tx.lane() as db:
            now = await self._database_ms(db)
            changed = await db.run(
                "UPDATE gateway_instances SET heartbeat_at = ?"
                " WHERE epoch = ? AND fenced_at IS NULL",
                (now, epoch),
            )
        return changed == 1

    async def release(self, epoch: int) -> int:
        """Give up the pending messages of the instance of ``epoch`` (its link to the IM
        server is down), so that the next takeover of any linked instance moves them.

        Returns: how many messages were released.
        """

        async def work(db: Db) -> int:
            return await db.run(
                "UPDATE messages SET owner = NULL"
                " WHERE owner = ? AND status IN ('accepted', 'dispatched')",
                (epoch,),
            )

        return await self._write(work, urgent=True)

    async def take_over(
        self, epoch: int, resend_window_ms: int, *, dead_after_ms: int | None
    ) -> Takeover:
        """Fence the instances silent for ``dead_after_ms``, or for their own declared
        dead-after where that is longer (``None``: every other instance still unfenced,
        as a restart on SQLite may, where one process holds the file), and move to
        ``epoch``, in the same transaction, the pending messages of every fenced instance
        and of nobody.

        Two instances racing for one dead instance: one fences it and gets its
        messages, the other neither. Messages a fenced instance admitted after it was
        fenced are moved by the next call of any instance.
        """

        async def work(db: Db) -> Takeover:
            now = await self._database_ms(db)
            if dead_after_ms is None:
                fenced = await db.all(
                    "UPDATE gateway_instances SET fenced_at = ?"
                    " WHERE fenced_at IS NULL AND epoch != ? RETURNING epoch",
                    (now, epoch),
                )
            else:
                # An instance set to heartbeat less often than this one expects is
                # not fenced between two of its heartbeats.
                fenced = await db.all(
                    "UPDATE gateway_instances SET fenced_at = ?"
                    " WHERE fenced_at IS NULL AND epoch != ? AND heartbeat_at < ? -"
                    " CASE WHEN dead_after_ms > ? THEN dead_after_ms ELSE ? END"
                    " RETURNING epoch",
                    (now, epoch, now, dead_after_ms, dead_after_ms),
                )
            orphans = (
                " WHERE status IN ('accepted', 'dispatched') AND (owner IS NULL OR owner IN"
                " (SELECT epoch FROM gateway_instances WHERE fenced_at IS NOT NULL))"
            )
            rows = await db.all(
                "SELECT seq, app_id, message_id, recipient_jid, priority, expires_ms, status,"  # noqa: S608
                " dispatched_ms, owner FROM messages" + orphans + " ORDER BY seq"
            )
            if rows:
                await db.run("UPDATE messages SET owner = ?" + orphans, (epoch,))  # noqa: S608
            last = await db.one("SELECT max(fenced_at) AS at FROM gateway_instances")
            return _takeover(
                sorted(int(row["epoch"]) for row in fenced),
                rows,
                resend_window_ms,
                None if last is None or last["at"] is None else int(last["at"]),
            )

        return await self._write(work, urgent=True)

    async def _database_ms(self, db: Db) -> int:
        return await database_ms(db, self._tx, self._clock_ms)

    async def pending_entry(self, app_id: str, message_id: str) -> OutboxEntry | None:
        """The outbox entry of a message still pending, to write it again."""
        async with self._tx.read() as db:
            row = await db.one(
                _SELECT_ENTRY + " WHERE app_id = ? AND message_id = ?" + _PENDING,
                (app_id, message_id),
            )
        return None if row is None else outbox_entry(row)

    async def pending_entries(
        self, seqs: Sequence[int], *, owner: int | None = None
    ) -> list[OutboxEntry]:
        """The outbox entries of those messages that are still pending (and, with
        ``owner``, still owned by that instance), in the order of ``seqs``."""
        rows = await self._pending_rows(_ENTRY_COLUMNS, seqs, owner)
        by_seq = {row["seq"]: outbox_entry(row) for row in rows}
        return [by_seq[seq] for seq in seqs if seq in by_seq]

    async def sealed(
        self, seqs: Sequence[int], *, owner: int | None = None
    ) -> dict[int, SealedPayload]:
        """What is sealed of those messages that are still pending (and, with ``owner``,
        still owned by that instance: one fenced sends nothing more), with their outbox
        entries."""
        rows = await self._pending_rows(_ENTRY_COLUMNS + ", envelope, omemo", seqs, owner)
        return {
            row["seq"]: SealedPayload(outbox_entry(row), row["envelope"], row["omemo"])
            for row in rows
        }

    async def _pending_rows(
        self, columns: str, seqs: Sequence[int], owner: int | None
    ) -> list[Row]:
        owned, by_owner = _owned_by(owner)
        rows: list[Row] = []
        async with self._tx.read() as db:
            for start in range(0, len(seqs), 500):
                chunk = list(seqs[start : start + 500])
                rows.extend(
                    await db.all(
                        f"SELECT {columns} FROM messages WHERE seq IN ({_marks(len(chunk))})"  # noqa: S608
                        + _PENDING
                        + owned,
                        [*chunk, *by_owner],
                    )
                )
        return rows

    async def mark_dispatched(
        self, seqs: Sequence[int], at_ms: int, *, owner: int | None = None, urgent: bool = False
    ) -> list[StatusEvent]:
        """Record that these messages were written to the IM server; with ``owner``,
        only those that instance still owns (a fenced one changes nothing). ``urgent``
        (an OTP among them): ahead of the queued receipt updates."""
        owned, by_owner = _owned_by(owner)

        async def work(db: Db) -> list[StatusEvent]:
            moved: dict[int, StatusChange] = {}
            for chunk in _chunks(seqs):
                rows = await db.all(
                    "UPDATE messages SET status = 'dispatched', dispatched_ms = ?,"  # noqa: S608
                    f" updated_ms = ? WHERE seq IN ({_marks(len(chunk))}) AND status = 'accepted'"
                    + owned
                    + " RETURNING seq, app_id, message_id",
                    (at_ms, at_ms, *chunk, *by_owner),
                )
                for row in rows:
                    moved[row["seq"]] = StatusChange(
                        row["app_id"], row["message_id"], MessageStatus.DISPATCHED, at_ms
                    )
            # The events in the order of ``seqs``, as one statement each would add them.
            added = [(seq, seq, moved.pop(seq)) for seq in seqs if seq in moved]
            recorded = await _add_events(db, added)
            return [recorded[seq] for seq, _, _ in added]

        return await self._write_events(work, urgent=urgent)

    async def record(
        self, changes: Sequence[StatusChange], *, urgent: bool = False
    ) -> list[StatusEvent]:
        """Record what happened to messages, keeping only what moves them forward;
        ``urgent`` ones ahead of the other writes (a high-priority message's receipt).

        A change for a device is recorded once per device and status; the message's
        own status is the highest reached. ``failed`` and ``expired`` end only a
        pending message. A change reported by anyone but the message's recipient, or
        for an unknown message, is ignored.

        Returns: the events recorded.
        """

        if not changes:
            return []
        if urgent:
            # Alone, in the next transaction: not in a batch that waits for the one
            # committing now.
            async def work(db: Db) -> list[StatusEvent]:
                return [event for events in await _apply_changes(db, changes) for event in events]

            return await self._write_events(work, urgent=True)
        batch, start = self._join_batch(changes)
        per_change = await asyncio.shield(batch.outcome)
        return [event for events in per_change[start : start + len(changes)] for event in events]

    def _join_batch(self, changes: Sequence[StatusChange]) -> tuple[_ChangeBatch, int]:
        """The batch that ``changes`` join, and where in it they start. A batch takes
        changes until its transaction begins, so the receipts that arrive while one
        commits are recorded together in the next, with a few statements in all."""
        batch = self._batch
        start = None if batch is None else batch.join(changes)
        if batch is None or start is None:
            batch = self._batch = _ChangeBatch(asyncio.get_running_loop().create_future())
            start = batch.join(changes)
            assert start == 0  # a new batch takes any number
            task = asyncio.create_task(self._record_batch(batch), name="cmaas status changes")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        return batch, start

    async def _record_batch(self, batch: _ChangeBatch) -> None:
        async def work(db: Db) -> list[list[StatusEvent]]:
            return await _apply_changes(db, batch.close())

        try:
            per_change = await self._write(work)
        except asyncio.CancelledError:
            batch.outcome.cancel()
            raise
        except Exception as error:
            batch.outcome.set_exception(error)
            # Seen by the callers; retrieved here too, in case every caller is gone.
            batch.outcome.exception()
            return
        events = [event for events in per_change for event in events]
        if events:
            for listener in self._listeners:
                listener(events)
        batch.outcome.set_result(per_change)

    async def expire_due(self, now_ms: int, limit: int = 1000) -> list[StatusEvent]:
        """Expire pending messages whose ``expires_ms`` has passed."""
        detail = "not delivered before it expired"

        async def work(db: Db) -> list[StatusEvent]:
            rows = await db.all(
                "SELECT seq, app_id, message_id FROM messages"
                " WHERE status IN ('accepted', 'dispatched') AND expires_ms <= ?"
                " ORDER BY seq LIMIT ?",
                (now_ms, limit),
            )
            events = []
            for row in rows:
                await _set_status(db, row["seq"], MessageStatus.EXPIRED, detail, now_ms)
                events.append(
                    await _add_event(
                        db,
                        row["seq"],
                        row["app_id"],
                        row["message_id"],
                        MessageStatus.EXPIRED,
                        now_ms,
                        "",
                        detail,
                    )
                )
            return events

        return await self._write_events(work)

    async def purge_finished(self, before_ms: int, limit: int = 5000) -> int:
        """Delete finished messages (and their events) last changed before ``before_ms``.

        Returns: how many messages were deleted.
        """

        async def work(db: Db) -> int:
            return await db.run(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages"
                " WHERE status NOT IN ('accepted', 'dispatched') AND updated_ms < ? LIMIT ?)",
                (before_ms, limit),
            )

        return await self._write(work)

    async def purge_instances(self, before_ms: int) -> int:
        """Forget instances fenced before ``before_ms`` that own no pending message any
        more; the one fenced last stays, since its time tells the others whether any
        instance died since they last looked.

        Returns: how many were forgotten.
        """

        async def work(db: Db) -> int:
            return await db.run(
                "DELETE FROM gateway_instances WHERE fenced_at < ?"
                " AND fenced_at < (SELECT max(fenced_at) FROM gateway_instances)"
                " AND epoch NOT IN (SELECT owner FROM messages"
                "   WHERE status IN ('accepted', 'dispatched') AND owner IS NOT NULL)"
                " AND epoch NOT IN (SELECT epoch FROM gateway_leader)",
                (before_ms,),
            )

        return await self._write(work)

    # Reading

    async def get(self, app_id: str, message_id: str) -> tuple[MessageRecord, list[StatusEvent]]:
        """A message and its history, oldest event first.

        Raises: MessageNotFound.
        """
        async with self._tx.read() as db:
            row = await db.one(
                _SELECT_MESSAGE + " WHERE app_id = ? AND message_id = ?", (app_id, message_id)
            )
            if row is None:
                raise MessageNotFound(f"no message {message_id!r}")
            events = await db.all(_SELECT_EVENT + " WHERE seq = ? ORDER BY event_id", (row["seq"],))
        return message_record(row), [event_from_row(event) for event in events]

    async def events_after(self, app_id: str, after: int, limit: int) -> list[StatusEvent]:
        """The app's events with an id above ``after``, oldest first."""
        async with self._tx.read() as db:
            rows = await db.all(
                _SELECT_EVENT + " WHERE app_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
                (app_id, after, limit),
            )
        return [event_from_row(row) for row in rows]

    async def last_event_id(self) -> int:
        async with self._tx.read() as db:
            row = await db.one("SELECT coalesce(max(event_id), 0) AS id FROM status_events")
        return int(row["id"]) if row else 0

    async def depth(self) -> dict[Priority, int]:
        """How many messages wait to be dispatched, per priority."""
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT priority, count(*) AS n FROM messages WHERE status = 'accepted'"
                " GROUP BY priority"
            )
        counts = {Priority.from_rank(row["priority"]): int(row["n"]) for row in rows}
        return {priority: counts.get(priority, 0) for priority in Priority}

    # Consumers' cursors

    async def cursors(self, consumer: str) -> list[CursorState]:
        """Every app's cursor for ``consumer``; an app never served starts at 0."""
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT a.app_id, coalesce(c.event_id, 0) AS event_id,"
                " coalesce(c.failures, 0) AS failures, coalesce(c.last_error, '') AS last_error"
                " FROM apps a LEFT JOIN event_cursors c"
                " ON c.app_id = a.app_id AND c.consumer = ? ORDER BY a.app_id",
                (consumer,),
            )
        return [
            CursorState(
                row["app_id"], int(row["event_id"]), int(row["failures"]), row["last_error"]
            )
            for row in rows
        ]

    async def save_cursor(
        self, consumer: str, state: CursorState, *, leader: int | None = None
    ) -> bool:
        """Save a consumer's cursor; with ``leader``, only while that epoch leads.

        Returns: ``False`` when another instance leads now: the caller was deposed.
        """
        leads = (
            "" if leader is None else " AND EXISTS (SELECT 1 FROM gateway_leader WHERE epoch = ?)"
        )

        async def work(db: Db) -> bool:
            changed = await db.run(
                "INSERT INTO event_cursors (consumer, app_id, event_id, failures, last_error)"
                " SELECT ?, ?, ?, ?, ? WHERE true" + leads + " ON CONFLICT (consumer, app_id)"
                " DO UPDATE SET event_id = excluded.event_id, failures = excluded.failures,"
                " last_error = excluded.last_error",
                (
                    consumer,
                    state.app_id,
                    state.event_id,
                    state.failures,
                    state.last_error,
                    *(() if leader is None else (leader,)),
                ),
            )
            return changed == 1

        return await self._write(work)

    async def take_lead(self, epoch: int) -> bool:
        """Lead, if no live instance leads: the leader recorded is this one, or none, or
        one fenced since (the leadership lives and dies with its instance's heartbeat,
        so a leader whose host vanished is replaced once it is taken for dead). Cursor
        writes of any earlier leader are refused from then on.

        Returns: whether the instance of ``epoch`` leads now.
        """

        async def work(db: Db) -> bool:
            now = await self._database_ms(db)
            changed = await db.run(
                "INSERT INTO gateway_leader (id, epoch, since) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, since = excluded.since"
                " WHERE gateway_leader.epoch != excluded.epoch AND NOT EXISTS ("
                "   SELECT 1 FROM gateway_instances"
                "   WHERE epoch = gateway_leader.epoch AND fenced_at IS NULL)",
                (epoch, now),
            )
            return changed == 1 or await self._leads(db, epoch)

        return await self._write(work, urgent=True)

    async def leads(self, epoch: int) -> bool:
        """Whether the instance of ``epoch`` still leads (nobody fenced it)."""
        async with self._tx.lane() as db:
            return await self._leads(db, epoch)

    async def resign(self, epoch: int) -> None:
        """Give the leadership up, if the instance of ``epoch`` holds it (a clean stop),
        so that another instance takes it at its next heartbeat."""

        async def work(db: Db) -> None:
            await db.run("DELETE FROM gateway_leader WHERE epoch = ?", (epoch,))

        await self._write(work, urgent=True)

    @staticmethod
    async def _leads(db: Db, epoch: int) -> bool:
        row = await db.one(
            "SELECT 1 AS leads FROM gateway_leader JOIN gateway_instances USING (epoch)"
            " WHERE epoch = ? AND fenced_at IS NULL",
            (epoch,),
        )
        return row is not None

    # Request nonces

    async def claim_nonce(self, nonce: RequestNonce) -> bool:
        """Record a request nonce; ``False`` if it was seen and has not expired."""

        async def work(db: Db) -> bool:
            return await _claim_nonce(db, nonce)

        # Every request waits for its nonce before anything else: one row, ahead of the
        # receipt updates.
        return await self._write(work, urgent=True)

    async def nonce_seen(self, nonce: RequestNonce) -> bool:
        """Whether the nonce is claimed and unexpired, as of now: a read, which a claim
        in a later transaction must still confirm."""
        async with self._tx.read() as db:
            row = await db.one(
                "SELECT 1 FROM request_nonces WHERE client_id = ? AND nonce = ? AND expires_at > ?",
                (nonce.client_id, nonce.nonce, nonce.now),
            )
        return row is not None

    async def purge_nonces(self, now: int) -> int:
        async def work(db: Db) -> int:
            return await db.run("DELETE FROM request_nonces WHERE expires_at <= ?", (now,))

        return await self._write(work)


async def _claim_nonce(db: Db, nonce: RequestNonce) -> bool:
    # The key (client_id, nonce) is the table's primary key: two claims, from any two
    # instances, cannot both insert; the second waits for the first's commit.
    changed = await db.run(
        "INSERT INTO request_nonces (client_id, nonce, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (client_id, nonce) DO UPDATE SET expires_at = excluded.expires_at"
        " WHERE request_nonces.expires_at <= ?",
        (nonce.client_id, nonce.nonce, nonce.expires_at, nonce.now),
    )
    return changed == 1


def _owned_by(owner: int | None) -> tuple[str, tuple[int, ...]]:
    """The condition (and its parameter) that a message is owned by ``owner``, if any."""
    return ("", ()) if owner is None else (" AND owner = ?", (owner,))


def _takeover(
    fenced: list[int], rows: Sequence[Row], resend_window_ms: int, last_fenced_ms: int | None
) -> Takeover:
    """Sort messages taken over into those to dispatch and those to write again: the
    dispatched ones within the window of their previous owner's last dispatch."""
    last_dispatch: dict[object, int] = {}
    for row in rows:
        if row["status"] == "dispatched" and row["dispatched_ms"] is not None:
            owner = row["owner"]
            last_dispatch[owner] = max(last_dispatch.get(owner, 0), int(row["dispatched_ms"]))
    accepted = [outbox_entry(row) for row in rows if row["status"] == "accepted"]
    resend = [
        outbox_entry(row)
        for row in rows
        if row["status"] == "dispatched"
        and row["dispatched_ms"] is not None
        and int(row["dispatched_ms"]) >= last_dispatch[row["owner"]] - resend_window_ms
    ]
    return Takeover(fenced, accepted, resend, last_fenced_ms)


async def _add_event(
    db: Db,
    seq: int,
    app_id: str,
    message_id: str,
    status: MessageStatus,
    at_ms: int,
    device: str = "",
    detail: str = "",
) -> StatusEvent:
    row = await db.one(
        "INSERT INTO status_events (seq, app_id, message_id, status, device, detail, at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING event_id",
        (seq, app_id, message_id, status.value, device, detail, at_ms),
    )
    assert row is not None  # INSERT ... RETURNING gives its row
    return StatusEvent(int(row["event_id"]), seq, app_id, message_id, status, at_ms, device, detail)


async def _messages_by_id(
    db: Db, columns: str, ids: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Row]:
    """The stored messages among ``ids`` (app id, message id), with ``columns`` (which
    must include ``message_id``), by id; a few statements for any number."""
    wanted: dict[str, set[str]] = {}
    for app_id, message_id in ids:
        wanted.setdefault(app_id, set()).add(message_id)
    found: dict[tuple[str, str], Row] = {}
    for app_id, message_ids in wanted.items():
        for chunk in _chunks(sorted(message_ids)):
            rows = await db.all(
                f"SELECT {columns} FROM messages"  # noqa: S608
                f" WHERE app_id = ? AND message_id IN ({_marks(len(chunk))})",
                (app_id, *chunk),
            )
            found.update(((app_id, row["message_id"]), row) for row in rows)
    return found


async def _used_today(db: Db, app_id: str, day: int) -> int:
    found = await db.one(
        "SELECT count FROM daily_usage WHERE app_id = ? AND day = ?", (app_id, day)
    )
    return int(found["count"]) if found else 0


_INSERT_MESSAGES = (
    "INSERT INTO messages (app_id, message_id, recipient, recipient_jid, priority, status,"
    " request_sha256, envelope, omemo, expires_ms, created_ms, updated_ms, sealed_to, owner)"
    " VALUES "
)


async def _insert_messages(
    db: Db, messages: Sequence[NewMessage], now: int, owner: int | None
) -> tuple[dict[tuple[str, str], MessageRecord], list[StatusEvent]]:
    """Insert new messages (ids not used before, each once), ``accepted``, and fail at
    once those with a ``failure``, several rows a statement.

    Returns: each message's record by (app id, message id), and the events, in order.
    """
    seqs: dict[tuple[str, str], int] = {}
    for chunk in _chunks(messages):
        rows = await db.all(
            _INSERT_MESSAGES
            + ", ".join(["(?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            + " RETURNING seq, app_id, message_id",
            [
                value
                for message in chunk
                for value in (
                    message.app_id,
                    message.message_id,
                    message.recipient,
                    message.recipient_jid,
                    message.priority.rank,
                    message.request_sha256,
                    message.envelope,
                    message.omemo,
                    message.expires_ms,
                    now,
                    now,
                    sealed_to_text(message),
                    owner,
                )
            ],
        )
        # Rows come back in no promised order: matched by the id, unique among them.
        seqs.update(((row["app_id"], row["message_id"]), int(row["seq"])) for row in rows)
    # Every accepted event first, then the failures: the order one at a time gave
    # each message, in a few statements.
    changes = [
        StatusChange(message.app_id, message.message_id, MessageStatus.ACCEPTED, now)
        for message in messages
    ] + [
        StatusChange(
            message.app_id, message.message_id, MessageStatus.FAILED, now, detail=message.failure
        )
        for message in messages
        if message.failure is not None
    ]
    numbered = [
        (position, seqs[(change.app_id, change.message_id)], change)
        for position, change in enumerate(changes)
    ]
    failed = [
        (change.status.value, change.detail, now, False, False, seq)
        for _, seq, change in numbered
        if change.status is MessageStatus.FAILED
    ]
    if failed:
        await db.many(_SET_STATUS, failed)
    recorded = await _add_events(db, numbered)
    records = {
        (message.app_id, message.message_id): MessageRecord(
            seqs[(message.app_id, message.message_id)],
            message.app_id,
            message.message_id,
            message.recipient,
            message.recipient_jid,
            message.priority,
            MessageStatus.ACCEPTED if message.failure is None else MessageStatus.FAILED,
            message.failure or "",
            message.expires_ms,
            now,
            now,
        )
        for message in messages
    }
    return records, [recorded[position] for position in sorted(recorded)]


# What is sealed is kept only while a resend may need it: data minimisation.
_SET_STATUS = (
    "UPDATE messages SET status = ?, detail = ?, updated_ms = ?,"
    " envelope = CASE WHEN ? THEN envelope END, omemo = CASE WHEN ? THEN omemo END"
    " WHERE seq = ?"
)


async def _set_status(db: Db, seq: int, status: MessageStatus, detail: str, at_ms: int) -> None:
    keep = status.pending
    await db.run(_SET_STATUS, (status.value, detail, at_ms, keep, keep, seq))


_CHANGES_PER_BATCH = 1000
# Rows per statement: the parameters stay far below SQLite's and PostgreSQL's limits.
_ROWS_PER_STATEMENT = 200


@dataclass(slots=True)
class _ChangeBatch:
    """Status changes recorded in one transaction, and each one's events.

    Changes join on the event loop's thread and the batch is closed where its
    transaction runs (SQLite: the writer's thread), hence the lock.
    """

    outcome: asyncio.Future[list[list[StatusEvent]]]
    changes: list[StatusChange] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def join(self, changes: Sequence[StatusChange]) -> int | None:
        """Add ``changes``; returns where they start, or ``None`` when the batch is
        closed or full (an empty one takes any number)."""
        with self.lock:
            if self.closed or (self.changes and len(self.changes) >= _CHANGES_PER_BATCH):
                return None
            start = len(self.changes)
            self.changes.extend(changes)
            return start

    def close(self) -> tuple[StatusChange, ...]:
        """Take no more changes; returns those taken."""
        with self.lock:
            self.closed = True
            return tuple(self.changes)


@dataclass(slots=True)
class _Tracked:
    """A message as the changes of one batch see it, their own effects included."""

    seq: int
    status: MessageStatus
    recipient_jid: str | None
    sealed_to: frozenset[str] | None
    reported: set[tuple[str, str]] = field(default_factory=set)
    """(device, status) of the events recorded for it."""


async def _apply_changes(db: Db, changes: Sequence[StatusChange]) -> list[list[StatusEvent]]:
    """Apply ``changes`` in order, as one at a time would, with a few statements for
    all of them: the messages and their devices' events read in one query each, the
    status changes run as one statement, the events inserted in one.

    Returns: each change's events (none or one).
    """
    tracked = await _tracked_messages(db, changes)
    moves: list[tuple[object, ...]] = []
    added: list[tuple[int, int, StatusChange]] = []
    for position, change in enumerate(changes):
        message = tracked.get((change.app_id, change.message_id))
        if message is None:
            continue
        step = transition(
            message.status,
            message.recipient_jid,
            message.sealed_to,
            change,
            _reported_in(message.reported),
        )
        if step is None:
            continue
        if step.moves:
            message.status = step.status
            keep = step.status.pending
            moves.append((step.status.value, change.detail, change.at_ms, keep, keep, message.seq))
        message.reported.add((change.device, change.status.value))
        added.append((position, message.seq, change))
    if moves:
        await db.many(_SET_STATUS, moves)
    recorded = await _add_events(db, added)
    return [
        [recorded[position]] if position in recorded else [] for position in range(len(changes))
    ]


def _reported_in(seen: set[tuple[str, str]]) -> Callable[[str, MessageStatus], bool]:
    return lambda device, status: (device, status.value) in seen


async def _tracked_messages(
    db: Db, changes: Sequence[StatusChange]
) -> dict[tuple[str, str], _Tracked]:
    stored = await _messages_by_id(
        db,
        "seq, message_id, status, recipient_jid, sealed_to",
        ((change.app_id, change.message_id) for change in changes),
    )
    tracked = {
        key: _Tracked(
            row["seq"],
            MessageStatus(row["status"]),
            row["recipient_jid"],
            sealed_to_set(row["sealed_to"]),
        )
        for key, row in stored.items()
    }
    # The rule asks whether the reporting device reported a status before: the
    # devices' events are read up front, for the messages a device reports on.
    by_seq = {message.seq: message for message in tracked.values()}
    reporting = sorted(
        {
            tracked[key].seq
            for change in changes
            if change.device and (key := (change.app_id, change.message_id)) in tracked
        }
    )
    for seqs in _chunks(reporting):
        rows = await db.all(
            f"SELECT seq, device, status FROM status_events WHERE seq IN ({_marks(len(seqs))})"  # noqa: S608
            " AND device <> ''",
            seqs,
        )
        for row in rows:
            by_seq[row["seq"]].reported.add((row["device"], row["status"]))
    return tracked


async def _add_events(
    db: Db, added: Sequence[tuple[int, int, StatusChange]]
) -> dict[int, StatusEvent]:
    """Insert one event per (position, seq, change), several rows a statement.

    Returns: each change's event, by its position.
    """
    recorded: dict[int, StatusEvent] = {}
    for chunk in _chunks(added):
        alike = len({(seq, change.status.value, change.device) for _, seq, change in chunk})
        # Events alike in all but their detail (none that the rules let through) could
        # not be told apart in the answer: one statement each.
        for rows in [chunk] if alike == len(chunk) else [[row] for row in chunk]:
            recorded.update(await _insert_events(db, rows))
    return recorded


async def _insert_events(
    db: Db, added: Sequence[tuple[int, int, StatusChange]]
) -> dict[int, StatusEvent]:
    rows = await db.all(
        "INSERT INTO status_events (seq, app_id, message_id, status, device, detail, at_ms)"  # noqa: S608
        " VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(added))
        + " RETURNING event_id, seq, status, device",
        [
            value
            for _, seq, change in added
            for value in (
                seq,
                change.app_id,
                change.message_id,
                change.status.value,
                change.device,
                change.detail,
                change.at_ms,
            )
        ],
    )
    # Rows come back in no promised order: matched by what makes one unique in a batch
    # (a device reports a status once; the message's own status only moves forward).
    keys = {
        (seq, change.status.value, change.device): (position, change)
        for position, seq, change in added
    }
    recorded: dict[int, StatusEvent] = {}
    for row in rows:
        position, change = keys[(row["seq"], row["status"], row["device"])]
        recorded[position] = StatusEvent(
            int(row["event_id"]),
            row["seq"],
            change.app_id,
            change.message_id,
            change.status,
            change.at_ms,
            change.device,
            change.detail,
        )
    return recorded


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [
        items[at : at + _ROWS_PER_STATEMENT] for at in range(0, len(items), _ROWS_PER_STATEMENT)
    ]


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)
