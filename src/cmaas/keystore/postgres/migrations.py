"""The PostgreSQL schema, as versioned migrations that follow SQLite's.

Version numbers are SQLite's (:data:`cmaas.keystore.migrations.MIGRATIONS`): the first
migration here brings a new database to what SQLite has after its migration 9, and each
later SQLite migration gets a counterpart here with the same number, so that one
``schema_version`` means one schema on both backends. Never edit a released migration:
append a new one.

What differs from SQLite, and why:

* ``BIGINT`` for times, counts and sizes; ``BYTEA`` for keys and sealed payloads.
* Identity columns where SQLite has ``INTEGER PRIMARY KEY`` (``seq``, ``event_id``).
* ``app_credentials.rowid`` and ``devices.rowid``: the insertion order that SQLite's
  implicit ``rowid`` gives, under the same name, so that the stores' one SQL text,
  which breaks ties between equal timestamps with it, serves both backends.
"""

from __future__ import annotations

from cmaas.keystore.migrations import ADHOC_SESSIONS_VERSION, Migration

__all__ = ["MIGRATIONS"]

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        9,
        "the schema of SQLite's migrations 1 to 9: apps, plans, directory, devices and"
        " prekeys, the outbox, blobs, apps' OMEMO devices and inbound OMEMO",
        """
        CREATE TABLE plans (
            name                 TEXT PRIMARY KEY,
            sustained_per_second DOUBLE PRECISION NOT NULL CHECK (sustained_per_second > 0),
            burst                BIGINT NOT NULL CHECK (burst >= 1),
            daily_quota          BIGINT CHECK (daily_quota IS NULL OR daily_quota >= 1),
            priorities           TEXT NOT NULL,
            updated_at           BIGINT NOT NULL
        );

        -- A plan for a first app, so that registration works out of the box.
        INSERT INTO plans VALUES ('default', 10, 50, 100000, 'high,normal,bulk',
                                  extract(epoch FROM now())::bigint);

        CREATE TABLE apps (
            app_id        TEXT PRIMARY KEY,
            client_id     TEXT NOT NULL UNIQUE,
            display_name  TEXT NOT NULL,
            plan          TEXT NOT NULL REFERENCES plans(name) ON UPDATE CASCADE,
            callback_url  TEXT,
            suspended     SMALLINT NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
            created_at    BIGINT NOT NULL,
            updated_at    BIGINT NOT NULL
        );

        CREATE TABLE app_credentials (
            credential_id  TEXT PRIMARY KEY,
            app_id         TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            secret_salt    BYTEA NOT NULL,
            secret_hash    BYTEA NOT NULL,
            master_key_id  TEXT NOT NULL,
            hmac_key       BYTEA NOT NULL,  -- AES-256-GCM nonce || ciphertext
            created_at     BIGINT NOT NULL,
            not_after      BIGINT,          -- NULL: valid until rotated
            rowid          BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX app_credentials_by_app ON app_credentials(app_id);

        CREATE TABLE app_networks (
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            network TEXT NOT NULL,
            PRIMARY KEY (app_id, network)
        );

        CREATE TABLE app_jids (
            jid     TEXT PRIMARY KEY,
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE
        );
        CREATE INDEX app_jids_by_app ON app_jids(app_id);

        -- Public halves of app signing keys; envelopes carry the fingerprint.
        CREATE TABLE app_signing_keys (
            app_id       TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            fingerprint  TEXT NOT NULL,
            public_key   BYTEA NOT NULL,
            created_at   BIGINT NOT NULL,
            retired_at   BIGINT,
            PRIMARY KEY (app_id, fingerprint)
        );

        CREATE TABLE directory (
            address     TEXT PRIMARY KEY,
            kind        TEXT NOT NULL CHECK (kind IN ('email', 'mobile')),
            jid         TEXT NOT NULL,
            updated_at  BIGINT NOT NULL
        );
        CREATE INDEX directory_by_jid ON directory(jid);

        CREATE TABLE devices (
            jid              TEXT NOT NULL,
            device_id        INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
            identity_key     BYTEA NOT NULL,
            suites           TEXT NOT NULL,
            spk_id           INTEGER NOT NULL,
            spk_public       BYTEA NOT NULL,
            spk_signature    BYTEA NOT NULL,
            label            TEXT,
            created_at       BIGINT NOT NULL,
            updated_at       BIGINT NOT NULL,
            revoked_at       BIGINT,
            -- NULL: not told during the current low-pool episode.
            low_notified_at  BIGINT,
            rowid            BIGINT GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (jid, device_id)
        );

        -- One-time prekeys: a row is deleted when handed out, so none is given twice.
        CREATE TABLE one_time_prekeys (
            jid         TEXT NOT NULL,
            device_id   INTEGER NOT NULL,
            key_id      INTEGER NOT NULL,
            public_key  BYTEA NOT NULL,
            signature   BYTEA NOT NULL,
            PRIMARY KEY (jid, device_id, key_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        );

        -- Keys handed out, so that a publish retried after a lost reply cannot bring
        -- them back.
        CREATE TABLE taken_prekeys (
            jid        TEXT NOT NULL,
            device_id  INTEGER NOT NULL,
            key_id     INTEGER NOT NULL,
            taken_at   BIGINT NOT NULL,
            PRIMARY KEY (jid, device_id, key_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        );

        -- One-time prekeys handed to each app per recipient device, within a window.
        CREATE TABLE prekey_handouts (
            jid           TEXT NOT NULL,
            device_id     INTEGER NOT NULL,
            app_id        TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            window_start  BIGINT NOT NULL,
            handed        BIGINT NOT NULL CHECK (handed >= 0),
            PRIMARY KEY (jid, device_id, app_id),
            FOREIGN KEY (jid, device_id) REFERENCES devices(jid, device_id) ON DELETE CASCADE
        );

        CREATE TABLE messages (
            seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_id          TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            message_id      TEXT NOT NULL,
            recipient       TEXT NOT NULL,   -- as submitted: JID, email or E.164
            recipient_jid   TEXT,            -- NULL when it did not resolve
            priority        SMALLINT NOT NULL CHECK (priority IN (0, 1, 2)),
            status          TEXT NOT NULL CHECK (status IN
                ('accepted', 'dispatched', 'delivered', 'read', 'failed', 'expired')),
            detail          TEXT NOT NULL DEFAULT '',
            request_sha256  BYTEA NOT NULL,  -- idempotency: same id, same request
            envelope        BYTEA,           -- sealed; dropped once no resend can need it
            omemo           BYTEA,           -- likewise, the legacy OMEMO element
            expires_ms      BIGINT NOT NULL,
            created_ms      BIGINT NOT NULL,
            dispatched_ms   BIGINT,
            updated_ms      BIGINT NOT NULL,
            -- The devices each envelope is sealed to, comma-separated.
            sealed_to       TEXT,
            UNIQUE (app_id, message_id)
        );
        CREATE INDEX messages_pending ON messages(status, seq)
            WHERE status IN ('accepted', 'dispatched');
        CREATE INDEX messages_finished ON messages(updated_ms)
            WHERE status NOT IN ('accepted', 'dispatched');

        -- An event id is never reused, so consumers' cursors only advance.
        CREATE TABLE status_events (
            event_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            seq         BIGINT NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
            app_id      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            status      TEXT NOT NULL,
            device      TEXT NOT NULL DEFAULT '',
            detail      TEXT NOT NULL DEFAULT '',
            at_ms       BIGINT NOT NULL
        );
        CREATE INDEX status_events_by_app ON status_events(app_id, event_id);
        CREATE INDEX status_events_by_message ON status_events(seq, device);

        CREATE TABLE event_cursors (
            consumer    TEXT NOT NULL,
            app_id      TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            event_id    BIGINT NOT NULL,
            failures    BIGINT NOT NULL DEFAULT 0,
            last_error  TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (consumer, app_id)
        );

        CREATE TABLE request_nonces (
            client_id   TEXT NOT NULL,
            nonce       TEXT NOT NULL,
            expires_at  BIGINT NOT NULL,
            PRIMARY KEY (client_id, nonce)
        );
        CREATE INDEX request_nonces_by_expiry ON request_nonces(expires_at);

        CREATE TABLE daily_usage (
            app_id  TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            day     BIGINT NOT NULL,
            count   BIGINT NOT NULL,
            PRIMARY KEY (app_id, day)
        );

        CREATE TABLE blobs (
            blob_id     TEXT PRIMARY KEY,
            app_id      TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            size        BIGINT NOT NULL CHECK (size >= 0),
            created_ms  BIGINT NOT NULL,
            expires_ms  BIGINT NOT NULL
        );
        CREATE INDEX blobs_by_app ON blobs(app_id, expires_ms);
        CREATE INDEX blobs_by_expiry ON blobs(expires_ms);

        CREATE TABLE app_omemo_devices (
            app_id         TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            device_id      INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
            identity_key   BYTEA NOT NULL,
            spk_id         INTEGER NOT NULL CHECK (spk_id BETWEEN 1 AND 2147483647),
            spk_public     BYTEA NOT NULL,
            spk_signature  BYTEA NOT NULL,
            created_at     BIGINT NOT NULL,
            updated_at     BIGINT NOT NULL,
            PRIMARY KEY (app_id, device_id)
        );

        CREATE TABLE app_omemo_prekeys (
            app_id      TEXT NOT NULL,
            device_id   INTEGER NOT NULL,
            prekey_id   INTEGER NOT NULL CHECK (prekey_id BETWEEN 1 AND 2147483647),
            public_key  BYTEA NOT NULL,
            PRIMARY KEY (app_id, device_id, prekey_id),
            FOREIGN KEY (app_id, device_id) REFERENCES app_omemo_devices(app_id, device_id)
                ON DELETE CASCADE
        );

        CREATE TABLE omemo_inbound (
            seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_id       TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
            sender       TEXT NOT NULL,
            xml          BYTEA NOT NULL,
            received_ms  BIGINT NOT NULL
        );
        CREATE INDEX omemo_inbound_by_app ON omemo_inbound(app_id, seq);
        """,
    ),
    Migration(
        10,
        "gateway instances sharing one database: each registers with an epoch and heartbeats;"
        " each message is owned by the instance that dispatches it",
        """
        CREATE TABLE gateway_instances (
            epoch         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name          TEXT NOT NULL,
            started_at    BIGINT NOT NULL,
            heartbeat_at  BIGINT NOT NULL,
            fenced_at     BIGINT
        );
        CREATE INDEX gateway_instances_live ON gateway_instances(heartbeat_at)
            WHERE fenced_at IS NULL;

        CREATE TABLE gateway_leader (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            epoch  BIGINT NOT NULL,
            since  BIGINT NOT NULL
        );

        ALTER TABLE messages ADD COLUMN owner BIGINT;
        CREATE INDEX messages_by_owner ON messages(owner, status)
            WHERE status IN ('accepted', 'dispatched');
        """,
    ),
    Migration(
        11,
        "rate buckets shared by the gateway instances: one row per app and operation",
        """
        CREATE TABLE rate_buckets (
            key         TEXT PRIMARY KEY,
            tokens      DOUBLE PRECISION NOT NULL,
            updated_ms  BIGINT NOT NULL,
            full_ms     BIGINT NOT NULL
        );
        CREATE INDEX rate_buckets_by_full ON rate_buckets(full_ms);
        """,
    ),
    Migration(
        ADHOC_SESSIONS_VERSION,
        "ad-hoc command sessions, so that any gateway instance can take a session's next step",
        """
        CREATE TABLE adhoc_sessions (
            session_key  TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            owner_bare   TEXT NOT NULL,
            node         TEXT NOT NULL,
            access       TEXT NOT NULL,
            step         TEXT NOT NULL,
            state        TEXT NOT NULL,
            busy         SMALLINT NOT NULL DEFAULT 0 CHECK (busy IN (0, 1)),
            created_ms   BIGINT NOT NULL,
            updated_ms   BIGINT NOT NULL
        );
        CREATE INDEX adhoc_sessions_by_account ON adhoc_sessions(owner_bare);
        CREATE INDEX adhoc_sessions_by_access ON adhoc_sessions(access);
        CREATE INDEX adhoc_sessions_by_age ON adhoc_sessions(created_ms);
        """,
    ),
    Migration(
        13,
        "the bytes of blobs as rows, where the database is shared by several instances",
        """
        CREATE TABLE blob_chunks (
            blob_id  TEXT NOT NULL REFERENCES blobs(blob_id) ON DELETE CASCADE
                         DEFERRABLE INITIALLY DEFERRED,
            seq      INTEGER NOT NULL CHECK (seq >= 0),
            data     BYTEA NOT NULL,
            PRIMARY KEY (blob_id, seq)
        );
        -- Ciphertext does not compress: stored out of line (TOAST) as it is, without
        -- a compression attempt on every chunk.
        ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
        """,
    ),
    Migration(
        14,
        "each gateway instance declares after how long a silence it is taken for dead",
        """
        -- CMAAS_DEAD_AFTER of the instance, in milliseconds (NULL: an instance of an
        -- earlier version, which declared nothing). Another instance takes it for dead
        -- only after the longer of this and its own setting.
        ALTER TABLE gateway_instances ADD COLUMN dead_after_ms BIGINT;
        """,
    ),
)
