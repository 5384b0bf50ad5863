"""Apps' own legacy OMEMO devices and bundles, on either backend.

Public keys only, already checked by the caller (:class:`cmaas.wire.OmemoBundle`).
"""

from __future__ import annotations

from cmaas.keystore._db import Db, Row, Transactions
from cmaas.keystore._rows import check_omemo_room, omemo_bundle
from cmaas.keystore.errors import DeviceNotFound, IdentityKeyMismatch, TooManyDevices
from cmaas.wire import OmemoBundle, OmemoInbound

__all__ = ["SqlOmemoStore"]


class SqlOmemoStore:
    """:class:`~cmaas.keystore.OmemoStore` on the tables of a keystore.

    Get it from the keystore's ``omemo``.
    """

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    async def publish(
        self, app_id: str, bundle: OmemoBundle, *, max_devices: int, max_prekeys: int
    ) -> bool:
        """Store the app's device with ``bundle``, replacing its previous bundle whole.

        Returns: whether the device is new.
        Raises:
            PrekeyPoolFull: The bundle holds more than ``max_prekeys`` prekeys.
            TooManyDevices: A new device would exceed the app's ``max_devices``.
            IdentityKeyMismatch: The device is stored with another identity key: its
                contacts trust that key, so a new key takes a new device id.
            sqlite3.IntegrityError, psycopg.errors.ForeignKeyViolation: No such app.
        """
        check_omemo_room(app_id, bundle, max_prekeys)
        now = self._tx.now()
        async with self._tx.write() as db:
            existing = await db.one(
                "SELECT identity_key FROM app_omemo_devices WHERE app_id = ? AND device_id = ?",
                (app_id, bundle.device_id),
            )
            if existing is None:
                row = await db.one(
                    "SELECT count(*) AS n FROM app_omemo_devices WHERE app_id = ?", (app_id,)
                )
                held = int(row["n"]) if row else 0
                if held + 1 > max_devices:
                    raise TooManyDevices(
                        f"app {app_id} has {held} OMEMO devices; the limit is {max_devices}"
                    )
            elif existing["identity_key"] != bundle.identity_key:
                raise IdentityKeyMismatch(
                    f"OMEMO device {bundle.device_id} of app {app_id} has another identity key"
                )
            await db.run(
                "INSERT INTO app_omemo_devices (app_id, device_id, identity_key, spk_id,"
                " spk_public, spk_signature, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
            await db.run(
                "DELETE FROM app_omemo_prekeys WHERE app_id = ? AND device_id = ?",
                (app_id, bundle.device_id),
            )
            await db.many(
                "INSERT INTO app_omemo_prekeys (app_id, device_id, prekey_id, public_key)"
                " VALUES (?, ?, ?, ?)",
                [(app_id, bundle.device_id, p.prekey_id, p.public_key) for p in bundle.prekeys],
            )
        return existing is None

    async def retire(self, app_id: str, device_id: int) -> None:
        """Remove the device and its bundle from the app's list.

        Raises: DeviceNotFound.
        """
        async with self._tx.write() as db:
            removed = await db.run(
                "DELETE FROM app_omemo_devices WHERE app_id = ? AND device_id = ?",
                (app_id, device_id),
            )
        if removed == 0:
            raise DeviceNotFound(f"app {app_id} has no OMEMO device {device_id}")

    async def device_ids(self, app_id: str) -> list[int]:
        """The app's device ids, oldest first."""
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT device_id FROM app_omemo_devices WHERE app_id = ?"
                " ORDER BY created_at, device_id",
                (app_id,),
            )
        return [int(row["device_id"]) for row in rows]

    async def bundle(self, app_id: str, device_id: int) -> OmemoBundle:
        """Raises: DeviceNotFound."""
        async with self._tx.read() as db:
            found = await _read_bundles(db, app_id, device_id)
        if not found:
            raise DeviceNotFound(f"app {app_id} has no OMEMO device {device_id}")
        return found[0]

    async def bundles(self, app_id: str) -> list[OmemoBundle]:
        """Every device of the app with its bundle, oldest first."""
        async with self._tx.read() as db:
            return await _read_bundles(db, app_id, None)

    async def add_inbound(
        self,
        app_id: str,
        sender: str,
        xml: bytes,
        received_ms: int,
        *,
        max_items: int,
        max_per_sender: int,
    ) -> int | None:
        """Keep an ``<encrypted/>`` element a person's client sent to the app's JID.

        Returns: its sequence number, or None when the app already holds ``max_items``,
            or ``max_per_sender`` from ``sender``.
        Raises: sqlite3.IntegrityError, psycopg.errors.ForeignKeyViolation: No such app.
        """
        async with self._tx.write() as db:
            row = await db.one(
                "SELECT count(*) AS n, count(CASE WHEN sender = ? THEN 1 END) AS mine"
                " FROM omemo_inbound WHERE app_id = ?",
                (sender, app_id),
            )
            if row is not None and (
                int(row["n"]) >= max_items or int(row["mine"]) >= max_per_sender
            ):
                return None
            inserted = await db.one(
                "INSERT INTO omemo_inbound (app_id, sender, xml, received_ms)"
                " VALUES (?, ?, ?, ?) RETURNING seq",
                (app_id, sender, xml, received_ms),
            )
            assert inserted is not None  # INSERT ... RETURNING gives its row
            return int(inserted["seq"])

    async def inbound_after(self, app_id: str, after: int, limit: int) -> list[OmemoInbound]:
        """The app's kept elements after sequence number ``after``, oldest first."""
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT seq, sender, xml, received_ms FROM omemo_inbound"
                " WHERE app_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (app_id, after, limit),
            )
        return [
            OmemoInbound(row["seq"], row["sender"], bytes(row["xml"]).decode(), row["received_ms"])
            for row in rows
        ]

    async def purge_inbound(self, before_ms: int) -> int:
        """Delete kept elements received before ``before_ms``; returns how many."""
        async with self._tx.write() as db:
            return await db.run("DELETE FROM omemo_inbound WHERE received_ms < ?", (before_ms,))


async def _read_bundles(db: Db, app_id: str, device_id: int | None) -> list[OmemoBundle]:
    """The app's bundles, or only ``device_id``'s, in one read."""
    # Both queries take the device id or NULL for all: one fixed text each, no splicing.
    arguments = (app_id, device_id, device_id)
    devices = await db.all(
        "SELECT * FROM app_omemo_devices WHERE app_id = ?"
        " AND (CAST(? AS INTEGER) IS NULL OR device_id = ?) ORDER BY created_at, device_id",
        arguments,
    )
    prekeys: dict[int, list[Row]] = {}
    for row in await db.all(
        "SELECT device_id, prekey_id, public_key FROM app_omemo_prekeys WHERE app_id = ?"
        " AND (CAST(? AS INTEGER) IS NULL OR device_id = ?) ORDER BY prekey_id",
        arguments,
    ):
        prekeys.setdefault(row["device_id"], []).append(row)
    return [omemo_bundle(row, prekeys.get(row["device_id"], [])) for row in devices]
