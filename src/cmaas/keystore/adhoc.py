"""Open ad-hoc command sessions, in the database that every gateway instance shares, so
that a session's next step may reach any instance.

Sessions are keyed by a digest of their id, so that neither a copy of the database nor
the time a lookup takes tells the ids. Bounds are counted in the transaction that opens
a session, and write transactions run one at a time in the whole database, so that
concurrent opens on several instances cannot all pass.
"""

from __future__ import annotations

import hashlib

from cmaas.keystore._db import Row, Transactions
from cmaas.keystore.errors import AdhocSessionLimit
from cmaas.keystore.models import AdhocSession, AdhocSessionBounds, AdhocSessionRefusal

__all__ = ["SqlAdhocSessions", "session_key"]


def session_key(session_id: str) -> str:
    """What a session is stored under: the SHA-256 of its id, in hex."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _live_params(now_ms: int, bounds: AdhocSessionBounds) -> tuple[int, int]:
    """The parameters of the statements' test of a live session, ``created_ms > ? AND
    (busy = 1 OR updated_ms > ?)``: within its lifetime, and within its idle time
    unless a step of it runs."""
    return now_ms - bounds.lifetime_ms, now_ms - bounds.idle_ms


def _expired(row: Row, now_ms: int, bounds: AdhocSessionBounds) -> bool:
    lifetime_floor, idle_floor = _live_params(now_ms, bounds)
    return int(row["created_ms"]) <= lifetime_floor or int(row["updated_ms"]) <= idle_floor


class SqlAdhocSessions:
    """:class:`~cmaas.keystore.AdhocSessionStore` on the tables of a keystore, either
    backend. Times are the caller's, in unix milliseconds."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    async def open(
        self,
        session_id: str,
        session: AdhocSession,
        access: str,
        now_ms: int,
        bounds: AdhocSessionBounds,
    ) -> None:
        """Store a new session, if the requester's account and the command's access
        class (``access``) each have fewer live sessions than ``bounds`` allow.

        Raises: AdhocSessionLimit.
        """
        owner_bare = session.owner.split("/", 1)[0]
        async with self._tx.write() as db:
            row = await db.one(
                "SELECT count(CASE WHEN owner_bare = ? THEN 1 END) AS account,"
                " count(CASE WHEN access = ? THEN 1 END) AS in_class"
                " FROM adhoc_sessions WHERE (owner_bare = ? OR access = ?)"
                " AND created_ms > ? AND (busy = 1 OR updated_ms > ?)",
                (owner_bare, access, owner_bare, access, *_live_params(now_ms, bounds)),
            )
            assert row is not None  # an aggregate gives one row
            if int(row["account"]) >= bounds.per_account:
                raise AdhocSessionLimit(per_account=True, open_sessions=int(row["account"]))
            if int(row["in_class"]) >= bounds.per_class:
                raise AdhocSessionLimit(per_account=False, open_sessions=int(row["in_class"]))
            await db.run(
                "INSERT INTO adhoc_sessions (session_key, owner, owner_bare, node, access,"
                " step, state, busy, created_ms, updated_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    session_key(session_id),
                    session.owner,
                    owner_bare,
                    session.node,
                    access,
                    session.step,
                    session.state,
                    now_ms,
                    now_ms,
                ),
            )

    async def claim(
        self, session_id: str, owner: str, node: str, now_ms: int, bounds: AdhocSessionBounds
    ) -> AdhocSession | AdhocSessionRefusal:
        """The session, marked busy for one step of ``owner``'s (the full JID), until
        :meth:`save` or :meth:`end`; or why it cannot take a step. An expired session
        is deleted; a foreign one is left as it was."""
        key = session_key(session_id)
        async with self._tx.write() as db:
            row = await db.one(
                "SELECT owner, node, step, state, busy, created_ms, updated_ms"
                " FROM adhoc_sessions WHERE session_key = ?",
                (key,),
            )
            if row is None or row["busy"]:
                return AdhocSessionRefusal.UNKNOWN
            if row["owner"] != owner:
                return AdhocSessionRefusal.FOREIGN
            if _expired(row, now_ms, bounds):
                await db.run("DELETE FROM adhoc_sessions WHERE session_key = ?", (key,))
                return AdhocSessionRefusal.EXPIRED
            if row["node"] != node:
                return AdhocSessionRefusal.OTHER_NODE
            await db.run("UPDATE adhoc_sessions SET busy = 1 WHERE session_key = ?", (key,))
        return AdhocSession(
            str(row["owner"]), str(row["node"]), str(row["step"]), str(row["state"])
        )

    async def save(self, session_id: str, step: str, state: str, active_ms: int | None) -> bool:
        """Release a claimed session at ``step`` with ``state``; ``active_ms`` (a form
        was submitted then) restarts its idle time.

        Returns: whether the session was still there (the owner's going offline may
        have ended it meanwhile).
        """
        async with self._tx.write() as db:
            changed = await db.run(
                "UPDATE adhoc_sessions SET step = ?, state = ?, busy = 0,"
                " updated_ms = coalesce(?, updated_ms) WHERE session_key = ?",
                (step, state, active_ms, session_key(session_id)),
            )
        return changed > 0

    async def end(self, session_id: str) -> None:
        async with self._tx.write() as db:
            await db.run(
                "DELETE FROM adhoc_sessions WHERE session_key = ?", (session_key(session_id),)
            )

    async def forget(self, jid: str) -> int:
        """End the sessions of a full JID, or of every resource of a bare JID.

        Returns: how many were ended.
        """
        async with self._tx.write() as db:
            if "/" in jid:
                return await db.run("DELETE FROM adhoc_sessions WHERE owner = ?", (jid,))
            return await db.run("DELETE FROM adhoc_sessions WHERE owner_bare = ?", (jid,))

    async def purge(self, now_ms: int, bounds: AdhocSessionBounds) -> int:
        """Delete the sessions past their idle or lifetime bound.

        Returns: how many were deleted.
        """
        async with self._tx.write() as db:
            return await db.run(
                "DELETE FROM adhoc_sessions"
                " WHERE NOT (created_ms > ? AND (busy = 1 OR updated_ms > ?))",
                _live_params(now_ms, bounds),
            )

    async def count(self) -> int:
        """Sessions stored, expired ones not yet purged included."""
        async with self._tx.read() as db:
            row = await db.one("SELECT count(*) AS n FROM adhoc_sessions")
        assert row is not None  # an aggregate gives one row
        return int(row["n"])
