"""Device identity keys and prekey pools on PostgreSQL: the SQLite device store's
semantics (:mod:`cmaas.keystore.devices` documents them), its checks shared."""

from __future__ import annotations

from collections.abc import Sequence

from cmaas.keystore._rows import (
    TAKEN_KEPT_S,
    Row,
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
from cmaas.keystore.postgres._connection import Connections, Db

__all__ = ["PostgresDeviceStore"]

_SELECT_DEVICES = (
    "SELECT d.*, (SELECT count(*) FROM one_time_prekeys p"
    " WHERE p.jid = d.jid AND p.device_id = d.device_id) AS prekeys_left"
    " FROM devices d"
)


class PostgresDeviceStore:
    """:class:`~cmaas.keystore.DeviceStore` on the tables of a ``PostgresKeystore``."""

    def __init__(self, connections: Connections) -> None:
        self._db = connections

    async def publish(
        self, publication: DevicePublication, *, max_devices: int, max_prekeys: int
    ) -> DeviceRecord:
        """As :meth:`cmaas.keystore.SqliteDeviceStore.publish`.

        Raises: ValueError, DeviceRevoked, IdentityKeyMismatch, TooManyDevices,
            PrekeyIdConflict, PrekeyPoolFull, SignedPrekeyRollback.
        """
        check_publication(publication)
        p = publication
        now = self._db.now()
        async with self._db.write() as db:
            existing = await _row(db, p.jid, p.device_id)
            if existing is None:
                cursor = await db.execute(
                    "SELECT count(*) AS n FROM devices WHERE jid = %s AND revoked_at IS NULL",
                    (p.jid,),
                )
                found = await cursor.fetchone()
                check_device_room(p.jid, int(found["n"]) if found else 0, max_devices)
            elif existing["revoked_at"] is not None:
                raise DeviceRevoked(f"device {p.device_id} of {p.jid} was revoked")
            elif existing["identity_key"] != p.identity_key:
                raise IdentityKeyMismatch(
                    f"device {p.device_id} of {p.jid} has another identity key"
                )
            cursor = await db.execute(
                "SELECT key_id, public_key FROM one_time_prekeys WHERE jid = %s AND device_id = %s",
                (p.jid, p.device_id),
            )
            pool = {row["key_id"]: row["public_key"] for row in await cursor.fetchall()}
            taken = await _taken_ids(db, p.jid, p.device_id, since=now - TAKEN_KEPT_S)
            added = new_prekeys(p, pool, taken)
            if existing is not None:
                check_signed_prekey(p, existing)
            check_pool_room(p, len(pool), len(added), max_prekeys)
            await db.execute(
                "INSERT INTO devices (jid, device_id, identity_key, suites, spk_id, spk_public,"
                " spk_signature, label, created_at, updated_at, revoked_at, low_notified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL)"
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
                await db.execute(
                    "INSERT INTO one_time_prekeys (jid, device_id, key_id, public_key, signature)"
                    " SELECT %s, %s, k, pk, s FROM unnest(%s::integer[], %s::bytea[],"
                    " %s::bytea[]) AS t(k, pk, s)",
                    (
                        p.jid,
                        p.device_id,
                        [k.key_id for k in added],
                        [k.public_key for k in added],
                        [k.signature for k in added],
                    ),
                )
                await db.execute(
                    "UPDATE devices SET low_notified_at = NULL WHERE jid = %s AND device_id = %s",
                    (p.jid, p.device_id),
                )
            return await _load(db, p.jid, p.device_id)

    async def list(self, jid: str) -> Sequence[DeviceRecord]:
        """The JID's devices, revoked ones included, oldest first."""
        async with self._db.read() as db:
            cursor = await db.execute(
                _SELECT_DEVICES + " WHERE d.jid = %s ORDER BY d.created_at, d.device_id",
                (jid,),
            )
            return [device_record(row) for row in await cursor.fetchall()]

    async def get(self, jid: str, device_id: int) -> DeviceRecord:
        """Raises: DeviceNotFound."""
        async with self._db.read() as db:
            return await _load(db, jid, device_id)

    async def revoke(
        self, jid: str, device_id: int, *, keep_revoked: int | None = None
    ) -> DeviceRecord:
        """As :meth:`cmaas.keystore.SqliteDeviceStore.revoke`.

        Raises: DeviceNotFound, DeviceRevoked.
        """
        now = self._db.now()
        async with self._db.write() as db:
            row = await _row(db, jid, device_id)
            if row is None:
                raise DeviceNotFound(f"{jid} has no device {device_id}")
            if row["revoked_at"] is not None:
                raise DeviceRevoked(f"device {device_id} of {jid} is revoked already")
            await db.execute(
                "UPDATE devices SET revoked_at = %s, updated_at = %s"
                " WHERE jid = %s AND device_id = %s",
                (now, now, jid, device_id),
            )
            await db.execute(
                "DELETE FROM one_time_prekeys WHERE jid = %s AND device_id = %s",
                (jid, device_id),
            )
            record = await _load(db, jid, device_id)
            if keep_revoked is not None:
                await db.execute(
                    "DELETE FROM devices WHERE jid = %(jid)s AND revoked_at IS NOT NULL"
                    " AND device_id NOT IN (SELECT device_id FROM devices WHERE jid = %(jid)s"
                    " AND revoked_at IS NOT NULL ORDER BY device_id = %(device_id)s DESC,"
                    " revoked_at DESC, ord DESC LIMIT %(keep)s)",
                    {"jid": jid, "device_id": device_id, "keep": keep_revoked},
                )
            return record

    async def take(
        self, jid: str, *, low_water: int, allowance: PrekeyAllowance | None = None
    ) -> KeyTake:
        """As :meth:`cmaas.keystore.SqliteDeviceStore.take`."""
        now = self._db.now()
        taken: list[DeviceKeys] = []
        running_low: list[DeviceKeys] = []
        async with self._db.write() as db:
            if allowance is not None:
                await db.execute(
                    "DELETE FROM prekey_handouts WHERE jid = %s AND window_start <= %s",
                    (jid, now - allowance.window_s),
                )
            cursor = await db.execute(
                _SELECT_DEVICES + " WHERE d.jid = %s AND d.revoked_at IS NULL"
                " ORDER BY d.created_at, d.device_id",
                (jid,),
            )
            for row in await cursor.fetchall():
                device_id = row["device_id"]
                within = allowance is None or await _allowed(db, jid, device_id, allowance)
                prekey = await _pop_prekey(db, jid, device_id, now) if within else None
                if prekey is not None and allowance is not None:
                    await db.execute(
                        "INSERT INTO prekey_handouts (jid, device_id, app_id, window_start,"
                        " handed) VALUES (%s, %s, %s, %s, 1) ON CONFLICT (jid, device_id, app_id)"
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
                    await db.execute(
                        "UPDATE devices SET low_notified_at = %s WHERE jid = %s AND device_id = %s",
                        (now, jid, device_id),
                    )
                    running_low.append(keys)
        return KeyTake(devices=tuple(taken), running_low=tuple(running_low))


async def _row(db: Db, jid: str, device_id: int) -> Row | None:
    cursor = await db.execute(
        "SELECT * FROM devices WHERE jid = %s AND device_id = %s", (jid, device_id)
    )
    return await cursor.fetchone()


async def _load(db: Db, jid: str, device_id: int) -> DeviceRecord:
    cursor = await db.execute(
        _SELECT_DEVICES + " WHERE d.jid = %s AND d.device_id = %s", (jid, device_id)
    )
    row = await cursor.fetchone()
    if row is None:
        raise DeviceNotFound(f"{jid} has no device {device_id}")
    return device_record(row)


async def _taken_ids(db: Db, jid: str, device_id: int, *, since: int) -> set[int]:
    """Keys handed out since ``since``; older records are purged on the way."""
    await db.execute(
        "DELETE FROM taken_prekeys WHERE jid = %s AND device_id = %s AND taken_at < %s",
        (jid, device_id, since),
    )
    cursor = await db.execute(
        "SELECT key_id FROM taken_prekeys WHERE jid = %s AND device_id = %s", (jid, device_id)
    )
    return {row["key_id"] for row in await cursor.fetchall()}


async def _pop_prekey(db: Db, jid: str, device_id: int, now: int) -> StoredPrekey | None:
    """Remove the device's lowest-id one-time prekey and remember it was handed out."""
    cursor = await db.execute(
        "DELETE FROM one_time_prekeys WHERE jid = %(jid)s AND device_id = %(device_id)s"
        " AND key_id = (SELECT min(key_id) FROM one_time_prekeys"
        " WHERE jid = %(jid)s AND device_id = %(device_id)s)"
        " RETURNING key_id, public_key, signature",
        {"jid": jid, "device_id": device_id},
    )
    popped = await cursor.fetchone()
    if popped is None:
        return None
    prekey = StoredPrekey(popped["key_id"], popped["public_key"], popped["signature"])
    await db.execute(
        "INSERT INTO taken_prekeys (jid, device_id, key_id, taken_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (jid, device_id, key_id) DO UPDATE SET taken_at = excluded.taken_at",
        (jid, device_id, prekey.key_id, now),
    )
    return prekey


async def _allowed(db: Db, jid: str, device_id: int, allowance: PrekeyAllowance) -> bool:
    """Whether the app may take one more of the device's one-time prekeys now."""
    cursor = await db.execute(
        "SELECT handed FROM prekey_handouts WHERE jid = %s AND device_id = %s AND app_id = %s",
        (jid, device_id, allowance.app_id),
    )
    row = await cursor.fetchone()
    return row is None or row["handed"] < allowance.per_device
