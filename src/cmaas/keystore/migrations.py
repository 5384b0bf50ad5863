"""Versioned schema migrations, applied in order, each in its own transaction.

Never edit a released migration: append a new one. The version reached is kept in
``schema_migrations`` so that an older binary refuses a newer database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from cmaas.keystore.errors import SchemaTooNew

__all__ = ["ADHOC_SESSIONS_VERSION", "MIGRATIONS", "Migration", "to_apply"]


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


def to_apply(current: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations a database at schema version ``current`` still needs, in order.

    Raises: SchemaTooNew: ``current`` is past the last of ``migrations``.
    """
    latest = migrations[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this CMaaS supports ({latest})"
        )
    return [migration for migration in migrations if migration.version > current]


ADHOC_SESSIONS_VERSION = 12
"""The migration that adds ``adhoc_sessions``, the same number on both backends."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "app accounts, plans, directory, devices and prekeys, messages and status events",
        """
        CREATE TABLE plans (
            name                 TEXT PRIMARY KEY,
            sustained_per_second REAL NOT NULL CHECK (sustained_per_second > 0),
            burst                INTEGER NOT NULL CHECK (burst >= 1),
            daily_quota          INTEGER CHECK (daily_quota IS NULL OR daily_quota >= 1),
            priorities           TEXT NOT NULL,
            updated_at           INTEGER NOT NULL
        ) STRICT;

        -- A plan for a first app, so that registration works out of the box.
        INSERT INTO plans VALUES ('default', 10, 50, 100000, 'high,normal,bulk',
                                  CAST(strftime('%s','now') AS INTEGER));

        CREATE TABLE apps (
            app_id        TEXT PRIMARY KEY,
            client_id     TEXT NOT NULL UNIQUE,
            display_name  TEXT NOT NULL,
            plan          TEXT NOT NULL REFERENCES plans(name) ON UPDATE CASCADE,
            callback_url  TEXT,
            suspended     INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
            created_at    INTEGER NOT NULL,
            updated_at    INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE app_credentials (
            credential_id  TEXT PRIMARY KEY,
            app_id         TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            secret_salt    BLOB NOT NULL,
            secret_hash    BLOB NOT NULL,
            master_key_id  TEXT NOT NULL,
            hmac_key       BLOB NOT NULL,  -- AES-256-GCM nonce || ciphertext
            created_at     INTEGER NOT NULL,
            not_after      INTEGER          -- NULL: valid until rotated
        ) STRICT;
        CREATE INDEX app_credentials_by_app ON app_credentials(app_id);

        CREATE TABLE app_networks (
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            network TEXT NOT NULL,
            PRIMARY KEY (app_id, network)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE app_jids (
            jid     TEXT PRIMARY KEY,
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX app_jids_by_app ON app_jids(app_id);

        -- Public halves of app signing keys; envelopes carry the fingerprint.
        CREATE TABLE app_signing_keys (
            app_id       TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            fingerprint  TEXT NOT NULL,
            public_key   BLOB NOT NULL,
            created_at   INTEGER NOT NULL,
            retired_at   INTEGER,
            PRIMARY KEY (app_id, fingerprint)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE directory (
            address     TEXT PRIMARY KEY,
            kind        TEXT NOT NULL CHECK (kind IN ('email', 'mobile')),
            jid         TEXT NOT NULL,
            updated_at  INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX directory_by_jid ON directory(jid);

        CREATE TABLE devices (
            jid            TEXT NOT NULL,
            device_id      INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
            identity_key   BLOB NOT NULL,
            suites         TEXT NOT NULL,
            spk_id         INTEGER NOT NULL,
            spk_public     BLOB NOT NULL,
            spk_signature  BLOB NOT NULL,
            label          TEXT,
            created_at     INTEGER NOT NULL,
            updated_at     INTEGER NOT NULL,
            revoked_at     INTEGER,
            PRIMARY KEY (jid, device_id)
        ) STRICT;

        -- One-time prekeys: a row is deleted when handed out, so none is given twice.
        CREATE TABLE one_time_prekeys (
            jid         TEXT NOT NULL,
            device_id   INTEGER NOT NULL,
            key_id      INTEGER NOT NULL,
            public_key  BLOB NOT NULL,
            signature   BLOB NOT NULL,
            PRIMARY KEY (jid, device_id, key_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE messages (
            app_id         TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            message_id     TEXT NOT NULL,
            recipient      TEXT NOT NULL,   -- as submitted: JID, email or E.164
            recipient_jid  TEXT,            -- once resolved
            priority       INTEGER NOT NULL CHECK (priority IN (0, 1, 2)),
            status         TEXT NOT NULL CHECK (status IN
                ('accepted', 'dispatched', 'delivered', 'read', 'failed', 'expired')),
            request_sha256 BLOB NOT NULL,   -- idempotency: same id, same request
            envelope       BLOB NOT NULL,   -- sealed; the gateway never sees plaintext
            expires_at     INTEGER NOT NULL,
            created_at     INTEGER NOT NULL,
            updated_at     INTEGER NOT NULL,
            PRIMARY KEY (app_id, message_id)
        ) STRICT;
        CREATE INDEX messages_outbox ON messages(status, priority, created_at)
            WHERE status = 'accepted';
        CREATE INDEX messages_by_app_day ON messages(app_id, created_at);

        CREATE TABLE status_events (
            event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
            app_id      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            status      TEXT NOT NULL,
            device_id   INTEGER,
            detail      TEXT NOT NULL DEFAULT '',
            at_ms       INTEGER NOT NULL,
            FOREIGN KEY (app_id, message_id) REFERENCES messages(app_id, message_id)
                ON DELETE CASCADE
        ) STRICT;
        CREATE INDEX status_events_by_message ON status_events(app_id, message_id);
        """,
    ),
    Migration(
        2,
        "devices: when the owner was last told its one-time prekey pool runs low",
        """
        -- NULL: not told during the current low-pool episode; a publish that adds
        -- one-time prekeys ends the episode by setting it back to NULL.
        ALTER TABLE devices ADD COLUMN low_notified_at INTEGER;
        """,
    ),
    Migration(
        3,
        "one-time prekeys handed out, so that a publish retried after a lost reply is idempotent",
        """
        -- A device that did not hear the answer to its publish sends the same keys again.
        -- Keys still in the pool are then skipped; keys already handed out must not come
        -- back, or two senders could seal to one one-time prekey. Rows older than the
        -- longest envelope lifetime are purged on the device's next publish.
        CREATE TABLE taken_prekeys (
            jid        TEXT NOT NULL,
            device_id  INTEGER NOT NULL,
            key_id     INTEGER NOT NULL,
            taken_at   INTEGER NOT NULL,
            PRIMARY KEY (jid, device_id, key_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    Migration(
        4,
        "the durable outbox: messages, status events, consumers' cursors, nonces, daily usage",
        """
        -- Migration 1 reserved these two tables, but nothing ever wrote to them; the
        -- outbox needs a stable sequence number per message, so they are made anew.
        DROP TABLE status_events;
        DROP TABLE messages;

        CREATE TABLE messages (
            seq             INTEGER PRIMARY KEY,
            app_id          TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            message_id      TEXT NOT NULL,
            recipient       TEXT NOT NULL,   -- as submitted: JID, email or E.164
            recipient_jid   TEXT,            -- NULL when it did not resolve
            priority        INTEGER NOT NULL CHECK (priority IN (0, 1, 2)),
            status          TEXT NOT NULL CHECK (status IN
                ('accepted', 'dispatched', 'delivered', 'read', 'failed', 'expired')),
            detail          TEXT NOT NULL DEFAULT '',
            request_sha256  BLOB NOT NULL,   -- idempotency: same id, same request
            envelope        BLOB,            -- sealed; dropped once no resend can need it
            expires_ms      INTEGER NOT NULL,
            created_ms      INTEGER NOT NULL,
            dispatched_ms   INTEGER,
            updated_ms      INTEGER NOT NULL,
            UNIQUE (app_id, message_id)
        ) STRICT;
        CREATE INDEX messages_pending ON messages(status, seq)
            WHERE status IN ('accepted', 'dispatched');
        CREATE INDEX messages_finished ON messages(updated_ms)
            WHERE status NOT IN ('accepted', 'dispatched');

        -- AUTOINCREMENT: an event id is never reused, so consumers' cursors only advance.
        CREATE TABLE status_events (
            event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
            seq         INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
            app_id      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            status      TEXT NOT NULL,
            device      TEXT NOT NULL DEFAULT '',
            detail      TEXT NOT NULL DEFAULT '',
            at_ms       INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX status_events_by_app ON status_events(app_id, event_id);
        CREATE INDEX status_events_by_message ON status_events(seq, device);

        -- How far each consumer (webhooks, XMPP notices) has delivered an app's events.
        CREATE TABLE event_cursors (
            consumer    TEXT NOT NULL,
            app_id      TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            event_id    INTEGER NOT NULL,
            failures    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (consumer, app_id)
        ) STRICT, WITHOUT ROWID;

        -- Request nonces seen inside the signature window, kept across restarts.
        CREATE TABLE request_nonces (
            client_id   TEXT NOT NULL,
            nonce       TEXT NOT NULL,
            expires_at  INTEGER NOT NULL,
            PRIMARY KEY (client_id, nonce)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX request_nonces_by_expiry ON request_nonces(expires_at);

        -- Messages accepted per app and UTC day, for the plan's daily quota.
        CREATE TABLE daily_usage (
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            day     INTEGER NOT NULL,
            count   INTEGER NOT NULL,
            PRIMARY KEY (app_id, day)
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    Migration(
        5,
        "encrypted file blobs: who uploaded each, its size and its expiry",
        """
        -- The blob's bytes live in files named by blob_id; this table holds what the
        -- quota, the expiry sweep and downloads need. blob_id is the capability.
        CREATE TABLE blobs (
            blob_id     TEXT PRIMARY KEY,
            app_id      TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            size        INTEGER NOT NULL CHECK (size >= 0),
            created_ms  INTEGER NOT NULL,
            expires_ms  INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX blobs_by_app ON blobs(app_id, expires_ms);
        CREATE INDEX blobs_by_expiry ON blobs(expires_ms);
        """,
    ),
    Migration(
        6,
        "messages: the devices each envelope is sealed to, the only ones that may report on it",
        """
        -- Comma-separated device ids; NULL for messages stored before this column, which
        -- keep accepting any device's report.
        ALTER TABLE messages ADD COLUMN sealed_to TEXT;
        """,
    ),
    Migration(
        7,
        "one-time prekeys handed to each app per recipient device, within a window",
        """
        -- An app may take only so many of a device's one-time prekeys per window; beyond
        -- that its lookups carry the signed prekey alone. Without it, any app could drain
        -- every user's pool. A row's window starts with its first hand-out; stale rows of
        -- a recipient are deleted by the next lookup of that recipient.
        CREATE TABLE prekey_handouts (
            jid           TEXT NOT NULL,
            device_id     INTEGER NOT NULL,
            app_id        TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            window_start  INTEGER NOT NULL,
            handed        INTEGER NOT NULL CHECK (handed >= 0),
            PRIMARY KEY (jid, device_id, app_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    Migration(
        8,
        "apps' own legacy OMEMO devices and their bundles, served as the app JIDs' PEP",
        """
        -- Public keys only: the client service keeps the private halves. A bundle is
        -- replaced whole on each publish, as a PEP item is.
        CREATE TABLE app_omemo_devices (
            app_id         TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            device_id      INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
            identity_key   BLOB NOT NULL,
            spk_id         INTEGER NOT NULL CHECK (spk_id BETWEEN 1 AND 2147483647),
            spk_public     BLOB NOT NULL,
            spk_signature  BLOB NOT NULL,
            created_at     INTEGER NOT NULL,
            updated_at     INTEGER NOT NULL,
            PRIMARY KEY (app_id, device_id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE app_omemo_prekeys (
            app_id      TEXT NOT NULL,
            device_id   INTEGER NOT NULL,
            prekey_id   INTEGER NOT NULL CHECK (prekey_id BETWEEN 1 AND 2147483647),
            public_key  BLOB NOT NULL,
            PRIMARY KEY (app_id, device_id, prekey_id),
            FOREIGN KEY (app_id, device_id) REFERENCES app_omemo_devices(app_id, device_id)
                ON DELETE CASCADE
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    Migration(
        9,
        "legacy OMEMO beside the envelope: a message's <encrypted/> element, and what people's"
        " clients send back to app JIDs",
        """
        -- A message carries an envelope, an OMEMO element, or both; each is kept only
        -- while a resend may need it, as the envelope always was.
        ALTER TABLE messages ADD COLUMN omemo BLOB;

        -- <encrypted/> elements addressed to app JIDs (replies and key transports),
        -- opaque here, until the app's client service has read them or they are old.
        CREATE TABLE omemo_inbound (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            app_id       TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            sender       TEXT NOT NULL,
            xml          BLOB NOT NULL,
            received_ms  INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX omemo_inbound_by_app ON omemo_inbound(app_id, seq);
        """,
    ),
    Migration(
        10,
        "gateway instances sharing one database: each registers with an epoch and heartbeats;"
        " each message is owned by the instance that dispatches it",
        """
        -- One row per gateway process ever started; its epoch fences it. Times in unix
        -- milliseconds (the database's own clock where it has one).
        CREATE TABLE gateway_instances (
            epoch         INTEGER PRIMARY KEY AUTOINCREMENT,
            name          TEXT NOT NULL,
            started_at    INTEGER NOT NULL,
            heartbeat_at  INTEGER NOT NULL,
            fenced_at     INTEGER          -- NULL: alive, as far as anyone knows
        ) STRICT;
        CREATE INDEX gateway_instances_live ON gateway_instances(heartbeat_at)
            WHERE fenced_at IS NULL;

        -- The instance that leads (runs the periodic jobs and the event consumers): its
        -- epoch fences the consumers' cursor writes of a leader deposed meanwhile.
        CREATE TABLE gateway_leader (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            epoch  INTEGER NOT NULL,
            since  INTEGER NOT NULL
        ) STRICT;

        -- The epoch of the instance that admitted the message or took it over. NULL (rows
        -- from before this migration): owned by nobody, taken over by the first instance.
        ALTER TABLE messages ADD COLUMN owner INTEGER;
        CREATE INDEX messages_by_owner ON messages(owner, status)
            WHERE status IN ('accepted', 'dispatched');
        """,
    ),
    Migration(
        11,
        "rate buckets shared by the gateway instances: one row per app and operation",
        """
        -- A token bucket per app and operation, for the instances that share the
        -- database: tokens left as of updated_ms (unix milliseconds, the database's clock
        -- where it has one). By full_ms it has refilled to its burst: the row is then
        -- the same as none (a new bucket is full), and is purged.
        CREATE TABLE rate_buckets (
            key         TEXT PRIMARY KEY,
            tokens      REAL NOT NULL,
            updated_ms  INTEGER NOT NULL,
            full_ms     INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX rate_buckets_by_full ON rate_buckets(full_ms);
        """,
    ),
    Migration(
        ADHOC_SESSIONS_VERSION,
        "ad-hoc command sessions, so that any gateway instance can take a session's next step",
        """
        -- One row per open session (XEP-0050): the step its next form belongs to and
        -- the little state the command keeps between steps. Keyed by the SHA-256 of the
        -- session id: the id itself is never stored. Times in unix milliseconds;
        -- updated_ms is the last submitted form, which the idle bound counts from.
        CREATE TABLE adhoc_sessions (
            session_key  TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,          -- the full JID that opened it
            owner_bare   TEXT NOT NULL,
            node         TEXT NOT NULL,
            access       TEXT NOT NULL,          -- the command's access class
            step         TEXT NOT NULL,
            state        TEXT NOT NULL,          -- a JSON object
            busy         INTEGER NOT NULL DEFAULT 0 CHECK (busy IN (0, 1)),
            created_ms   INTEGER NOT NULL,
            updated_ms   INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX adhoc_sessions_by_account ON adhoc_sessions(owner_bare);
        CREATE INDEX adhoc_sessions_by_access ON adhoc_sessions(access);
        CREATE INDEX adhoc_sessions_by_age ON adhoc_sessions(created_ms);
        """,
    ),
    Migration(
        13,
        "the bytes of blobs as rows, where the database is shared by several instances",
        """
        -- PostgreSQL keeps each blob's bytes here, in chunks of 256 KiB numbered from 0;
        -- a SQLite gateway keeps them in files and leaves this table empty. The chunks
        -- are written before their blob's row, in the same transaction: the foreign
        -- key is checked at commit. Deleting the blob (its expiry) deletes them.
        CREATE TABLE blob_chunks (
            blob_id  TEXT NOT NULL REFERENCES blobs(blob_id) ON DELETE CASCADE
                         DEFERRABLE INITIALLY DEFERRED,
            seq      INTEGER NOT NULL CHECK (seq >= 0),
            data     BLOB NOT NULL,
            PRIMARY KEY (blob_id, seq)
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    Migration(
        14,
        "each gateway instance declares after how long a silence it is taken for dead",
        """
        -- CMAAS_DEAD_AFTER of the instance, in milliseconds (NULL: an instance of an
        -- earlier version, which declared nothing). Another instance takes it for dead
        -- only after the longer of this and its own setting.
        ALTER TABLE gateway_instances ADD COLUMN dead_after_ms INTEGER;
        """,
    ),
)
