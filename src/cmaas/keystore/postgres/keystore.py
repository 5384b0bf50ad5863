"""The keystore on PostgreSQL (psycopg 3, asyncio): apps, plans, credentials, the directory."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence

from cmaas.keystore._rows import (
    app_from_rows,
    check_signing_key_room,
    hmac_key_aad,
    matching_credential,
    plan_from_row,
    priorities_text,
)
from cmaas.keystore.credentials import MasterKeyring, hash_client_secret, new_salt
from cmaas.keystore.errors import (
    AppAlreadyExists,
    AppNotFound,
    ClientIdTaken,
    JidAlreadyBound,
    PlanNotFound,
)
from cmaas.keystore.models import (
    NOTICES_CONSUMER,
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    DirectoryEntry,
    IssuedCredentials,
    NewApp,
    Plan,
)
from cmaas.keystore.postgres._connection import Connections, Db
from cmaas.keystore.postgres.blobs import PostgresBlobStore
from cmaas.keystore.postgres.devices import PostgresDeviceStore
from cmaas.keystore.postgres.messages import PostgresMessageStore
from cmaas.keystore.postgres.omemo import PostgresOmemoStore

__all__ = ["PostgresKeystore"]


class PostgresKeystore:
    """:class:`~cmaas.keystore.Keystore` on a PostgreSQL database.

    Use :meth:`open`. The semantics are the SQLite keystore's, one writer at a time
    (see :class:`~cmaas.keystore.postgres._connection.Connections`); times come from
    the given clock, as there.
    """

    def __init__(
        self, connections: Connections, keyring: MasterKeyring, clock: Callable[[], float]
    ) -> None:
        self._db = connections
        self._keyring = keyring
        self._devices = PostgresDeviceStore(connections)
        self._omemo = PostgresOmemoStore(connections)
        self._blobs = PostgresBlobStore(connections)
        self._messages = PostgresMessageStore(connections, lambda: int(clock() * 1000))

    @classmethod
    async def open(
        cls, url: str, keyring: MasterKeyring, clock: Callable[[], float] = time.time
    ) -> PostgresKeystore:
        """Connect to the database at ``url`` (``postgresql://...``) and migrate it.

        Raises:
            SchemaTooNew: The database was migrated by a newer CMaaS.
            psycopg.Error: The server cannot be reached or refuses the connection.
        """
        return cls(await Connections.open(url, clock), keyring, clock)

    async def close(self) -> None:
        await self._db.close()

    @property
    def devices(self) -> PostgresDeviceStore:
        return self._devices

    @property
    def omemo(self) -> PostgresOmemoStore:
        return self._omemo

    @property
    def blobs(self) -> PostgresBlobStore:
        return self._blobs

    @property
    def messages(self) -> PostgresMessageStore:
        return self._messages

    # Plans

    async def set_plan(self, plan: Plan) -> Plan:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO plans (name, sustained_per_second, burst, daily_quota,"
                " priorities, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET"
                " sustained_per_second = excluded.sustained_per_second,"
                " burst = excluded.burst, daily_quota = excluded.daily_quota,"
                " priorities = excluded.priorities, updated_at = excluded.updated_at",
                (
                    plan.name,
                    plan.sustained_per_second,
                    plan.burst,
                    plan.daily_quota,
                    priorities_text(plan.priorities),
                    self._db.now(),
                ),
            )
        return plan

    async def get_plan(self, name: str) -> Plan:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT * FROM plans WHERE name = %s", (name,))
            row = await cursor.fetchone()
        if row is None:
            raise PlanNotFound(f"no plan named {name!r}")
        return plan_from_row(row)

    async def list_plans(self) -> Sequence[Plan]:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT * FROM plans ORDER BY name")
            return [plan_from_row(row) for row in await cursor.fetchall()]

    # Apps

    async def create_app(self, new_app: NewApp, credentials: IssuedCredentials) -> App:
        now = self._db.now()
        async with self._db.write() as db:
            await _require_plan(db, new_app.plan)
            if await _app_exists(db, new_app.app_id):
                raise AppAlreadyExists(f"an app named {new_app.app_id!r} already exists")
            cursor = await db.execute(
                "SELECT 1 FROM apps WHERE client_id = %s", (credentials.client_id,)
            )
            if await cursor.fetchone() is not None:
                raise ClientIdTaken("client id collision; draw another")
            await db.execute(
                "INSERT INTO apps (app_id, client_id, display_name, plan, callback_url,"
                " suspended, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, false, %s, %s)",
                (
                    new_app.app_id,
                    credentials.client_id,
                    new_app.display_name,
                    new_app.plan,
                    new_app.callback_url,
                    now,
                    now,
                ),
            )
            await _replace_networks(db, new_app.app_id, new_app.networks)
            await _replace_jids(db, new_app.app_id, new_app.jids)
            await self._add_credentials(db, new_app.app_id, credentials, now)
            return await self._load_app(db, new_app.app_id)

    async def get_app(self, app_id: str) -> App:
        async with self._db.read() as db:
            return await self._load_app(db, app_id)

    async def list_apps(self) -> Sequence[App]:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT app_id FROM apps ORDER BY app_id")
            ids = [row["app_id"] for row in await cursor.fetchall()]
            return [await self._load_app(db, app_id) for app_id in ids]

    async def update_app(self, app_id: str, changes: AppChanges) -> App:
        async with self._db.write() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            if changes.plan is not None:
                await _require_plan(db, changes.plan)
            # A value left out (None) keeps the column as it is.
            await db.execute(
                "UPDATE apps SET display_name = coalesce(%(display_name)s, display_name),"
                " plan = coalesce(%(plan)s, plan),"
                " callback_url = CASE WHEN %(clear_callback_url)s THEN NULL"
                " ELSE coalesce(%(callback_url)s, callback_url) END,"
                " suspended = coalesce(%(suspended)s, suspended), updated_at = %(now)s"
                " WHERE app_id = %(app_id)s",
                {
                    "display_name": changes.display_name,
                    "plan": changes.plan,
                    "clear_callback_url": changes.clear_callback_url,
                    "callback_url": changes.callback_url,
                    "suspended": changes.suspended,
                    "now": self._db.now(),
                    "app_id": app_id,
                },
            )
            if changes.networks is not None:
                await _replace_networks(db, app_id, changes.networks)
            if changes.jids is not None:
                await _replace_jids(db, app_id, changes.jids)
            return await self._load_app(db, app_id)

    async def rotate_credentials(
        self, app_id: str, credentials: IssuedCredentials, old_not_after: int
    ) -> App:
        now = self._db.now()
        async with self._db.write() as db:
            cursor = await db.execute("SELECT client_id FROM apps WHERE app_id = %s", (app_id,))
            row = await cursor.fetchone()
            if row is None:
                raise AppNotFound(f"no app named {app_id!r}")
            if row["client_id"] != credentials.client_id:
                raise ValueError("rotation keeps the app's client id")
            await db.execute(
                "UPDATE app_credentials SET not_after = %s"
                " WHERE app_id = %s AND (not_after IS NULL OR not_after > %s)",
                (old_not_after, app_id, old_not_after),
            )
            await self._add_credentials(db, app_id, credentials, now)
            await db.execute("UPDATE apps SET updated_at = %s WHERE app_id = %s", (now, app_id))
            return await self._load_app(db, app_id)

    async def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT c.credential_id, c.app_id, c.secret_salt, c.secret_hash,"
                " c.master_key_id, c.hmac_key FROM app_credentials c"
                " JOIN apps a ON a.app_id = c.app_id"
                " WHERE a.client_id = %s AND (c.not_after IS NULL OR c.not_after > %s)"
                " ORDER BY c.created_at DESC, c.ord DESC",
                (client_id, self._db.now()),
            )
            row = matching_credential(await cursor.fetchall(), client_secret)
            app = await self._load_app(db, row["app_id"])
        hmac_key = self._keyring.unwrap(
            row["master_key_id"],
            row["hmac_key"],
            hmac_key_aad(row["app_id"], row["credential_id"]),
        )
        return AuthenticatedApp(app=app, hmac_key=hmac_key)

    async def app_for_jid(self, jid: str) -> str | None:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT app_id FROM app_jids WHERE jid = %s", (jid,))
            row = await cursor.fetchone()
        return None if row is None else str(row["app_id"])

    async def app_counters(self, app_id: str) -> AppCounters:
        day = self._db.now() // 86400
        async with self._db.read() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            cursor = await db.execute(
                "SELECT status, count(*) AS n FROM messages WHERE app_id = %s GROUP BY status",
                (app_id,),
            )
            by_status = {row["status"]: int(row["n"]) for row in await cursor.fetchall()}
            cursor = await db.execute(
                "SELECT count FROM daily_usage WHERE app_id = %s AND day = %s", (app_id, day)
            )
            row = await cursor.fetchone()
        return AppCounters(
            messages_by_status=by_status, submitted_today=int(row["count"]) if row else 0
        )

    async def hmac_keys(self, app_id: str) -> list[bytes]:
        """The HMAC keys of the app's live credentials, newest first.

        Raises: AppNotFound: No such app, or it has no live credentials.
        """
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT credential_id, master_key_id, hmac_key FROM app_credentials"
                " WHERE app_id = %s AND (not_after IS NULL OR not_after > %s)"
                " ORDER BY created_at DESC, ord DESC",
                (app_id, self._db.now()),
            )
            rows = await cursor.fetchall()
        if not rows:
            raise AppNotFound(f"app {app_id!r} has no live credentials")
        return [
            self._keyring.unwrap(
                row["master_key_id"], row["hmac_key"], hmac_key_aad(app_id, row["credential_id"])
            )
            for row in rows
        ]

    # App signing keys

    async def add_signing_key(self, app_id: str, fingerprint: str, public_key: bytes) -> bool:
        """Register an app signing key's public half; ``False`` if it was already there.

        Raises: AppNotFound, TooManySigningKeys.
        """
        async with self._db.write() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            cursor = await db.execute(
                "SELECT fingerprint FROM app_signing_keys WHERE app_id = %s AND retired_at IS NULL",
                (app_id,),
            )
            active = {row["fingerprint"] for row in await cursor.fetchall()}
            if fingerprint in active:
                return False
            check_signing_key_room(len(active))
            await db.execute(
                "INSERT INTO app_signing_keys (app_id, fingerprint, public_key, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (app_id, fingerprint) DO UPDATE SET"
                " retired_at = NULL",
                (app_id, fingerprint, public_key, self._db.now()),
            )
            return True

    async def retire_signing_key(self, app_id: str, fingerprint: str) -> bool:
        """Stop accepting envelopes signed by this key; ``False`` if it was not active."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE app_signing_keys SET retired_at = %s"
                " WHERE app_id = %s AND fingerprint = %s AND retired_at IS NULL",
                (self._db.now(), app_id, fingerprint),
            )
            return cursor.rowcount > 0

    async def signing_keys(self, app_id: str) -> dict[str, bytes]:
        """The app's active signing keys: fingerprint to public key."""
        async with self._db.read() as db:
            cursor = await db.execute(
                "SELECT fingerprint, public_key FROM app_signing_keys"
                " WHERE app_id = %s AND retired_at IS NULL ORDER BY created_at, fingerprint",
                (app_id,),
            )
            return {row["fingerprint"]: row["public_key"] for row in await cursor.fetchall()}

    # Directory

    async def set_directory(self, address: str, kind: str, jid: str) -> DirectoryEntry:
        now = self._db.now()
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO directory (address, kind, jid, updated_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (address) DO UPDATE SET jid = excluded.jid,"
                " kind = excluded.kind, updated_at = excluded.updated_at",
                (address, kind, jid, now),
            )
        return DirectoryEntry(address=address, kind=kind, jid=jid, updated_at=now)

    async def remove_directory(self, address: str) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute("DELETE FROM directory WHERE address = %s", (address,))
            return cursor.rowcount > 0

    async def resolve_address(self, address: str) -> str | None:
        async with self._db.read() as db:
            cursor = await db.execute("SELECT jid FROM directory WHERE address = %s", (address,))
            row = await cursor.fetchone()
        return None if row is None else str(row["jid"])

    # Master key rotation

    async def rewrap_hmac_keys(self) -> int:
        async with self._db.write() as db:
            cursor = await db.execute(
                "SELECT credential_id, app_id, master_key_id, hmac_key FROM app_credentials"
            )
            count = 0
            for row in await cursor.fetchall():
                if row["master_key_id"] == self._keyring.current_key_id:
                    continue
                aad = hmac_key_aad(row["app_id"], row["credential_id"])
                plain = self._keyring.unwrap(row["master_key_id"], row["hmac_key"], aad)
                key_id, wrapped = self._keyring.wrap(plain, aad)
                await db.execute(
                    "UPDATE app_credentials SET master_key_id = %s, hmac_key = %s"
                    " WHERE credential_id = %s",
                    (key_id, wrapped, row["credential_id"]),
                )
                count += 1
            return count

    # Helpers, called inside a transaction

    async def _add_credentials(
        self, db: Db, app_id: str, credentials: IssuedCredentials, now: int
    ) -> None:
        credential_id = secrets.token_hex(8)
        salt = new_salt()
        key_id, wrapped = self._keyring.wrap(
            credentials.hmac_key, hmac_key_aad(app_id, credential_id)
        )
        await db.execute(
            "INSERT INTO app_credentials (credential_id, app_id, secret_salt, secret_hash,"
            " master_key_id, hmac_key, created_at, not_after)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, NULL)",
            (
                credential_id,
                app_id,
                salt,
                hash_client_secret(salt, credentials.client_secret),
                key_id,
                wrapped,
                now,
            ),
        )

    async def _load_app(self, db: Db, app_id: str) -> App:
        cursor = await db.execute("SELECT * FROM apps WHERE app_id = %s", (app_id,))
        row = await cursor.fetchone()
        if row is None:
            raise AppNotFound(f"no app named {app_id!r}")
        cursor = await db.execute(
            "SELECT network FROM app_networks WHERE app_id = %s ORDER BY network", (app_id,)
        )
        networks = await cursor.fetchall()
        cursor = await db.execute(
            "SELECT jid FROM app_jids WHERE app_id = %s ORDER BY jid", (app_id,)
        )
        jids = await cursor.fetchall()
        cursor = await db.execute(
            "SELECT credential_id, created_at, not_after FROM app_credentials"
            " WHERE app_id = %s AND (not_after IS NULL OR not_after > %s)"
            " ORDER BY created_at, ord",
            (app_id, self._db.now()),
        )
        return app_from_rows(row, networks, jids, await cursor.fetchall())


