"""Device identity keys and prekey pools, on either backend.

The store keeps bytes the caller has already checked; it does no cryptography.
"""

from __future__ import annotations

from collections.abc import Sequence

from cmaas.keystore._db import Db, Row, Runner, Transactions
from cmaas.keystore._rows import (
    TAKEN_KEPT_S,
    check_device_room,
    check_pool_room,
    check_publication,
    check_signed_prekey,
    device_record,
    new_prekeys,
    signed_prekey,
    suites,
)
from cmaas.keystore.errors import DeviceNotFound, DeviceRevoked, IdentityKeyMismatch
from cmaas.keystore.models import (
    DeviceKeys,
    DevicePublication,
    DeviceRecord,
    KeyTake,
    PrekeyAllowance,
    StoredPrekey,
)

__all__ = ["SqlDeviceStore"]

_SELECT_DEVICES = (
    "SELECT d.*, (SELECT count(*) FROM one_time_prekeys p"
    " WHERE p.jid = d.jid AND p.device_id = d.device_id) AS prekeys_left"
    " FROM devices d"
)


class SqlDeviceStore:
    """:class:`~cmaas.keystore.DeviceStore` on the tables of a keystore.

    Get it from the keystore's ``devices``.
    """

    def __init__(self, transactions: Transactions, take: Runner) -> None:
        self._tx = transactions
        # The key lookup is on every send's path: the backend runs it its fastest way
        # (on SQLite, one hop to the worker thread: see SqliteThread).
        self._run_take = take

    async def publish(
        self, publication: DevicePublication, *, max_devices: int, max_prekeys: int
    ) -> DeviceRecord:
        """Store a new device, or refresh the keys of a known one.

        A refresh replaces the signed prekey, adds the one-time prekeys to the pool,
        and replaces the label unless it is ``None``. Adding one-time prekeys ends a
        low-pool episode, so the next shortage is reported again.

        Raises:
            ValueError: An id out of range, or a suite name that is empty or has a comma.
            DeviceRevoked: The device id was revoked for this JID.
            IdentityKeyMismatch: The device id is stored with another identity key.
            TooManyDevices: A new device would exceed ``max_devices`` active devices.
            PrekeyIdConflict: A one-time prekey id is in the pool with another key,
                given twice, or equal to the signed prekey's id. (The same key again,
                or one already handed out, is skipped: a retried publish.)
            PrekeyPoolFull: The pool would exceed ``max_prekeys`` one-time prekeys.
        """
        check_publication(publication)
        p = publication
        now = self._tx.now()
        async with self._tx.write() as db:
            existing = await _row(db, p.jid, p.device_id)
            if existing is None:
                found = await db.one(
                    "SELECT count(*) AS n FROM devices WHERE jid = ? AND revoked_at IS NULL",
                    (p.jid,),
                )
                check_device_room(p.jid, int(found["n"]) if found else 0, max_devices)
            elif existing["revoked_at"] is not None:
                raise DeviceRevoked(f"device {p.device_id} of {p.jid} was revoked")
            elif existing["identity_key"] != p.identity_key:
                raise IdentityKeyMismatch(
                    f"device {p.device_id} of {p.jid} has another identity key"
                )
            rows = await db.all(
                "SELECT key_id, public_key FROM one_time_prekeys WHERE jid = ? AND device_id = ?",
                (p.jid, p.device_id),
            )
            pool = {row["key_id"]: row["public_key"] for row in rows}
            taken = await _taken_ids(db, p.jid, p.device_id, since=now - TAKEN_KEPT_S)
            added = new_prekeys(p, pool, taken)
            if existing is not None:
                check_signed_prekey(p, existing)
            check_pool_room(p, len(pool), len(added), max_prekeys)
            await db.run(
                "INSERT INTO devices (jid, device_id, identity_key, suites, spk_id, spk_public,"
                " spk_signature, label, created_at, updated_at, revoked_at, low_notified_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
                " ON CONFLICT (jid, device_id) DO UPDATE SET"
                " suites = excluded.suites, spk_id = excluded.spk_id,"
                " spk_public = excluded.spk_public, spk_signature = excluded.spk_signature,"
                " label = coalesce(excluded.label, devices.label),"
                " updated_at = excluded.updated_at",
                (
                    p.jid,
                    p.device_id,
                    p.identity_key,
                    ",".join(p.suites),
                    p.signed_prekey.key_id,
                    p.signed_prekey.public_key,
                    p.signed_prekey.signature,
                    p.label,
                    now,
                    now,
                ),
            )
            if added:
                await db.many(
                    "INSERT INTO one_time_prekeys (jid, device_id, key_id, public_key, signature)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(p.jid, p.device_id, k.key_id, k.public_key, k.signature) for k in added],
                )
                await db.run(
                    "UPDATE devices SET low_notified_at = NULL WHERE jid = ? AND device_id = ?",
                    (p.jid, p.device_id),
                )
            return await _load(db, p.jid, p.device_id)

    async def list(self, jid: str) -> Sequence[DeviceRecord]:
        """The JID's devices, revoked ones included, oldest first."""
        async with self._tx.read() as db:
            rows = await db.all(
                _SELECT_DEVICES + " WHERE d.jid = ? ORDER BY d.created_at, d.device_id", (jid,)
            )
        return [device_record(row) for row in rows]

    async def get(self, jid: str, device_id: int) -> DeviceRecord:
        """Raises: DeviceNotFound."""
        async with self._tx.read() as db:
            return await _load(db, jid, device_id)

    async def revoke(
        self, jid: str, device_id: int, *, keep_revoked: int | None = None
    ) -> DeviceRecord:
        """Revoke a device and drop its one-time prekeys.

        Of the JID's revoked devices, only the ``keep_revoked`` most recently revoked
        are kept (all when ``None``): the others are deleted, and their ids could be
        published again.

        Raises:
            DeviceNotFound: The JID has no such device.
            DeviceRevoked: The device is revoked already.
        """
        now = self._tx.now()
        async with self._tx.write() as db:
            row = await _row(db, jid, device_id)
            if row is None:
                raise DeviceNotFound(f"{jid} has no device {device_id}")
            if row["revoked_at"] is not None:
                raise DeviceRevoked(f"device {device_id} of {jid} is revoked already")
            await db.run(
                "UPDATE devices SET revoked_at = ?, updated_at = ? WHERE jid = ? AND device_id = ?",
                (now, now, jid, device_id),
            )
            await db.run(
                "DELETE FROM one_time_prekeys WHERE jid = ? AND device_id = ?", (jid, device_id)
            )
            record = await _load(db, jid, device_id)
            if keep_revoked is not None:
                await db.run(
                    "DELETE FROM devices WHERE jid = ? AND revoked_at IS NOT NULL AND device_id"
                    " NOT IN (SELECT device_id FROM devices WHERE jid = ?"
                    " AND revoked_at IS NOT NULL"
                    " ORDER BY device_id = ? DESC, revoked_at DESC, rowid DESC LIMIT ?)",
                    (jid, jid, device_id, keep_revoked),
                )
            return record

    async def take(
        self, jid: str, *, low_water: int, allowance: PrekeyAllowance | None = None
    ) -> KeyTake:
        """Hand out the keys of each active device, using up one one-time prekey each.

        Each device gives its lowest-id one-time prekey, or none when its pool is
        empty or ``allowance``'s app has taken its share of that device's keys in the
        current window. A device whose pool is now below ``low_water`` is in
        ``running_low`` once per low-pool episode: it is marked as told in the same
        transaction; a device that gave no key for want of allowance is never in it.
        """
        now = self._tx.now()

        async def work(db: Db) -> KeyTake:
            return await _take(db, jid, low_water, now, allowance)

        return await self._run_take(work)


