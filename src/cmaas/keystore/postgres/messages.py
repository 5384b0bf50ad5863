"""The durable outbox on PostgreSQL: the SQLite message store's semantics
(:mod:`cmaas.keystore.messages` documents each method), its rules shared.

Each write is one transaction of its own; there is no group commit here (see
:class:`~cmaas.keystore.postgres._connection.Connections`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cmaas.keystore._rows import (
    DAY_MS,
    duplicate_outcome,
    event_from_row,
    message_record,
    outbox_entry,
    quota_outcome,
    sealed_to_set,
    sealed_to_text,
)
from cmaas.keystore.errors import MessageConflict, MessageNotFound, QuotaExhausted
from cmaas.keystore.messages import EventListener
from cmaas.keystore.models import (
    CursorState,
    MessageRecord,
    NewMessage,
    OutboxEntry,
    SealedPayload,
    StatusEvent,
)
from cmaas.keystore.postgres._connection import Connections, Db
from cmaas.lifecycle import MessageStatus, Priority, StatusChange, transition

__all__ = ["PostgresMessageStore"]

_SELECT_MESSAGE = (
    "SELECT seq, app_id, message_id, recipient, recipient_jid, priority, status, detail,"
    " expires_ms, created_ms, updated_ms FROM messages"
)
_SELECT_ENTRY = "SELECT seq, app_id, message_id, recipient_jid, priority, expires_ms FROM messages"
_SELECT_EVENT = (
    "SELECT event_id, app_id, message_id, status, at_ms, device, detail FROM status_events"
)


class PostgresMessageStore:
    """The outbox and its events; see :class:`~cmaas.keystore.interface.MessageStore`."""

    def __init__(self, connections: Connections, clock_ms: Callable[[], int]) -> None:
        self._db = connections
        self._clock_ms = clock_ms
        self._listeners: list[EventListener] = []

    def listen(self, listener: EventListener) -> None:
        """Call ``listener`` with the events of each commit from now on."""
        self._listeners.append(listener)

    def _announce(self, events: list[StatusEvent]) -> list[StatusEvent]:
        if events:
            for listener in self._listeners:
                listener(events)
        return events

    # Submission

    async def submit(
        self, messages: Sequence[NewMessage], *, daily_quota: int | None
    ) -> list[MessageRecord | MessageConflict | QuotaExhausted]:
        """Returns: one outcome per message, in order; errors are returned, not raised."""
        now = self._clock_ms()
        day = now // DAY_MS
        outcomes: list[MessageRecord | MessageConflict | QuotaExhausted] = []
        events: list[StatusEvent] = []
        async with self._db.write() as db:
            used: dict[str, int] = {}
            for message in messages:
                cursor = await db.execute(
                    "SELECT * FROM messages WHERE app_id = %s AND message_id = %s",
                    (message.app_id, message.message_id),
                )
                row = await cursor.fetchone()
                if row is not None:
                    outcomes.append(duplicate_outcome(row, message))
                    continue
                if message.app_id not in used:
                    cursor = await db.execute(
                        "SELECT count FROM daily_usage WHERE app_id = %s AND day = %s",
                        (message.app_id, day),
                    )
                    found = await cursor.fetchone()
                    used[message.app_id] = int(found["count"]) if found else 0
                refusal = quota_outcome(used[message.app_id], daily_quota)
                if refusal is not None:
                    outcomes.append(refusal)
                    continue
                used[message.app_id] += 1
                cursor = await db.execute(
                    "INSERT INTO messages (app_id, message_id, recipient, recipient_jid,"
                    " priority, status, request_sha256, envelope, omemo, expires_ms, created_ms,"
                    " updated_ms, sealed_to)"
                    " VALUES (%s, %s, %s, %s, %s, 'accepted', %s, %s, %s, %s, %s, %s, %s)"
                    " RETURNING seq",
                    (
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
                    ),
                )
                inserted = await cursor.fetchone()
                assert inserted is not None  # INSERT ... RETURNING gives its row
                seq = int(inserted["seq"])
                status, detail = MessageStatus.ACCEPTED, ""
                events.append(
                    await _add_event(db, seq, message.app_id, message.message_id, status, now)
                )
                if message.failure is not None:
                    status, detail = MessageStatus.FAILED, message.failure
                    await _set_status(db, seq, status, detail, now)
                    events.append(
                        await _add_event(
                            db, seq, message.app_id, message.message_id, status, now, "", detail
                        )
                    )
                outcomes.append(
                    MessageRecord(
                        seq,
                        message.app_id,
                        message.message_id,
                        message.recipient,
                        message.recipient_jid,
                        message.priority,
                        status,
                        detail,
                        message.expires_ms,
                        now,
                        now,
                    )
                )
            for app_id, count in used.items():
                await db.execute(
                    "INSERT INTO daily_usage (app_id, day, count) VALUES (%s, %s, %s)"
                    " ON CONFLICT (app_id, day) DO UPDATE SET count = excluded.count",
                    (app_id, day, count),
                )
        self._announce(events)
        return outcomes

    # Dispatch

    async def pending(self, resend_window_ms: int) -> tuple[list[OutboxEntry], list[OutboxEntry]]:
        """Returns: (accepted, to resend), each oldest first."""
        async with self._db.read() as db:
            cursor = await db.execute(_SELECT_ENTRY + " WHERE status = 'accepted' ORDER BY seq")
            accepted = [outbox_entry(row) for row in await cursor.fetchall()]
            cursor = await db.execute(
                _SELECT_ENTRY + " WHERE status = 'dispatched' AND dispatched_ms >="  # noqa: S608
                " (SELECT max(dispatched_ms) FROM messages WHERE status = 'dispatched') - %s"
                " ORDER BY seq",
                (resend_window_ms,),
            )
            resend = [outbox_entry(row) for row in await cursor.fetchall()]
        return accepted, resend

    async def pending_entry(self, app_id: str, message_id: str) -> OutboxEntry | None:
        """The outbox entry of a message still pending, to write it again."""
        async with self._db.read() as db:
            cursor = await db.execute(
                _SELECT_ENTRY + " WHERE app_id = %s AND message_id = %s"
                " AND status IN ('accepted', 'dispatched')"
                " AND (envelope IS NOT NULL OR omemo IS NOT NULL)",
                (app_id, message_id),
            )
            row = await cursor.fetchone()
        return None if row is None else outbox_entry(row)

    async def sealed(self, seqs: Sequence[int]) -> dict[int, SealedPayload]:
        """What is sealed of those messages that are still pending."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT seq, envelope, omemo FROM messages WHERE seq = ANY(%s)"
                " AND status IN ('accepted', 'dispatched')"
                " AND (envelope IS NOT NULL OR omemo IS NOT NULL)",
                (list(seqs),),
            )
            return {
                row["seq"]: SealedPayload(row["envelope"], row["omemo"])
                for row in await cursor.fetchall()
            }

    async def mark_dispatched(self, seqs: Sequence[int], at_ms: int) -> list[StatusEvent]:
        """Record that these messages were written to the IM server."""
        events: list[StatusEvent] = []
        async with self._db.write() as db:
            for seq in seqs:
                cursor = await db.execute(
                    "UPDATE messages SET status = 'dispatched', dispatched_ms = %s,"
                    " updated_ms = %s WHERE seq = %s AND status = 'accepted'"
                    " RETURNING app_id, message_id",
                    (at_ms, at_ms, seq),
                )
                row = await cursor.fetchone()
                if row is not None:
                    events.append(
                        await _add_event(
                            db,
                            seq,
                            row["app_id"],
                            row["message_id"],
                            MessageStatus.DISPATCHED,
                            at_ms,
                        )
                    )
        return self._announce(events)

    async def record(self, changes: Sequence[StatusChange]) -> list[StatusEvent]:
        """Record what happened to messages, keeping only what moves them forward."""
        events: list[StatusEvent] = []
        async with self._db.write() as db:
            for change in changes:
                events.extend(await _apply_change(db, change))
        return self._announce(events)

    async def expire_due(self, now_ms: int, limit: int = 1000) -> list[StatusEvent]:
        """Expire pending messages whose ``expires_ms`` has passed."""
        events: list[StatusEvent] = []
        detail = "not delivered before it expired"
        async with self._db.write() as db:
            cursor = await db.execute(
                "SELECT seq, app_id, message_id FROM messages"
                " WHERE status IN ('accepted', 'dispatched') AND expires_ms <= %s"
                " ORDER BY seq LIMIT %s",
                (now_ms, limit),
            )
            for row in await cursor.fetchall():
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
        return self._announce(events)

    async def purge_finished(self, before_ms: int, limit: int = 5000) -> int:
        """Returns: how many finished messages (with their events) were deleted."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages"
                " WHERE status NOT IN ('accepted', 'dispatched') AND updated_ms < %s LIMIT %s)",
                (before_ms, limit),
            )
            return cursor.rowcount

    # Reading

    async def get(self, app_id: str, message_id: str) -> tuple[MessageRecord, list[StatusEvent]]:
        """Raises: MessageNotFound."""
        async with self._db.read() as db:
            cursor = await db.execute(
                _SELECT_MESSAGE + " WHERE app_id = %s AND message_id = %s", (app_id, message_id)
            )
            row = await cursor.fetchone()
            if row is None:
                raise MessageNotFound(f"no message {message_id!r}")
            cursor = await db.execute(
                _SELECT_EVENT + " WHERE seq = %s ORDER BY event_id", (row["seq"],)
            )
            events = [event_from_row(event) for event in await cursor.fetchall()]
        return message_record(row), events

    async def events_after(self, app_id: str, after: int, limit: int) -> list[StatusEvent]:
        """The app's events with an id above ``after``, oldest first."""
        async with self._db.read() as db:
            cursor = await db.execute(
                _SELECT_EVENT + " WHERE app_id = %s AND event_id > %s ORDER BY event_id LIMIT %s",
                (app_id, after, limit),
            )
            return [event_from_row(row) for row in await cursor.fetchall()]

    async def last_event_id(self) -> int:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT coalesce(max(event_id), 0) AS id FROM status_events")
            row = await cursor.fetchone()
        return int(row["id"]) if row else 0

    async def depth(self) -> dict[Priority, int]:
        """How many messages wait to be dispatched, per priority."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT priority, count(*) AS n FROM messages WHERE status = 'accepted'"
                " GROUP BY priority"
            )
            counts = {
                Priority.from_rank(row["priority"]): int(row["n"])
                for row in await cursor.fetchall()
            }
        return {priority: counts.get(priority, 0) for priority in Priority}

    # Consumers' cursors

    async def cursors(self, consumer: str) -> list[CursorState]:
        """Every app's cursor for ``consumer``; an app never served starts at 0."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT a.app_id, coalesce(c.event_id, 0) AS event_id,"
                " coalesce(c.failures, 0) AS failures, coalesce(c.last_error, '') AS last_error"
                " FROM apps a LEFT JOIN event_cursors c"
                " ON c.app_id = a.app_id AND c.consumer = %s ORDER BY a.app_id",
                (consumer,),
            )
            return [
                CursorState(
                    row["app_id"], int(row["event_id"]), int(row["failures"]), row["last_error"]
                )
                for row in await cursor.fetchall()
            ]

    async def save_cursor(self, consumer: str, state: CursorState) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO event_cursors (consumer, app_id, event_id, failures, last_error)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (consumer, app_id) DO UPDATE SET"
                " event_id = excluded.event_id, failures = excluded.failures,"
                " last_error = excluded.last_error",
                (consumer, state.app_id, state.event_id, state.failures, state.last_error),
            )

    # Request nonces

    async def claim_nonce(self, client_id: str, nonce: str, expires_at: int, now: int) -> bool:
        """Record a request nonce; ``False`` if it was seen and has not expired."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "INSERT INTO request_nonces (client_id, nonce, expires_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (client_id, nonce) DO UPDATE SET expires_at = excluded.expires_at"
                " WHERE request_nonces.expires_at <= %s",
                (client_id, nonce, expires_at, now),
            )
            return cursor.rowcount == 1

    async def purge_nonces(self, now: int) -> int:
        async with self._db.write() as db:
            cursor = await db.execute("DELETE FROM request_nonces WHERE expires_at <= %s", (now,))
            return cursor.rowcount


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
    cursor = await db.execute(
        "INSERT INTO status_events (seq, app_id, message_id, status, device, detail, at_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING event_id",
        (seq, app_id, message_id, status.value, device, detail, at_ms),
    )
    row = await cursor.fetchone()
    assert row is not None  # INSERT ... RETURNING gives its row
    return StatusEvent(int(row["event_id"]), app_id, message_id, status, at_ms, device, detail)


async def _set_status(db: Db, seq: int, status: MessageStatus, detail: str, at_ms: int) -> None:
    # What is sealed is kept only while a resend may need it: data minimisation.
    await db.execute(
        "UPDATE messages SET status = %(status)s, detail = %(detail)s, updated_ms = %(at)s,"
        " envelope = CASE WHEN %(keep)s THEN envelope END,"
        " omemo = CASE WHEN %(keep)s THEN omemo END WHERE seq = %(seq)s",
        {"status": status.value, "detail": detail, "at": at_ms, "keep": status.pending, "seq": seq},
    )


async def _apply_change(db: Db, change: StatusChange) -> list[StatusEvent]:
    cursor = await db.execute(
        "SELECT seq, status, recipient_jid, sealed_to FROM messages"
        " WHERE app_id = %s AND message_id = %s",
        (change.app_id, change.message_id),
    )
    row = await cursor.fetchone()
    if row is None:
        return []
    seq = row["seq"]
    # The rule asks synchronously whether the reporting device reported a status
    # before, and only for a device's change: that device's reports are read up front.
    seen: set[str] = set()
    if change.device:
        cursor = await db.execute(
            "SELECT status FROM status_events WHERE seq = %s AND device = %s",
            (seq, change.device),
        )
        seen = {event["status"] for event in await cursor.fetchall()}

    def reported(device: str, status: MessageStatus) -> bool:
        return device == change.device and status.value in seen

    step = transition(
        MessageStatus(row["status"]),
        row["recipient_jid"],
        sealed_to_set(row["sealed_to"]),
        change,
        reported,
    )
    if step is None:
        return []
    if step.moves:
        await _set_status(db, seq, step.status, change.detail, change.at_ms)
    return [
        await _add_event(
            db,
            seq,
            change.app_id,
            change.message_id,
            change.status,
            change.at_ms,
            change.device,
            change.detail,
        )
    ]
