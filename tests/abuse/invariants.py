"""What must hold in the database whatever hostile input came before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cmaas.identifiers import (
    parse_address,
    parse_app_id,
    parse_bare_jid,
    parse_callback_url,
    parse_display_name,
    parse_network,
)


def check_database(path: Path) -> None:
    """Every stored value is one the validators would produce from itself."""
    with sqlite3.connect(path) as db:
        for app_id, name, plan, url in db.execute(
            "SELECT app_id, display_name, plan, callback_url FROM apps"
        ):
            assert parse_app_id(app_id) == app_id
            assert parse_display_name(name) == name
            assert parse_app_id(plan) == plan
            assert url is None or parse_callback_url(url) == url
        for (network,) in db.execute("SELECT network FROM app_networks"):
            assert str(parse_network(network)) == network
        for (jid,) in db.execute("SELECT jid FROM app_jids"):
            assert parse_bare_jid(jid) == jid
        for address, kind, jid in db.execute("SELECT address, kind, jid FROM directory"):
            assert parse_address(address) == (kind, address)
            assert parse_bare_jid(jid) == jid
        for name, rate, burst, quota, priorities in db.execute(
            "SELECT name, sustained_per_second, burst, daily_quota, priorities FROM plans"
        ):
            assert parse_app_id(name) == name
            assert 0 < rate <= 100_000 and 1 <= burst <= 1_000_000
            assert quota is None or quota >= 1
            assert set(priorities.split(",")) <= {"high", "normal", "bulk"}