async def _take(
    db: Db, jid: str, low_water: int, now: int, allowance: PrekeyAllowance | None
) -> KeyTake:
    """The body of :meth:`SqlDeviceStore.take`, inside its transaction."""
    taken: list[DeviceKeys] = []
    running_low: list[DeviceKeys] = []
    if allowance is not None:
        # Windows that ended are forgotten, this recipient's only: the cost of a
        # lookup stays bounded by the recipient's devices times the apps.
        await db.run(
            "DELETE FROM prekey_handouts WHERE jid = ? AND window_start <= ?",
            (jid, now - allowance.window_s),
        )
    rows = await db.all(
        _SELECT_DEVICES + " WHERE d.jid = ? AND d.revoked_at IS NULL"
        " ORDER BY d.created_at, d.device_id",
        (jid,),
    )
    for row in rows:
        device_id = row["device_id"]
        within = allowance is None or await _allowed(db, jid, device_id, allowance)
        prekey = await _pop_prekey(db, jid, device_id, now) if within else None
        if prekey is not None and allowance is not None:
            await db.run(
                "INSERT INTO prekey_handouts (jid, device_id, app_id, window_start, handed)"
                " VALUES (?, ?, ?, ?, 1) ON CONFLICT (jid, device_id, app_id)"
                " DO UPDATE SET handed = prekey_handouts.handed + 1",
                (jid, device_id, allowance.app_id, now),
            )
        keys = DeviceKeys(
            jid=jid,
            device_id=device_id,
            identity_key=row["identity_key"],
            suites=suites(row["suites"]),
            signed_prekey=signed_prekey(row),
            one_time_prekey=prekey,
            prekeys_left=int(row["prekeys_left"]) - (prekey is not None),
        )
        taken.append(keys)
        # A lookup past its allowance leaves the pool as it was, so it tells nobody.
        if within and keys.prekeys_left < low_water and row["low_notified_at"] is None:
            await db.run(
                "UPDATE devices SET low_notified_at = ? WHERE jid = ? AND device_id = ?",
                (now, jid, device_id),
            )
            running_low.append(keys)
    return KeyTake(devices=tuple(taken), running_low=tuple(running_low))


