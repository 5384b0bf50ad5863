"""Settings: one frozen object from the environment and a .env file, with clear errors."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from cmaas.delivery.omemo import OmemoLimits
from cmaas.settings import PostgresDatabase, Settings, SettingsError, load_settings

KEY = base64.b64encode(b"k" * 32).decode()
BASE = {
    "CMAAS_COMPONENT_JID": "gateway.example.org",
    "CMAAS_COMPONENT_SECRET": "s3cret",
    "CMAAS_MASTER_KEY": KEY,
}


def test_defaults() -> None:
    settings = load_settings(BASE, env_file=None)
    assert settings.component_jid == "gateway.example.org"
    assert (settings.xmpp_host, settings.xmpp_port) == ("127.0.0.1", 5347)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8480)
    assert settings.database == Path("cmaas.sqlite3")
    assert settings.admins == frozenset()
    assert settings.served_domains == frozenset({"example.org"})
    assert settings.adhoc_session_timeout == 300.0
    assert settings.adhoc_session_lifetime == 900.0
    assert settings.adhoc_sessions_per_account == 4
    assert (
        settings.adhoc_admin_sessions,
        settings.adhoc_user_sessions,
        settings.adhoc_app_sessions,
    ) == (100, 2000, 1000)
    assert settings.xmpp_max_depth == 32
    assert (settings.prekeys_per_app, settings.prekeys_per_app_window) == (10, 3600.0)
    assert settings.revoked_devices_kept == 32
    assert (settings.omemo_max_devices, settings.omemo_max_prekeys) == (16, 100)
    assert OmemoLimits() == OmemoLimits(settings.omemo_max_devices, settings.omemo_max_prekeys)
    assert settings.master_key == b"k" * 32
    assert settings.previous_master_key is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.xmpp_port = 1  # type: ignore[misc]


def test_secrets_stay_out_of_repr() -> None:
    text = repr(load_settings(BASE, env_file=None))
    assert "s3cret" not in text
    assert "master_key" not in text


def test_values_are_parsed_and_normalised() -> None:
    settings = load_settings(
        {
            **BASE,
            "CMAAS_COMPONENT_JID": "Gateway.Example.ORG",
            "CMAAS_ADMINS": "Admin@Example.org, ops@example.org ,",
            "CMAAS_SERVED_DOMAINS": "example.org,example.net",
            "CMAAS_TRUSTED_PROXIES": "10.0.0.0/8, ::1/128",
            "CMAAS_XMPP_PORT": "5348",
            "CMAAS_LOG_LEVEL": "debug",
        },
        env_file=None,
    )
    assert settings.component_jid == "gateway.example.org"
    assert settings.admins == frozenset({"admin@example.org", "ops@example.org"})
    assert settings.served_domains == frozenset({"example.org", "example.net"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert settings.xmpp_port == 5348
    assert settings.log_level == "DEBUG"
    omemo = load_settings(
        {**BASE, "CMAAS_OMEMO_MAX_DEVICES": "3", "CMAAS_OMEMO_MAX_PREKEYS": "20"}, env_file=None
    )
    assert (omemo.omemo_max_devices, omemo.omemo_max_prekeys) == (3, 20)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "CMAAS_COMPONENT_JID=gw.example.org\nCMAAS_COMPONENT_SECRET=from-file\n"
        f"CMAAS_MASTER_KEY={KEY}\nCMAAS_HTTP_PORT=9000\n"
    )
    settings = load_settings({"CMAAS_HTTP_PORT": "9001"}, env_file=env_file)
    assert settings.component_jid == "gw.example.org"
    assert settings.component_secret == "from-file"
    assert settings.http_port == 9001


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"CMAAS_COMPONENT_JID": ""}, "CMAAS_COMPONENT_JID is required"),
        ({"CMAAS_COMPONENT_JID": "user@gw.example.org"}, "CMAAS_COMPONENT_JID"),
        ({"CMAAS_COMPONENT_SECRET": " "}, "CMAAS_COMPONENT_SECRET is required"),
        ({"CMAAS_MASTER_KEY": "not base64!"}, "CMAAS_MASTER_KEY is not valid base64"),
        ({"CMAAS_MASTER_KEY": base64.b64encode(b"short").decode()}, "32 bytes"),
        ({"CMAAS_PREVIOUS_MASTER_KEY": KEY}, "must differ"),
        ({"CMAAS_XMPP_PORT": "70000"}, "CMAAS_XMPP_PORT must be a TCP port"),
        ({"CMAAS_HTTP_PORT": "http"}, "CMAAS_HTTP_PORT must be a TCP port"),
        ({"CMAAS_ADMINS": "not a jid@@"}, "CMAAS_ADMINS"),
        ({"CMAAS_ADMINS": "example.org"}, "CMAAS_ADMINS"),
        ({"CMAAS_TRUSTED_PROXIES": "10.0.0.0/40"}, "CMAAS_TRUSTED_PROXIES"),
        ({"CMAAS_ADHOC_SESSION_TIMEOUT": "0"}, "CMAAS_ADHOC_SESSION_TIMEOUT"),
        ({"CMAAS_RECONNECT_MAX_DELAY": "soon"}, "CMAAS_RECONNECT_MAX_DELAY"),
        ({"CMAAS_LOG_LEVEL": "LOUD"}, "CMAAS_LOG_LEVEL"),
        ({"CMAAS_ADHOC_SESSION_LIFETIME": "60"}, "CMAAS_ADHOC_SESSION_LIFETIME"),
        ({"CMAAS_ADHOC_SESSIONS_PER_ACCOUNT": "0"}, "CMAAS_ADHOC_SESSIONS_PER_ACCOUNT"),
        ({"CMAAS_ADHOC_USER_SESSIONS": "many"}, "CMAAS_ADHOC_USER_SESSIONS"),
        ({"CMAAS_XMPP_MAX_DEPTH": "2"}, "CMAAS_XMPP_MAX_DEPTH"),
        ({"CMAAS_PREKEYS_PER_APP": "0"}, "CMAAS_PREKEYS_PER_APP"),
        ({"CMAAS_PREKEYS_PER_APP_WINDOW": "-1"}, "CMAAS_PREKEYS_PER_APP_WINDOW"),
        ({"CMAAS_REVOKED_DEVICES_KEPT": "0"}, "CMAAS_REVOKED_DEVICES_KEPT"),
        ({"CMAAS_OMEMO_MAX_DEVICES": "0"}, "CMAAS_OMEMO_MAX_DEVICES"),
        ({"CMAAS_OMEMO_MAX_PREKEYS": "1001"}, "CMAAS_OMEMO_MAX_PREKEYS"),
        ({"CMAAS_INSTANCE_HOST": "gw a.example"}, "CMAAS_INSTANCE_HOST"),
        ({"CMAAS_INSTANCE_HOST": "gateway.example.org"}, "CMAAS_INSTANCE_HOST must be a host"),
    ],
)
def test_bad_values_name_the_variable(changes: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings({**BASE, **changes}, env_file=None)


def test_instance_host_defaults_to_none_and_parses() -> None:
    assert load_settings(BASE, env_file=None).instance_host is None
    given = {**BASE, "CMAAS_INSTANCE_HOST": " GW-A.gateway.example.org "}
    assert load_settings(given, env_file=None).instance_host == "gw-a.gateway.example.org"


def test_settings_type_is_frozen() -> None:
    assert Settings.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_http_door_settings_default_and_parse() -> None:
    defaults = load_settings(BASE, env_file=None)
    assert (
        defaults.http_header_timeout,
        defaults.http_body_timeout,
        defaults.http_max_connections,
        defaults.http_max_connections_per_ip,
        defaults.http_max_requests_per_app,
        defaults.http_max_long_polls_per_app,
        defaults.http_max_bodies_in_flight,
        defaults.blob_max_count,
        defaults.webhook_deny_private,
    ) == (10.0, 30.0, 900, 100, 64, 8, 64, 10_000, False)
    given = load_settings(
        {
            **BASE,
            "CMAAS_HTTP_HEADER_TIMEOUT": "2.5",
            "CMAAS_HTTP_BODY_TIMEOUT": "5",
            "CMAAS_HTTP_MAX_CONNECTIONS": "60000",
            "CMAAS_HTTP_MAX_CONNECTIONS_PER_IP": "7",
            "CMAAS_HTTP_MAX_REQUESTS_PER_APP": "3",
            "CMAAS_HTTP_MAX_LONG_POLLS_PER_APP": "1",
            "CMAAS_HTTP_MAX_BODIES_IN_FLIGHT": "2",
            "CMAAS_BLOB_MAX_COUNT": "5",
            "CMAAS_WEBHOOK_DENY_PRIVATE": "true",
        },
        env_file=None,
    )
    assert (given.http_header_timeout, given.http_max_connections, given.blob_max_count) == (
        2.5,
        60_000,
        5,
    )
    assert given.webhook_deny_private
    with pytest.raises(SettingsError, match="CMAAS_HTTP_MAX_CONNECTIONS_PER_IP"):
        load_settings({**BASE, "CMAAS_HTTP_MAX_CONNECTIONS_PER_IP": "0"}, env_file=None)


def test_the_database_is_a_sqlite_path_or_a_postgresql_url() -> None:
    assert load_settings({**BASE, "CMAAS_DATABASE": "/var/lib/c.db"}, env_file=None).database == (
        Path("/var/lib/c.db")
    )
    url = "postgresql://cmaas:pa55word@db.internal:5433/cmaas?sslmode=verify-full"
    settings = load_settings({**BASE, "CMAAS_DATABASE": url}, env_file=None)
    assert settings.database == PostgresDatabase(url)
    # The password stays out of what logs show.
    assert "pa55word" not in f"{settings.database} {settings!r}"
    assert str(settings.database).startswith("postgresql://cmaas:***@db.internal:5433/cmaas")


@pytest.mark.parametrize(
    ("value", "blob_dir", "refusal"),
    [
        ("mysql://db/cmaas", "/srv/blobs", "a SQLite file's path or a postgresql:// URL"),
        ("sqlite:///var/c.db", "/srv/blobs", "got a sqlite:// URL"),
        ("postgresql://u:secret@db/cmaas?nonsense=1", "/srv/blobs", "not a valid PostgreSQL URL"),
        ("postgresql://db/cmaas", "/srv/blobs", "unset CMAAS_BLOB_DIR: with a PostgreSQL"),
    ],
)
def test_a_database_that_cannot_be_used_is_refused(value: str, blob_dir: str, refusal: str) -> None:
    environ = {**BASE, "CMAAS_DATABASE": value, "CMAAS_BLOB_DIR": blob_dir}
    with pytest.raises(SettingsError, match=refusal) as refused:
        load_settings(environ, env_file=None)
    assert "secret" not in str(refused.value)


def test_instances_heartbeat_and_dead_after_default_and_must_leave_room() -> None:
    defaults = load_settings(BASE, env_file=None)
    assert (defaults.heartbeat, defaults.dead_after) == (2.0, 10.0)
    tuned = load_settings(
        {**BASE, "CMAAS_HEARTBEAT": "0.5", "CMAAS_DEAD_AFTER": "3"}, env_file=None
    )
    assert (tuned.heartbeat, tuned.dead_after) == (0.5, 3.0)
    environ = {**BASE, "CMAAS_HEARTBEAT": "5", "CMAAS_DEAD_AFTER": "8"}
    with pytest.raises(SettingsError, match="CMAAS_DEAD_AFTER must be at least twice"):
        load_settings(environ, env_file=None)
