"""The keystore as both backends run it, on their :class:`~cmaas.keystore._db.Transactions`:
apps, plans, credentials, signing keys and the directory here, and the sub-stores."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence

from cmaas.keystore._db import Db, Runner, Transactions
from cmaas.keystore._rows import (
    app_from_rows,
    check_signing_key_room,
    hmac_key_aad,
    matching_credential,
    plan_from_row,
    priorities_text,
)
from cmaas.keystore.adhoc import SqlAdhocSessions
from cmaas.keystore.blobs import BlobContent, SqlBlobStore
from cmaas.keystore.credentials import MasterKeyring, hash_client_secret, new_salt
from cmaas.keystore.devices import SqlDeviceStore
from cmaas.keystore.errors import (
    AppAlreadyExists,
    AppNotFound,
    ClientIdTaken,
    JidAlreadyBound,
    PlanNotFound,
)
from cmaas.keystore.messages import SqlMessageStore
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
from cmaas.keystore.omemo import SqlOmemoStore
from cmaas.keystore.rates import SqlRateStore

__all__ = ["SqlKeystore"]


class SqlKeystore:
    """:class:`~cmaas.keystore.Keystore` on either backend.

    ``SqliteKeystore`` and ``PostgresKeystore`` are this with their own transactions,
    runners, opening and closing.

    Args:
        transactions: The backend's transactions and clock.
        write: Runs the outbox's and the blobs' writes (SQLite: a group commit).
        take: Runs key lookups, on every send's path (SQLite: one hop to a thread).
        blob_content: Where the bytes of blobs are kept.
        clock: Unix seconds, for the outbox's millisecond times.
        submit_slice: Messages stored per outbox operation
            (:attr:`~cmaas.keystore.messages.SqlMessageStore.submit_slice`).
    """

    def __init__(
        self,
        transactions: Transactions,
        keyring: MasterKeyring,
        *,
        write: Runner,
        take: Runner,
        clock: Callable[[], float],
        blob_content: BlobContent,
        submit_slice: int | None = None,
    ) -> None:
        self._tx = transactions
        self._keyring = keyring
        self._devices = SqlDeviceStore(transactions, take)
        self._omemo = SqlOmemoStore(transactions)
        self._blobs = SqlBlobStore(transactions, write, blob_content)
        self._adhoc_sessions = SqlAdhocSessions(transactions)
        self._messages = SqlMessageStore(
            transactions, write, lambda: int(clock() * 1000), submit_slice=submit_slice
        )
        self._rates = SqlRateStore(transactions, lambda: int(clock() * 1000))

    @property
    def devices(self) -> SqlDeviceStore:
        """Device identity keys and prekeys, on the same database."""
        return self._devices

    @property
    def omemo(self) -> SqlOmemoStore:
        """Apps' own OMEMO devices and bundles, on the same database."""
        return self._omemo

    @property
    def blobs(self) -> SqlBlobStore:
        """Who holds which encrypted file blob, until when, and its bytes."""
        return self._blobs

    @property
    def adhoc_sessions(self) -> SqlAdhocSessions:
        """Open ad-hoc command sessions, on the same database."""
        return self._adhoc_sessions

    @property
    def messages(self) -> SqlMessageStore:
        """The outbox, its status events and cursors, on the same database."""
        return self._messages

    @property
    def rates(self) -> SqlRateStore:
        """Rate buckets, for the instances that share the database."""
        return self._rates

    # Plans

    async def set_plan(self, plan: Plan) -> Plan:
        async with self._tx.write() as db:
            await db.run(
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
                    priorities_text(plan.priorities),
                    self._tx.now(),
                ),
            )
        return plan

    async def get_plan(self, name: str) -> Plan:
        async with self._tx.read() as db:
            row = await db.one("SELECT * FROM plans WHERE name = ?", (name,))
        if row is None:
            raise PlanNotFound(f"no plan named {name!r}")
        return plan_from_row(row)

    async def list_plans(self) -> Sequence[Plan]:
        async with self._tx.read() as db:
            return [plan_from_row(row) for row in await db.all("SELECT * FROM plans ORDER BY name")]

    # Apps

    async def create_app(self, new_app: NewApp, credentials: IssuedCredentials) -> App:
        now = self._tx.now()
        async with self._tx.write() as db:
            await _require_plan(db, new_app.plan)
            if await _app_exists(db, new_app.app_id):
                raise AppAlreadyExists(f"an app named {new_app.app_id!r} already exists")
            if await db.one("SELECT 1 FROM apps WHERE client_id = ?", (credentials.client_id,)):
                raise ClientIdTaken("client id collision; draw another")
            await db.run(
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
            await _replace_networks(db, new_app.app_id, new_app.networks)
            await _replace_jids(db, new_app.app_id, new_app.jids)
            await self._add_credentials(db, new_app.app_id, credentials, now)
            return await self._load_app(db, new_app.app_id)

    async def get_app(self, app_id: str) -> App:
        async with self._tx.read() as db:
            return await self._load_app(db, app_id)

    async def list_apps(self) -> Sequence[App]:
        async with self._tx.read() as db:
            rows = await db.all("SELECT app_id FROM apps ORDER BY app_id")
            return [await self._load_app(db, row["app_id"]) for row in rows]

    async def update_app(self, app_id: str, changes: AppChanges) -> App:
        async with self._tx.write() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            if changes.plan is not None:
                await _require_plan(db, changes.plan)
            # A value left out (None) keeps the column as it is.
            await db.run(
                "UPDATE apps SET display_name = coalesce(?, display_name),"
                " plan = coalesce(?, plan),"
                " callback_url = CASE WHEN ? THEN NULL ELSE coalesce(?, callback_url) END,"
                " suspended = coalesce(?, suspended), updated_at = ? WHERE app_id = ?",
                (
                    changes.display_name,
                    changes.plan,
                    changes.clear_callback_url,
                    changes.callback_url,
                    None if changes.suspended is None else int(changes.suspended),
                    self._tx.now(),
                    app_id,
                ),
            )
            if changes.networks is not None:
                await _replace_networks(db, app_id, changes.networks)
            if changes.jids is not None:
                await _replace_jids(db, app_id, changes.jids)
            return await self._load_app(db, app_id)

    async def rotate_credentials(
        self, app_id: str, credentials: IssuedCredentials, old_not_after: int
    ) -> App:
        now = self._tx.now()
        async with self._tx.write() as db:
            row = await db.one("SELECT client_id FROM apps WHERE app_id = ?", (app_id,))
            if row is None:
                raise AppNotFound(f"no app named {app_id!r}")
            if row["client_id"] != credentials.client_id:
                raise ValueError("rotation keeps the app's client id")
            await db.run(
                "UPDATE app_credentials SET not_after = ?"
                " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?)",
                (old_not_after, app_id, old_not_after),
            )
            await self._add_credentials(db, app_id, credentials, now)
            await db.run("UPDATE apps SET updated_at = ? WHERE app_id = ?", (now, app_id))
            return await self._load_app(db, app_id)

    async def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT c.credential_id, c.app_id, c.secret_salt, c.secret_hash,"
                " c.master_key_id, c.hmac_key FROM app_credentials c"
                " JOIN apps a ON a.app_id = c.app_id"
                " WHERE a.client_id = ? AND (c.not_after IS NULL OR c.not_after > ?)"
                " ORDER BY c.created_at DESC, c.rowid DESC",
                (client_id, self._tx.now()),
            )
            row = matching_credential(rows, client_secret)
            app = await self._load_app(db, row["app_id"])
        hmac_key = self._keyring.unwrap(
            row["master_key_id"],
            row["hmac_key"],
            hmac_key_aad(row["app_id"], row["credential_id"]),
        )
        return AuthenticatedApp(app=app, hmac_key=hmac_key)

    async def app_for_jid(self, jid: str) -> str | None:
        async with self._tx.read() as db:
            row = await db.one("SELECT app_id FROM app_jids WHERE jid = ?", (jid,))
        return None if row is None else str(row["app_id"])

    async def app_counters(self, app_id: str) -> AppCounters:
        day = self._tx.now() // 86400
        async with self._tx.read() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            rows = await db.all(
                "SELECT status, count(*) AS n FROM messages WHERE app_id = ? GROUP BY status",
                (app_id,),
            )
            row = await db.one(
                "SELECT count FROM daily_usage WHERE app_id = ? AND day = ?", (app_id, day)
            )
        return AppCounters(
            messages_by_status={r["status"]: int(r["n"]) for r in rows},
            submitted_today=int(row["count"]) if row else 0,
        )

    async def hmac_keys(self, app_id: str) -> list[bytes]:
        """The HMAC keys of the app's live credentials, newest first: the first signs
        its webhooks; any verifies its requests during a rotation's grace period.

        Raises: AppNotFound: No such app, or it has no live credentials.
        """
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT credential_id, master_key_id, hmac_key FROM app_credentials"
                " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?)"
                " ORDER BY created_at DESC, rowid DESC",
                (app_id, self._tx.now()),
            )
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
        async with self._tx.write() as db:
            if not await _app_exists(db, app_id):
                raise AppNotFound(f"no app named {app_id!r}")
            rows = await db.all(
                "SELECT fingerprint FROM app_signing_keys WHERE app_id = ? AND retired_at IS NULL",
                (app_id,),
            )
            active = {row["fingerprint"] for row in rows}
            if fingerprint in active:
                return False
            check_signing_key_room(len(active))
            await db.run(
                "INSERT INTO app_signing_keys (app_id, fingerprint, public_key, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (app_id, fingerprint) DO UPDATE SET"
                " retired_at = NULL",
                (app_id, fingerprint, public_key, self._tx.now()),
            )
            return True

    async def retire_signing_key(self, app_id: str, fingerprint: str) -> bool:
        """Stop accepting envelopes signed by this key; ``False`` if it was not active."""
        async with self._tx.write() as db:
            changed = await db.run(
                "UPDATE app_signing_keys SET retired_at = ?"
                " WHERE app_id = ? AND fingerprint = ? AND retired_at IS NULL",
                (self._tx.now(), app_id, fingerprint),
            )
            return changed > 0

    async def signing_keys(self, app_id: str) -> dict[str, bytes]:
        """The app's active signing keys: fingerprint to public key."""
        async with self._tx.read() as db:
            rows = await db.all(
                "SELECT fingerprint, public_key FROM app_signing_keys"
                " WHERE app_id = ? AND retired_at IS NULL ORDER BY created_at, fingerprint",
                (app_id,),
            )
        return {row["fingerprint"]: bytes(row["public_key"]) for row in rows}

    # Directory

    async def set_directory(self, address: str, kind: str, jid: str) -> DirectoryEntry:
        now = self._tx.now()
        async with self._tx.write() as db:
            await db.run(
                "INSERT INTO directory (address, kind, jid, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET jid = excluded.jid,"
                " kind = excluded.kind, updated_at = excluded.updated_at",
                (address, kind, jid, now),
            )
        return DirectoryEntry(address=address, kind=kind, jid=jid, updated_at=now)

    async def remove_directory(self, address: str) -> bool:
        async with self._tx.write() as db:
            return await db.run("DELETE FROM directory WHERE address = ?", (address,)) > 0

    async def resolve_address(self, address: str) -> str | None:
        async with self._tx.read() as db:
            row = await db.one("SELECT jid FROM directory WHERE address = ?", (address,))
        return None if row is None else str(row["jid"])

    # Master key rotation

    async def rewrap_hmac_keys(self) -> int:
        async with self._tx.write() as db:
            rows = await db.all(
                "SELECT credential_id, app_id, master_key_id, hmac_key FROM app_credentials"
            )
            count = 0
            for row in rows:
                if row["master_key_id"] == self._keyring.current_key_id:
                    continue
                aad = hmac_key_aad(row["app_id"], row["credential_id"])
                plain = self._keyring.unwrap(row["master_key_id"], row["hmac_key"], aad)
                key_id, wrapped = self._keyring.wrap(plain, aad)
                await db.run(
                    "UPDATE app_credentials SET master_key_id = ?, hmac_key = ?"
                    " WHERE credential_id = ?",
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
        await db.run(
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

    async def _load_app(self, db: Db, app_id: str) -> App:
        row = await db.one("SELECT * FROM apps WHERE app_id = ?", (app_id,))
        if row is None:
            raise AppNotFound(f"no app named {app_id!r}")
        networks = await db.all(
            "SELECT network FROM app_networks WHERE app_id = ? ORDER BY network", (app_id,)
        )
        jids = await db.all("SELECT jid FROM app_jids WHERE app_id = ? ORDER BY jid", (app_id,))
        credentials = await db.all(
            "SELECT credential_id, created_at, not_after FROM app_credentials"
            " WHERE app_id = ? AND (not_after IS NULL OR not_after > ?)"
            " ORDER BY created_at, rowid",
            (app_id, self._tx.now()),
        )
        return app_from_rows(row, networks, jids, credentials)


async def _app_exists(db: Db, app_id: str) -> bool:
    return await db.one("SELECT 1 FROM apps WHERE app_id = ?", (app_id,)) is not None


async def _require_plan(db: Db, name: str) -> None:
    if await db.one("SELECT 1 FROM plans WHERE name = ?", (name,)) is None:
        raise PlanNotFound(f"no plan named {name!r}")


async def _replace_networks(db: Db, app_id: str, networks: Iterable[object]) -> None:
    await db.run("DELETE FROM app_networks WHERE app_id = ?", (app_id,))
    await db.many(
        "INSERT INTO app_networks (app_id, network) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(app_id, str(network)) for network in networks],
    )


async def _replace_jids(db: Db, app_id: str, jids: Iterable[str]) -> None:
    wanted = sorted(set(jids))
    if wanted:
        placeholders = ",".join("?" * len(wanted))
        taken = await db.one(
            f"SELECT jid, app_id FROM app_jids WHERE app_id != ?"  # noqa: S608
            f" AND jid IN ({placeholders}) ORDER BY jid",
            (app_id, *wanted),
        )
        if taken is not None:
            raise JidAlreadyBound(f"{taken['jid']} is already bound to app {taken['app_id']!r}")
    had_jids = await db.one("SELECT 1 FROM app_jids WHERE app_id = ? LIMIT 1", (app_id,))
    await db.run("DELETE FROM app_jids WHERE app_id = ?", (app_id,))
    await db.many(
        "INSERT INTO app_jids (jid, app_id) VALUES (?, ?)", [(jid, app_id) for jid in wanted]
    )
    if wanted and had_jids is None:
        # Notices start now: the history from before the first JID is not replayed.
        await db.run(
            "INSERT INTO event_cursors (consumer, app_id, event_id, failures, last_error)"
            " SELECT ?, ?, coalesce(max(event_id), 0), 0, '' FROM status_events"
            " WHERE app_id = ? ON CONFLICT (consumer, app_id) DO UPDATE SET"
            " event_id = excluded.event_id, failures = 0, last_error = ''",
            (NOTICES_CONSUMER, app_id, app_id),
        )
