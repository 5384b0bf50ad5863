"""``cmaas admin ...``: the admin commands against the database, for operators without
an XMPP client and for scripts. Same service, same checks as the ad-hoc commands."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from cmaas.admin import (
    AdminService,
    DirectoryRequest,
    InvalidInput,
    PlanRequest,
    RegisterAppRequest,
    RotateRequest,
    UpdateAppRequest,
)
from cmaas.admin.views import (
    SHOWN_ONCE,
    Row,
    app_rows,
    details_rows,
    directory_note,
    directory_rows,
    issued_rows,
    plan_rows,
)
from cmaas.settings import MASTER_KEY_BYTES, Settings, load_settings

__all__ = ["add_parser"]

Action = Callable[[AdminService, argparse.Namespace, Settings], Awaitable["Output"]]
Output = tuple[list[list[Row]], str]


def add_parser(parts: Any) -> None:
    parser = parts.add_parser(
        "admin",
        help="administer app accounts, plans and the directory",
        description="Admin operations against CMAAS_DATABASE; they take effect in a running"
        " gateway at once. Exit status: 0 done, 2 refused input (nothing changed), 1 error.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    ops = parser.add_subparsers(dest="op", required=True, metavar="OPERATION")

    p = ops.add_parser("app-register", help="create an app; prints its credentials once")
    p.add_argument("app_id")
    p.add_argument("--name", required=True, help="display name shown to recipients")
    p.add_argument("--plan", default="default", help="rate plan (default: default)")
    p.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="CIDR",
        help="allowed IP or CIDR for the HTTP API; repeat for several",
    )
    p.add_argument("--callback-url", default="", help="webhook URL for status callbacks")
    p.add_argument("--jid", action="append", default=[], help="bot JID bound to the app")
    p.set_defaults(handler=_runner(_register))

    p = ops.add_parser("app-update", help="change an app; effective at once")
    p.add_argument("app_id")
    p.add_argument("--name")
    p.add_argument("--plan")
    p.add_argument(
        "--network",
        action="append",
        metavar="CIDR",
        help="replaces the allowed networks; repeat for several",
    )
    p.add_argument("--no-networks", action="store_true", help="remove every allowed network")
    p.add_argument("--callback-url", help="new webhook URL; an empty string removes it")
    p.add_argument("--jid", action="append", help="replaces the bound JIDs; repeat for several")
    p.add_argument("--no-jids", action="store_true", help="unbind every JID")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--suspend", action="store_true")
    state.add_argument("--resume", action="store_true")
    p.set_defaults(handler=_runner(_update))

    p = ops.add_parser("app-rotate", help="issue a new client secret and HMAC key")
    p.add_argument("app_id")
    p.add_argument(
        "--grace",
        default="86400",
        metavar="SECONDS",
        help="how long the old credentials stay valid (default 86400)",
    )
    p.set_defaults(handler=_runner(_rotate))

    p = ops.add_parser("app-list", help="list apps")
    p.set_defaults(handler=_runner(_list))

    p = ops.add_parser("app-show", help="one app with its live counters")
    p.add_argument("app_id")
    p.set_defaults(handler=_runner(_show))

    p = ops.add_parser("plan-set", help="create or change a rate plan")
    p.add_argument("name")
    p.add_argument("--rate", required=True, help="sustained messages per second")
    p.add_argument("--burst", required=True, help="messages allowed at once")
    p.add_argument("--daily-quota", default="", help="messages per UTC day; 0 or empty: no cap")
    p.add_argument(
        "--priorities",
        default="high,normal,bulk",
        help="comma-separated subset of high,normal,bulk",
    )
    p.set_defaults(handler=_runner(_plan_set))

    p = ops.add_parser("plan-list", help="list rate plans")
    p.set_defaults(handler=_runner(_plan_list))

    p = ops.add_parser("directory-set", help="bind an email or E.164 number to a JID")
    p.add_argument("address", help="email, or mobile number such as +919876543210")
    p.add_argument("jid", nargs="?", default="", help="bare JID; omit to unbind")
    p.set_defaults(handler=_runner(_directory_set))

    p = ops.add_parser("master-key-generate", help="print a fresh CMAAS_MASTER_KEY")
    p.set_defaults(handler=_generate_master_key)

    p = ops.add_parser(
        "master-key-rotate",
        help="re-encrypt stored HMAC keys under CMAAS_MASTER_KEY",
        description="Set CMAAS_MASTER_KEY to the new key and CMAAS_PREVIOUS_MASTER_KEY to the"
        " old one, then run this. Safe to repeat; see docs/operators.md.",
    )
    p.set_defaults(handler=_runner(_rewrap))


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = load_settings(env_file=Path(args.env_file))
        try:
            tables, note = asyncio.run(_with_service(settings, args, action))
        except InvalidInput as exc:
            if args.json:
                print(
                    json.dumps({"error": "invalid_input", "problems": exc.problems}),
                    file=sys.stderr,
                )
            else:
                for field, text in exc.problems.items():
                    print(f"refused: {field}: {text}", file=sys.stderr)
            return 2
        _print(tables, note, as_json=args.json)
        return 0

    return run


async def _with_service(settings: Settings, args: argparse.Namespace, action: Action) -> Output:
    # Imported here, as the other commands import the gateway: only when it runs.
    from cmaas.assembly import open_keystore

    keystore = await open_keystore(settings)
    try:
        service = AdminService(keystore, deny_private=settings.webhook_deny_private)
        return await action(service, args, settings)
    finally:
        await keystore.close()


def _print(tables: list[list[Row]], note: str, *, as_json: bool) -> None:
    if as_json:
        objects = [{key: value for key, _label, value in rows} for rows in tables]
        print(json.dumps(objects[0] if len(objects) == 1 else objects, indent=2, default=list))
        return
    for index, rows in enumerate(tables):
        if index:
            print()
        width = max((len(label) for _key, label, _value in rows), default=0)
        for _key, label, value in rows:
            if isinstance(value, str | bool):
                print(f"{label:<{width}}  {value}")
            else:
                items = list(value)
                print(f"{label:<{width}}  {items[0] if items else '-'}")
                for item in items[1:]:
                    print(f"{'':<{width}}  {item}")
    if note:
        print(f"\n{note}" if tables else note)


async def _register(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    issued = await service.register_app(
        RegisterAppRequest(
            app_id=args.app_id,
            display_name=args.name,
            plan=args.plan,
            networks=args.network,
            callback_url=args.callback_url,
            jids=args.jid,
        )
    )
    return [issued_rows(issued, s.component_jid)], SHOWN_ONCE


def _replacement(values: Sequence[str] | None, clear: bool) -> Sequence[str] | None:
    return [] if clear else values


async def _update(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    app = await service.update_app(
        UpdateAppRequest(
            app_id=args.app_id,
            display_name=args.name,
            plan=args.plan,
            networks=_replacement(args.network, args.no_networks),
            callback_url=args.callback_url,
            jids=_replacement(args.jid, args.no_jids),
            suspended=True if args.suspend else False if args.resume else None,
        )
    )
    return [app_rows(app, s.component_jid)], "Saved; in effect from the app's next request."


async def _rotate(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    issued = await service.rotate_app(RotateRequest(args.app_id, args.grace), int(time.time()))
    return [issued_rows(issued, s.component_jid)], SHOWN_ONCE


async def _list(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    apps = await service.list_apps()
    return [app_rows(app, s.component_jid) for app in apps], f"{len(apps)} app(s)"


async def _show(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    return [details_rows(await service.show_app(args.app_id), s.component_jid)], ""


async def _plan_set(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    plan = await service.set_plan(
        PlanRequest(
            name=args.name,
            sustained_per_second=args.rate,
            burst=args.burst,
            daily_quota=args.daily_quota,
            priorities=[args.priorities],
        )
    )
    return [plan_rows(plan)], "Saved; in effect now."


async def _plan_list(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    return [plan_rows(plan) for plan in await service.list_plans()], ""


async def _directory_set(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    change = await service.set_directory(DirectoryRequest(address=args.address, jid=args.jid))
    return [directory_rows(change)], directory_note(change)


async def _rewrap(service: AdminService, args: argparse.Namespace, s: Settings) -> Output:
    count = await service.rewrap_hmac_keys()
    return [], f"Re-encrypted {count} HMAC key(s) under the current master key."


def _generate_master_key(args: argparse.Namespace) -> int:
    print(base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode())
    return 0