async def _app_exists(db: Db, app_id: str) -> bool:
    cursor = await db.execute("SELECT 1 FROM apps WHERE app_id = %s", (app_id,))
    return await cursor.fetchone() is not None


async def _require_plan(db: Db, name: str) -> None:
    cursor = await db.execute("SELECT 1 FROM plans WHERE name = %s", (name,))
    if await cursor.fetchone() is None:
        raise PlanNotFound(f"no plan named {name!r}")


async def _replace_networks(db: Db, app_id: str, networks: Iterable[object]) -> None:
    await db.execute("DELETE FROM app_networks WHERE app_id = %s", (app_id,))
    await db.execute(
        "INSERT INTO app_networks (app_id, network) SELECT %s, n FROM unnest(%s::text[]) n"
        " ON CONFLICT DO NOTHING",
        (app_id, [str(network) for network in networks]),
    )


async def _replace_jids(db: Db, app_id: str, jids: Iterable[str]) -> None:
    wanted = sorted(set(jids))
    if wanted:
        cursor = await db.execute(
            "SELECT jid, app_id FROM app_jids WHERE app_id != %s AND jid = ANY(%s)"
            " ORDER BY jid LIMIT 1",
            (app_id, wanted),
        )
        taken = await cursor.fetchone()
        if taken is not None:
            raise JidAlreadyBound(f"{taken['jid']} is already bound to app {taken['app_id']!r}")
    cursor = await db.execute("SELECT 1 FROM app_jids WHERE app_id = %s LIMIT 1", (app_id,))
    had_jids = await cursor.fetchone() is not None
    await db.execute("DELETE FROM app_jids WHERE app_id = %s", (app_id,))
    await db.execute(
        "INSERT INTO app_jids (jid, app_id) SELECT j, %s FROM unnest(%s::text[]) j",
        (app_id, wanted),
    )
    if wanted and not had_jids:
        # Notices start now: the history from before the first JID is not replayed.
        await db.execute(
            "INSERT INTO event_cursors (consumer, app_id, event_id, failures, last_error)"
            " SELECT %s, %s, coalesce(max(event_id), 0), 0, '' FROM status_events"
            " WHERE app_id = %s ON CONFLICT (consumer, app_id) DO UPDATE SET"
            " event_id = excluded.event_id, failures = 0, last_error = ''",
            (NOTICES_CONSUMER, app_id, app_id),
        )
