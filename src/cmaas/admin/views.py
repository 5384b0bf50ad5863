"""How operator-facing results read: the same rows in ad-hoc result forms and the CLI."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime

from cmaas.admin.service import AppDetails, DirectoryChange, IssuedApp
from cmaas.keystore import App, IssuedCredentials, Plan
from cmaas.lifecycle import Priority

__all__ = [
    "SHOWN_ONCE",
    "Row",
    "app_rows",
    "credential_rows",
    "details_rows",
    "directory_note",
    "directory_rows",
    "issued_rows",
    "plan_rows",
]

Row = tuple[str, str, str | bool | Sequence[str]]
"""(key, label, value)."""

SHOWN_ONCE = (
    "Store the client secret and HMAC key now: they are shown only this once"
    " and cannot be recovered, only rotated."
)


def _when(unix: int | None) -> str:
    if unix is None:
        return "never"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def app_rows(app: App, component_domain: str) -> list[Row]:
    return [
        ("app_id", "App id", app.app_id),
        ("app_jid", "Sends as", f"{app.app_id}@{component_domain}"),
        ("display_name", "Display name", app.display_name),
        ("client_id", "Client id", app.client_id),
        ("plan", "Rate plan", app.plan),
        ("status", "Status", "suspended" if app.suspended else "active"),
        ("networks", "Allowed networks", [str(n) for n in app.networks]),
        ("callback_url", "Callback URL", app.callback_url or ""),
        ("jids", "Bound JIDs", list(app.jids)),
        (
            "credentials",
            "Live credentials",
            [
                f"{c.credential_id}: issued {_when(c.created_at)}, ends {_when(c.not_after)}"
                for c in app.credentials
            ],
        ),
        ("updated_at", "Last changed", _when(app.updated_at)),
    ]


def credential_rows(credentials: IssuedCredentials) -> list[Row]:
    return [
        ("client_id", "Client id", credentials.client_id),
        ("client_secret", "Client secret", credentials.client_secret),
        ("hmac_key", "HMAC key (base64)", base64.b64encode(credentials.hmac_key).decode()),
    ]


def issued_rows(issued: IssuedApp, component_domain: str) -> list[Row]:
    return credential_rows(issued.credentials) + [
        row for row in app_rows(issued.app, component_domain) if row[0] != "client_id"
    ]


def plan_rows(plan: Plan) -> list[Row]:
    return [
        ("name", "Plan", plan.name),
        ("sustained_per_second", "Sustained messages per second", f"{plan.sustained_per_second:g}"),
        ("burst", "Burst", str(plan.burst)),
        (
            "daily_quota",
            "Daily quota",
            "unlimited" if plan.daily_quota is None else str(plan.daily_quota),
        ),
        ("priorities", "Priorities allowed", [p.value for p in Priority.ranked(plan.priorities)]),
    ]


def details_rows(details: AppDetails, component_domain: str) -> list[Row]:
    counters = details.counters
    by_status = [
        f"{status}: {count}" for status, count in sorted(counters.messages_by_status.items())
    ]
    return (
        app_rows(details.app, component_domain)
        + [row for row in plan_rows(details.plan) if row[0] != "name"]
        + [
            ("submitted_today", "Messages submitted today (UTC)", str(counters.submitted_today)),
            ("messages_by_status", "Messages by status", by_status or ["none yet"]),
        ]
    )


def directory_rows(change: DirectoryChange) -> list[Row]:
    return [
        ("address", "Address", change.address),
        ("kind", "Kind", change.kind),
        ("jid", "Bound to", change.jid or "(unbound)"),
    ]


def directory_note(change: DirectoryChange) -> str:
    if change.jid is None:
        return "Unbound." if change.existed else "The address was not bound; nothing changed."
    return "Binding replaced." if change.existed else "Bound."