async def _row(db: Db, jid: str, device_id: int) -> Row | None:
    return await db.one("SELECT * FROM devices WHERE jid = ? AND device_id = ?", (jid, device_id))


async def _load(db: Db, jid: str, device_id: int) -> DeviceRecord:
    row = await db.one(_SELECT_DEVICES + " WHERE d.jid = ? AND d.device_id = ?", (jid, device_id))
    if row is None:
        raise DeviceNotFound(f"{jid} has no device {device_id}")
    return device_record(row)


async def _taken_ids(db: Db, jid: str, device_id: int, *, since: int) -> set[int]:
    """Keys handed out since ``since``; older records are purged on the way."""
    await db.run(
        "DELETE FROM taken_prekeys WHERE jid = ? AND device_id = ? AND taken_at < ?",
        (jid, device_id, since),
    )
    rows = await db.all(
        "SELECT key_id FROM taken_prekeys WHERE jid = ? AND device_id = ?", (jid, device_id)
    )
    return {row["key_id"] for row in rows}


async def _pop_prekey(db: Db, jid: str, device_id: int, now: int) -> StoredPrekey | None:
    """Remove the device's lowest-id one-time prekey and remember it was handed out."""
    # Deleting and returning in one statement: a key is handed out only by the
    # statement that removed it, so no two takes can ever return the same one.
    popped = await db.one(
        "DELETE FROM one_time_prekeys WHERE jid = ? AND device_id = ? AND key_id ="
        " (SELECT min(key_id) FROM one_time_prekeys WHERE jid = ? AND device_id = ?)"
        " RETURNING key_id, public_key, signature",
        (jid, device_id, jid, device_id),
    )
    if popped is None:
        return None
    prekey = StoredPrekey(popped["key_id"], popped["public_key"], popped["signature"])
    await db.run(
        "INSERT INTO taken_prekeys (jid, device_id, key_id, taken_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (jid, device_id, key_id) DO UPDATE SET taken_at = excluded.taken_at",
        (jid, device_id, prekey.key_id, now),
    )
    return prekey


async def _allowed(db: Db, jid: str, device_id: int, allowance: PrekeyAllowance) -> bool:
    """Whether the app may take one more of the device's one-time prekeys now."""
    row = await db.one(
        "SELECT handed FROM prekey_handouts WHERE jid = ? AND device_id = ? AND app_id = ?",
        (jid, device_id, allowance.app_id),
    )
    return row is None or row["handed"] < allowance.per_device
