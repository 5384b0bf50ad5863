"""Apps' own legacy OMEMO devices and bundles on PostgreSQL: the SQLite OMEMO store's
semantics (:mod:`cmaas.keystore.omemo` documents them)."""

from __future__ import annotations

from cmaas.keystore._rows import Row, check_omemo_room, omemo_bundle
from cmaas.keystore.errors import DeviceNotFound, IdentityKeyMismatch, TooManyDevices
from cmaas.keystore.postgres._connection import Connections, Db
from cmaas.wire import OmemoBundle, OmemoInbound

__all__ = ["PostgresOmemoStore"]


class PostgresOmemoStore:
    """:class:`~cmaas.keystore.OmemoStore` on the tables of a ``PostgresKeystore``."""

    def __init__(self, connections: Connections) -> None:
        self._db = connections

    async def publish(
        self, app_id: str, bundle: OmemoBundle, *, max_devices: int, max_prekeys: int
    ) -> bool:
        """As :meth:`cmaas.keystore.SqliteOmemoStore.publish`.

        Raises: PrekeyPoolFull, TooManyDevices, IdentityKeyMismatch;
            psycopg.errors.ForeignKeyViolation: No such app.
        """
        check_omemo_room(app_id, bundle, max_prekeys)
        now = self._db.now()
        async with self._db.write() as db:
            cursor = await db.execute(
                "SELECT identity_key FROM app_omemo_devices WHERE app_id = %s AND device_id = %s",
                (app_id, bundle.device_id),
            )
            existing = await cursor.fetchone()
            if existing is None:
                cursor = await db.execute(
                    "SELECT count(*) AS n FROM app_omemo_devices WHERE app_id = %s", (app_id,)
                )
                row = await cursor.fetchone()
                held = int(row["n"]) if row else 0
                if held + 1 > max_devices:
                    raise TooManyDevices(
                        f"app {app_id} has {held} OMEMO devices; the limit is {max_devices}"
                    )
            elif existing["identity_key"] != bundle.identity_key:
                raise IdentityKeyMismatch(
                    f"OMEMO device {bundle.device_id} of app {app_id} has another identity key"
                )
            await db.execute(
                "INSERT INTO app_omemo_devices (app_id, device_id, identity_key, spk_id,"
                " spk_public, spk_signature, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (app_id, device_id) DO UPDATE SET spk_id = excluded.spk_id,"
                " spk_public = excluded.spk_public, spk_signature = excluded.spk_signature,"
                " updated_at = excluded.updated_at",
                (
                    app_id,
                    bundle.device_id,
                    bundle.identity_key,
                    bundle.signed_prekey_id,
                    bundle.signed_prekey,
                    bundle.signed_prekey_signature,
                    now,
                    now,
                ),
            )
            await db.execute(
                "DELETE FROM app_omemo_prekeys WHERE app_id = %s AND device_id = %s",
                (app_id, bundle.device_id),
            )
            await db.execute(
                "INSERT INTO app_omemo_prekeys (app_id, device_id, prekey_id, public_key)"
                " SELECT %s, %s, i, k FROM unnest(%s::integer[], %s::bytea[]) AS t(i, k)",
                (
                    app_id,
                    bundle.device_id,
                    [p.prekey_id for p in bundle.prekeys],
                    [p.public_key for p in bundle.prekeys],
                ),
            )
        return existing is None

    async def retire(self, app_id: str, device_id: int) -> None:
        """Raises: DeviceNotFound."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM app_omemo_devices WHERE app_id = %s AND device_id = %s",
                (app_id, device_id),
            )
            if cursor.rowcount == 0:
                raise DeviceNotFound(f"app {app_id} has no OMEMO device {device_id}")

    async def device_ids(self, app_id: str) -> list[int]:
        """The app's device ids, oldest first."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT device_id FROM app_omemo_devices WHERE app_id = %s"
                " ORDER BY created_at, device_id",
                (app_id,),
            )
            return [int(row["device_id"]) for row in await cursor.fetchall()]

    async def bundle(self, app_id: str, device_id: int) -> OmemoBundle:
        """Raises: DeviceNotFound."""
        async with self._db.read() as db:
            found = await _read_bundles(db, app_id, device_id)
        if not found:
            raise DeviceNotFound(f"app {app_id} has no OMEMO device {device_id}")
        return found[0]

    async def bundles(self, app_id: str) -> list[OmemoBundle]:
        """Every device of the app with its bundle, oldest first."""
        async with self._db.read() as db:
            return await _read_bundles(db, app_id, None)

    async def add_inbound(
        self, app_id: str, sender: str, xml: bytes, received_ms: int, *, max_items: int
    ) -> int | None:
        """As :meth:`cmaas.keystore.SqliteOmemoStore.add_inbound`.

        Raises: psycopg.errors.ForeignKeyViolation: No such app.
        """
        async with self._db.write() as db:
            cursor = await db.execute(
                "SELECT count(*) AS n FROM omemo_inbound WHERE app_id = %s", (app_id,)
            )
            row = await cursor.fetchone()
            if row is not None and int(row["n"]) >= max_items:
                return None
            cursor = await db.execute(
                "INSERT INTO omemo_inbound (app_id, sender, xml, received_ms)"
                " VALUES (%s, %s, %s, %s) RETURNING seq",
                (app_id, sender, xml, received_ms),
            )
            inserted = await cursor.fetchone()
            assert inserted is not None  # INSERT ... RETURNING gives its row
            return int(inserted["seq"])

    async def inbound_after(self, app_id: str, after: int, limit: int) -> list[OmemoInbound]:
        """The app's kept elements after sequence number ``after``, oldest first."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT seq, sender, xml, received_ms FROM omemo_inbound"
                " WHERE app_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (app_id, after, limit),
            )
            return [
                OmemoInbound(
                    row["seq"], row["sender"], bytes(row["xml"]).decode(), row["received_ms"]
                )
                for row in await cursor.fetchall()
            ]

    async def purge_inbound(self, before_ms: int) -> int:
        """Delete kept elements received before ``before_ms``; returns how many."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM omemo_inbound WHERE received_ms < %s", (before_ms,)
            )
            return cursor.rowcount


async def _read_bundles(db: Db, app_id: str, device_id: int | None) -> list[OmemoBundle]:
    """The app's bundles, or only ``device_id``'s, in one read."""
    arguments = {"app_id": app_id, "device_id": device_id}
    cursor = await db.execute(
        "SELECT * FROM app_omemo_devices WHERE app_id = %(app_id)s"
        " AND (%(device_id)s::integer IS NULL OR device_id = %(device_id)s)"
        " ORDER BY created_at, device_id",
        arguments,
    )
    devices = await cursor.fetchall()
    cursor = await db.execute(
        "SELECT device_id, prekey_id, public_key FROM app_omemo_prekeys"
        " WHERE app_id = %(app_id)s"
        " AND (%(device_id)s::integer IS NULL OR device_id = %(device_id)s) ORDER BY prekey_id",
        arguments,
    )
    prekeys: dict[int, list[Row]] = {}
    for row in await cursor.fetchall():
        prekeys.setdefault(row["device_id"], []).append(row)
    return [omemo_bundle(row, prekeys.get(row["device_id"], [])) for row in devices]
