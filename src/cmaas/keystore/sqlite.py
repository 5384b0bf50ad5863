"""The keystore on SQLite (aiosqlite), in WAL mode with foreign keys enforced."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiosqlite

from cmaas.file_lock import lock_exclusively
from cmaas.keystore._sql import GroupCommit, SharedConnection, SqliteThread
from cmaas.keystore.blobs import SqliteBlobStore
from cmaas.keystore.credentials import (
    MasterKeyring,
    hash_client_secret,
    new_salt,
    secret_matches,
)
from cmaas.keystore.devices import SqliteDeviceStore
from cmaas.keystore.errors import (
    AppAlreadyExists,
    AppNotFound,
    AuthenticationFailed,
    ClientIdTaken,
    DatabaseInUse,
    JidAlreadyBound,
    PlanNotFound,
    SchemaTooNew,
    TooManySigningKeys,
)
from cmaas.keystore.messages import SqliteMessageStore
from cmaas.keystore.migrations import MIGRATIONS
from cmaas.keystore.models import (
    NOTICES_CONSUMER,
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    CredentialInfo,
    DirectoryEntry,
    IssuedCredentials,
    NewApp,
    Plan,
)
from cmaas.keystore.omemo import SqliteOmemoStore
from cmaas.lifecycle import (
    Priority,
)

__all__ = ["MAX_SIGNING_KEYS", "GatewayLock", "SqliteKeystore"]

MAX_SIGNING_KEYS = 4
"""Active signing keys per app: enough to roll one over, few enough to audit."""

# A fixed salt/hash pair so that an unknown client id costs the same as a wrong secret.
_DUMMY_SALT = bytes(16)
_DUMMY_HASH = hash_client_secret(_DUMMY_SALT, "no such client")


def _hmac_key_aad(app_id: str, credential_id: str) -> bytes:
    return f"cmaas/v1/hmac-key|{app_id}|{credential_id}".encode()


def _priorities_text(priorities: Iterable[Priority]) -> str:
    return ",".join(p.value for p in Priority.ranked(priorities))


def _plan_from_row(row: sqlite3.Row) -> Plan:
    return Plan(
        name=row["name"],
        sustained_per_second=row["sustained_per_second"],
        burst=row["burst"],
        daily_quota=row["daily_quota"],
        priorities=frozenset(Priority(p) for p in row["priorities"].split(",")),
    )


class SqliteKeystore:
    """:class:`~cmaas.keystore.Keystore` on one SQLite file.

    Use :meth:`open`; the constructor expects an already configured connection.
    """

    def __init__(
        self,
        connection: aiosqlite.Connection,
        keyring: MasterKeyring,
        clock: Callable[[], float] = time.time,
        *,
        path: Path,
    ) -> None:
        self._db = connection
        self._keyring = keyring
        self._shared = SharedConnection(connection, clock)
        self._thread = SqliteThread(path)
        self._devices = SqliteDeviceStore(self._shared, self._thread)
        self._omemo = SqliteOmemoStore(self._shared)
        self._commits = GroupCommit(self._thread)
        self._blobs = SqliteBlobStore(self._shared, self._commits)
        self._messages = SqliteMessageStore(
            self._shared, self._commits, lambda: int(clock() * 1000)
        )

    @classmethod
    async def open(
        cls,
        path: Path,
        keyring: MasterKeyring,
        clock: Callable[[], float] = time.time,
    ) -> SqliteKeystore:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises:
            SchemaTooNew: The file was migrated by a newer CMaaS.
            sqlite3.Error: The file cannot be opened or is not a database.
        """
        await asyncio.to_thread(_create_private, path)
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA foreign_keys = ON")
            # FULL: a 202 promises durability even across power loss, not only crashes.
            await connection.execute("PRAGMA synchronous = FULL")
            await connection.execute("PRAGMA busy_timeout = 10000")
            # Deleted envelopes and secrets are overwritten, not left in free pages.
            await connection.execute("PRAGMA secure_delete = ON")
            await _migrate(connection)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, keyring, clock, path=path)

    async def close(self) -> None:
        await self._commits.close()
        await self._thread.close()
        # A read or write in progress on the shared connection finishes first.
        async with self._shared.write_lock():
            await self._db.close()

    @property
    def devices(self) -> SqliteDeviceStore:
        """Device identity keys and prekeys, on the same connection."""
        return self._devices

    @property
    def omemo(self) -> SqliteOmemoStore:
        """Apps' own OMEMO devices and bundles, on the same connection."""
        return self._omemo

    @property
    def blobs(self) -> SqliteBlobStore:
        """Who holds which encrypted file blob, until when."""
        return self._blobs

    @property
    def messages(self) -> SqliteMessageStore:
        """The outbox, its status events and cursors, on the same database."""
        return self._messages

    def _now(self) -> int:
        return self._shared.now()

    def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        return self._shared.write()

    def _read(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        return self._shared.read()

    # Plans

    async def set_plan(self, plan: Plan) -> Plan:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO plans (name, sustained_per_second, burst, daily_quota,"
                " priorities, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET"
                " sustained_per_second = excluded.sustained_per_second,"
                " burst = excluded.burst, daily_quota = excluded.daily_quota,"
                " priorities = excluded.priorities, updated_at = excluded.updated_at",
                (
                    plan.name,
                    plan.sustained_per_second,
                    plan.burst,
                    plan.daily_quota,
                    _priorities_text(plan.priorities),
                    self._now(),
                ),
            )
        return plan

    async def get_plan(self, name: str) -> Plan:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM plans WHERE name = ?", (name,))
            row = await cursor.fetchone()
        if row is None:
            raise PlanNotFound(f"no plan named {name!r}")
        return _plan_from_row(row)

    async def list_plans(self) -> Sequence[Plan]:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM plans ORDER BY name")
            rows = await cursor.fetchall()
        return [_plan_from_row(row) for row in rows]

    # Apps

    async def create_app(self, new_app: NewApp, credentials: IssuedCredentials) -> App:
        now = self._now()
        async with self._write() as db:
            await self._require_plan(db, new_app.plan)
            if await self._app_exists(db, new_app.app_id):
                raise AppAlreadyExists(f"an app named {new_app.app_id!r} already exists")
            cursor = await db.execute(
                "SELECT 1 FROM apps WHERE client_id = ?", (credentials.client_id,)
            )
            if await cursor.fetchone() is not None:
                raise ClientIdTaken("client id collision; draw another")
            await db.execute(
                "INSERT INTO apps (app_id, client_id, display_name, plan, callback_url,"
                " suspended, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
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
            await self._replace_networks(db, new_app.app_id, new_app.networks)
            await self._replace_jids(db, new_app.app_id, new_app.jids)
            await self._add_credentials(db, new_app.app_id, credentials, now)
            return await self._load_app(db, new_app.app_id)

    async def get_app(self, app_id: str) -> App:
        async with self._read() as db:
            return await self._load_app(db, app_id)

    async def list_apps(self) -> Sequence[App]:
        async with self._read() as db:
            cursor = await db.execute("SELECT app_id FROM apps ORDER BY app_id")
            ids = [row["app_id"] for row in await cursor.fetchall()]
            return [await self._load_app(db, app_id) for app_id in ids]

    async def update_app(self, app_id: str, changes: AppChanges) -> App:
        async with self._write() as db:
            if not await self._app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            if changes.plan is not None:
                await self._require_plan(db, changes.plan)
            assignments: list[str] = []
            values: list[object] = []
            for column, value in (
                ("display_name", changes.display_name),
                ("plan", changes.plan),
                ("callback_url", changes.callback_url),
                ("suspended", None if changes.suspended is None else int(changes.suspended)),
            ):
                if value is not None:
                    assignments.append(f"{column} = ?")
                    values.append(value)
            if changes.clear_callback_url:
                assignments.append("callback_url = NULL")
            assignments.append("updated_at = ?")
            values.append(self._now())
            # Column names come from the fixed tuple above, never from input.
            await db.execute(
                f"UPDATE apps SET {', '.join(assignments)} WHERE app_id = ?",  # noqa: S608
                (*values, app_id),
            )
            if changes.networks is not None:
                await self._replace_networks(db, app_id, changes.networks)
            if changes.jids is not None:
                await self._replace_jids(db, app_id, changes.jids)
            return await self._load_app(db, app_id)

    async def rotate_credentials(
        self, app_id: str, credentials: IssuedCredentials, old_not_after: int
    ) -> App:
        now = self._now()
        async with self._write() as db:
            cursor = await db.execute("SELECT client_id FROM apps WHERE app_id = ?", (app_id,))
            row = await cursor.fetchone()
            if row is None:
                raise AppNotFound(f"no app named {app_id!r}")
            if row["client_id"] != credentials.client_id:
                raise ValueError("rotation keeps the app's client id")
            await db.execute(
                "UPDATE app_credentials SET not_after = ?"
                " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?)",
                (old_not_after, app_id, old_not_after),
            )
            await self._add_credentials(db, app_id, credentials, now)
            await db.execute("UPDATE apps SET updated_at = ? WHERE app_id = ?", (now, app_id))
            return await self._load_app(db, app_id)

    async def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        now = self._now()
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT c.credential_id, c.app_id, c.secret_salt, c.secret_hash,"
                " c.master_key_id, c.hmac_key FROM app_credentials c"
                " JOIN apps a ON a.app_id = c.app_id"
                " WHERE a.client_id = ? AND (c.not_after IS NULL OR c.not_after > ?)"
                " ORDER BY c.created_at DESC",
                (client_id, now),
            )
            rows = await cursor.fetchall()
            if not rows:
                secret_matches(_DUMMY_SALT, _DUMMY_HASH, client_secret)
                raise AuthenticationFailed("unknown client id or wrong secret")
            # Check every live credential so the time taken does not tell which one matched.
            matches = [
                row
                for row in rows
                if secret_matches(row["secret_salt"], row["secret_hash"], client_secret)
            ]
            if not matches:
                raise AuthenticationFailed("unknown client id or wrong secret")
            row = matches[0]
            app = await self._load_app(db, row["app_id"])
        hmac_key = self._keyring.unwrap(
            row["master_key_id"],
            row["hmac_key"],
            _hmac_key_aad(row["app_id"], row["credential_id"]),
        )
        return AuthenticatedApp(app=app, hmac_key=hmac_key)

    async def app_for_jid(self, jid: str) -> str | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT app_id FROM app_jids WHERE jid = ?", (jid,))
            row = await cursor.fetchone()
        return None if row is None else str(row["app_id"])

    async def app_counters(self, app_id: str) -> AppCounters:
        day = self._now() // 86400
        async with self._read() as db:
            if not await self._app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            cursor = await db.execute(
                "SELECT status, count(*) AS n FROM messages WHERE app_id = ? GROUP BY status",
                (app_id,),
            )
            by_status = {row["status"]: row["n"] for row in await cursor.fetchall()}
            cursor = await db.execute(
                "SELECT count FROM daily_usage WHERE app_id = ? AND day = ?", (app_id, day)
            )
            row = await cursor.fetchone()
        return AppCounters(messages_by_status=by_status, submitted_today=row[0] if row else 0)

    async def hmac_keys(self, app_id: str) -> list[bytes]:
        """The HMAC keys of the app's live credentials, newest first: the first signs
        its webhooks; any verifies its requests during a rotation's grace period.

        Raises: AppNotFound: No such app, or it has no live credentials.
        """
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT credential_id, master_key_id, hmac_key FROM app_credentials"
                " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?)"
                " ORDER BY created_at DESC, rowid DESC",
                (app_id, self._now()),
            )
            rows = await cursor.fetchall()
        if not rows:
            raise AppNotFound(f"app {app_id!r} has no live credentials")
        return [
            self._keyring.unwrap(
                row["master_key_id"], row["hmac_key"], _hmac_key_aad(app_id, row["credential_id"])
            )
            for row in rows
        ]

    # App signing keys

    async def add_signing_key(self, app_id: str, fingerprint: str, public_key: bytes) -> bool:
        """Register an app signing key's public half; ``False`` if it was already there.

        Raises: AppNotFound, TooManySigningKeys.
        """
        async with self._write() as db:
            if not await self._app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            cursor = await db.execute(
                "SELECT fingerprint FROM app_signing_keys WHERE app_id = ? AND retired_at IS NULL",
                (app_id,),
            )
            active = {row["fingerprint"] for row in await cursor.fetchall()}
            if fingerprint in active:
                return False
            if len(active) >= MAX_SIGNING_KEYS:
                raise TooManySigningKeys(
                    f"an app may have {MAX_SIGNING_KEYS} signing keys; retire one first"
                )
            await db.execute(
                "INSERT INTO app_signing_keys (app_id, fingerprint, public_key, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (app_id, fingerprint) DO UPDATE SET"
                " retired_at = NULL",
                (app_id, fingerprint, public_key, self._now()),
            )
            return True

    async def retire_signing_key(self, app_id: str, fingerprint: str) -> bool:
        """Stop accepting envelopes signed by this key; ``False`` if it was not active."""
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE app_signing_keys SET retired_at = ?"
                " WHERE app_id = ? AND fingerprint = ? AND retired_at IS NULL",
                (self._now(), app_id, fingerprint),
            )
            return cursor.rowcount > 0

    async def signing_keys(self, app_id: str) -> dict[str, bytes]:
        """The app's active signing keys: fingerprint to public key."""
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT fingerprint, public_key FROM app_signing_keys"
                " WHERE app_id = ? AND retired_at IS NULL ORDER BY created_at",
                (app_id,),
            )
            return {row["fingerprint"]: row["public_key"] for row in await cursor.fetchall()}

    # Directory

    async def set_directory(self, address: str, kind: str, jid: str) -> DirectoryEntry:
        now = self._now()
        async with self._write() as db:
            await db.execute(
                "INSERT INTO directory (address, kind, jid, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET jid = excluded.jid,"
                " kind = excluded.kind, updated_at = excluded.updated_at",
                (address, kind, jid, now),
            )
        return DirectoryEntry(address=address, kind=kind, jid=jid, updated_at=now)

    async def remove_directory(self, address: str) -> bool:
        async with self._write() as db:
            cursor = await db.execute("DELETE FROM directory WHERE address = ?", (address,))
            return cursor.rowcount > 0

    async def resolve_address(self, address: str) -> str | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT jid FROM directory WHERE address = ?", (address,))
            row = await cursor.fetchone()
        return None if row is None else str(row["jid"])

    # Master key rotation

    async def rewrap_hmac_keys(self) -> int:
        async with self._write() as db:
            cursor = await db.execute(
                "SELECT credential_id, app_id, master_key_id, hmac_key FROM app_credentials"
            )
            rows = await cursor.fetchall()
            count = 0
            for row in rows:
                if row["master_key_id"] == self._keyring.current_key_id:
                    continue
                aad = _hmac_key_aad(row["app_id"], row["credential_id"])
                plain = self._keyring.unwrap(row["master_key_id"], row["hmac_key"], aad)
                key_id, wrapped = self._keyring.wrap(plain, aad)
                await db.execute(
                    "UPDATE app_credentials SET master_key_id = ?, hmac_key = ?"
                    " WHERE credential_id = ?",
                    (key_id, wrapped, row["credential_id"]),
                )
                count += 1
            return count

    # Helpers, called with the lock held

    async def _app_exists(self, db: aiosqlite.Connection, app_id: str) -> bool:
        cursor = await db.execute("SELECT 1 FROM apps WHERE app_id = ?", (app_id,))
        return await cursor.fetchone() is not None

    async def _require_plan(self, db: aiosqlite.Connection, name: str) -> None:
        cursor = await db.execute("SELECT 1 FROM plans WHERE name = ?", (name,))
        if await cursor.fetchone() is None:
            raise PlanNotFound(f"no plan named {name!r}")

    async def _replace_networks(
        self, db: aiosqlite.Connection, app_id: str, networks: Iterable[object]
    ) -> None:
        await db.execute("DELETE FROM app_networks WHERE app_id = ?", (app_id,))
        await db.executemany(
            "INSERT OR IGNORE INTO app_networks (app_id, network) VALUES (?, ?)",
            [(app_id, str(network)) for network in networks],
        )

    async def _replace_jids(
        self, db: aiosqlite.Connection, app_id: str, jids: Iterable[str]
    ) -> None:
        wanted = sorted(set(jids))
        if wanted:
            placeholders = ",".join("?" * len(wanted))
            cursor = await db.execute(
                f"SELECT jid, app_id FROM app_jids WHERE app_id != ?"  # noqa: S608
                f" AND jid IN ({placeholders})",
                (app_id, *wanted),
            )
            taken = await cursor.fetchone()
            if taken is not None:
                raise JidAlreadyBound(f"{taken['jid']} is already bound to app {taken['app_id']!r}")
        cursor = await db.execute("SELECT 1 FROM app_jids WHERE app_id = ? LIMIT 1", (app_id,))
        had_jids = await cursor.fetchone() is not None
        await db.execute("DELETE FROM app_jids WHERE app_id = ?", (app_id,))
        await db.executemany(
            "INSERT INTO app_jids (jid, app_id) VALUES (?, ?)", [(jid, app_id) for jid in wanted]
        )
        if wanted and not had_jids:
            # Notices start now: the history from before the first JID is not replayed.
            await db.execute(
                "INSERT INTO event_cursors (consumer, app_id, event_id, failures, last_error)"
                " SELECT ?, ?, coalesce(max(event_id), 0), 0, '' FROM status_events"
                " WHERE app_id = ? ON CONFLICT (consumer, app_id) DO UPDATE SET"
                " event_id = excluded.event_id, failures = 0, last_error = ''",
                (NOTICES_CONSUMER, app_id, app_id),
            )

    async def _add_credentials(
        self, db: aiosqlite.Connection, app_id: str, credentials: IssuedCredentials, now: int
    ) -> None:
        credential_id = secrets.token_hex(8)
        salt = new_salt()
        key_id, wrapped = self._keyring.wrap(
            credentials.hmac_key, _hmac_key_aad(app_id, credential_id)
        )
        await db.execute(
            "INSERT INTO app_credentials (credential_id, app_id, secret_salt, secret_hash,"
            " master_key_id, hmac_key, created_at, not_after) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
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

    async def _load_app(self, db: aiosqlite.Connection, app_id: str) -> App:
        cursor = await db.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,))
        row = await cursor.fetchone()
        if row is None:
            raise AppNotFound(f"no app named {app_id!r}")
        cursor = await db.execute(
            "SELECT network FROM app_networks WHERE app_id = ? ORDER BY network", (app_id,)
        )
        networks = tuple(ipaddress.ip_network(r["network"]) for r in await cursor.fetchall())
        cursor = await db.execute(
            "SELECT jid FROM app_jids WHERE app_id = ? ORDER BY jid", (app_id,)
        )
        jids = tuple(r["jid"] for r in await cursor.fetchall())
        cursor = await db.execute(
            "SELECT credential_id, created_at, not_after FROM app_credentials"
            " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?) ORDER BY created_at",
            (app_id, self._now()),
        )
        credentials = tuple(
            CredentialInfo(r["credential_id"], r["created_at"], r["not_after"])
            for r in await cursor.fetchall()
        )
        return App(
            app_id=row["app_id"],
            client_id=row["client_id"],
            display_name=row["display_name"],
            plan=row["plan"],
            callback_url=row["callback_url"],
            suspended=bool(row["suspended"]),
            networks=networks,
            jids=jids,
            credentials=credentials,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


class GatewayLock:
    """One gateway process's exclusive hold on a SQLite database, for its lifetime.

    Two gateways on one file would each dispatch the same outbox and count the same
    rates in memory. The hold is an OS lock on ``<database>.lock``, which the OS drops
    when the process ends, however it ends. Only the gateway takes it: ``cmaas admin``
    commands open the database beside a running gateway, as SQLite allows.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def take(cls, database: Path) -> GatewayLock:
        """Hold ``database`` for this process, without waiting.

        Raises:
            DatabaseInUse: Another process holds it.
            OSError: The lock file cannot be created or locked.
        """
        lock_path = database.with_name(database.name + ".lock")
        database.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock_exclusively(descriptor)
        except BlockingIOError:
            os.close(descriptor)
            raise DatabaseInUse(
                f"another gateway process uses the database {database} (it holds"
                f" {lock_path}): one SQLite file serves one gateway instance; to run"
                " several instances, give them one PostgreSQL database"
                " (CMAAS_DATABASE=postgresql://...)"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        return cls(descriptor)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the lock
            self._descriptor = None


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does; its -wal and -shm files follow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)


async def _migrate(connection: aiosqlite.Connection) -> None:
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    cursor = await connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    latest = MIGRATIONS[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this CMaaS supports ({latest})"
        )
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        # executescript commits what is pending first; BEGIN/COMMIT inside the script
        # make the migration and its bookkeeping row one atomic step. The only value
        # formatted in is the migration's own integer version.
        try:
            await connection.executescript(
                "BEGIN IMMEDIATE;\n"
                + migration.sql
                + "\nINSERT INTO schema_migrations (version, applied_at)"
                + f" VALUES ({int(migration.version)}, CAST(strftime('%s','now') AS INTEGER));"
                + "\nCOMMIT;"
            )
        except BaseException:
            if connection.in_transaction:
                await connection.execute("ROLLBACK")
            raise
