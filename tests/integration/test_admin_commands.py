"""Admins run every admin command from a real XMPP account, on Prosody and on ejabberd."""

from __future__ import annotations

import base64
import json

import pytest
from slixmpp import JID

from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient
from cmaas.keystore import SqliteKeystore

from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

ADMIN_NODES = {
    "urn:cmaas:cmd:app-register",
    "urn:cmaas:cmd:app-update",
    "urn:cmaas:cmd:app-rotate",
    "urn:cmaas:cmd:app-list",
    "urn:cmaas:cmd:app-show",
    "urn:cmaas:cmd:plan-set",
    "urn:cmaas:cmd:directory-set",
}
USER_NODES = [
    "urn:cmaas:cmd:device-publish",
    "urn:cmaas:cmd:device-list",
    "urn:cmaas:cmd:device-revoke",
]


def cmd(name: str) -> str:
    return f"urn:cmaas:cmd:{name}"


async def test_commands_are_listed_by_access(
    xmpp_server: XmppServer, admin: AdhocClient, alice: AdhocClient
) -> None:
    # An admin is a user of a served domain too; a user sees only their device commands.
    listed = await admin.command_nodes(xmpp_server.component_domain)
    assert set(listed) == ADMIN_NODES | set(USER_NODES)
    # Each item carries its name through the server (Profanity's /cmd list shows only
    # the nodes; Gajim and Psi show the names).
    items = await admin.xmpp.plugin["xep_0030"].get_items(
        jid=JID(xmpp_server.component_domain), node="http://jabber.org/protocol/commands"
    )
    names = {node: name for _jid, node, name in items["disco_items"]["items"]}
    assert names[cmd("app-register")] == "Register an app"
    assert all(names.values()), names
    assert sorted(await alice.command_nodes(xmpp_server.component_domain)) == sorted(USER_NODES)


async def test_register_and_change_at_runtime(
    xmpp_server: XmppServer, admin: AdhocClient, stored: SqliteKeystore
) -> None:
    gw = xmpp_server.component_domain
    bot = f"bot@{xmpp_server.domain}"
    registered = await admin.run(
        gw,
        cmd("app-register"),
        {
            "app_id": "parichay-otp",
            "display_name": "Parichay",
            "plan": "default",
            "networks": ["203.0.113.0/24"],
            "callback_url": "https://app.example.org/cb",
            "jids": [bot],
        },
    )
    assert registered.status == "completed", registered
    assert "shown only this once" in registered.notes[0][1]
    values = registered.values
    auth = await stored.authenticate(values["client_id"][0], values["client_secret"][0])
    assert auth.app.app_id == "parichay-otp"
    assert values["hmac_key"] == [base64.b64encode(auth.hmac_key).decode()]
    assert auth.app.jids == (bot,)

    plan = await admin.run(
        gw,
        cmd("plan-set"),
        {
            "name": "gold",
            "sustained_per_second": "100",
            "burst": "500",
            "daily_quota": "",
            "priorities": ["high", "normal"],
        },
    )
    assert plan.status == "completed", plan

    updated = await admin.run(
        gw,
        cmd("app-update"),
        {"app_id": "parichay-otp"},
        {
            "display_name": "Parichay",
            "plan": "gold",
            "networks": ["198.51.100.0/24", "2001:db8::/48"],
            "callback_url": "https://app.example.org/cb",
            "jids": [bot],
            "suspended": False,
        },
    )
    assert updated.status == "completed", updated

    shown = await admin.run(gw, cmd("app-show"), {"app_id": "parichay-otp"})
    assert shown.values["plan"] == ["gold"]
    assert shown.values["networks"] == ["198.51.100.0/24", "2001:db8::/48"]
    assert shown.values["priorities"] == ["high", "normal"]
    app = await stored.get_app("parichay-otp")
    assert (app.plan, [str(n) for n in app.networks]) == (
        "gold",
        ["198.51.100.0/24", "2001:db8::/48"],
    )

    rotated = await admin.run(
        gw, cmd("app-rotate"), {"app_id": "parichay-otp", "grace_seconds": "0"}
    )
    assert rotated.status == "completed"
    assert (
        await stored.authenticate(values["client_id"][0], rotated.values["client_secret"][0])
    ).app.app_id == "parichay-otp"

    bound = await admin.run(
        gw,
        cmd("directory-set"),
        {"address": "Alice@Example.org", "jid": f"alice@{xmpp_server.domain}"},
    )
    assert bound.status == "completed", bound
    assert await stored.resolve_address("alice@example.org") == f"alice@{xmpp_server.domain}"

    listed = await admin.run(gw, cmd("app-list"))
    assert listed.status == "completed"
    assert listed.values["app_id"] == ["parichay-otp"]


async def test_cli_and_xmpp_share_one_live_database(
    xmpp_server: XmppServer, gateway: GatewayProcess, admin: AdhocClient
) -> None:
    gw = xmpp_server.component_domain
    made = gateway.admin_cli(
        "--json", "app-register", "cli-app", "--name", "From the shell", "--network", "192.0.2.0/24"
    )
    assert made.returncode == 0, made.stderr
    issued = json.loads(made.stdout)
    assert issued["client_secret"] and issued["app_jid"] == f"cli-app@{gw}"

    shown = await admin.run(gw, cmd("app-show"), {"app_id": "cli-app"})
    assert shown.values["display_name"] == ["From the shell"]

    assert gateway.admin_cli("plan-set", "silver", "--rate", "5", "--burst", "10").returncode == 0
    changed = gateway.admin_cli(
        "app-update", "cli-app", "--plan", "silver", "--network", "198.51.100.7", "--suspend"
    )
    assert changed.returncode == 0, changed.stderr
    shown = await admin.run(gw, cmd("app-show"), {"app_id": "cli-app"})
    assert shown.values["plan"] == ["silver"]
    assert shown.values["networks"] == ["198.51.100.7/32"]
    assert shown.values["status"] == ["suspended"]

    refused = gateway.admin_cli("app-update", "cli-app", "--network", "10.0.0.1/8")
    assert refused.returncode == 2
    assert "host bits set" in refused.stderr


async def test_non_admin_is_refused_every_admin_command(
    xmpp_server: XmppServer, alice: AdhocClient, stored: SqliteKeystore
) -> None:
    for node in sorted(ADMIN_NODES):
        reply = await alice.execute(xmpp_server.component_domain, node)
        assert reply.error == "forbidden", (node, reply)
    assert await stored.list_apps() == []


async def test_session_cannot_be_continued_by_another_jid(
    xmpp_server: XmppServer, admin: AdhocClient, alice: AdhocClient, stored: SqliteKeystore
) -> None:
    gw = xmpp_server.component_domain
    opened = await admin.execute(gw, cmd("app-register"))
    hijack = await alice.submit(
        gw, cmd("app-register"), opened.session_id, {"app_id": "evil", "display_name": "Evil"}
    )
    assert hijack.error == "forbidden"
    assert await stored.list_apps() == []
    done = await admin.submit(
        gw, cmd("app-register"), opened.session_id, {"app_id": "good", "display_name": "Good"}
    )
    assert done.status == "completed"


@pytest.mark.parametrize(
    ("values", "field_label", "words"),
    [
        (
            {"app_id": "a1", "display_name": "A", "networks": ["10.0.0.0/33"]},
            "Allowed IP addresses or CIDRs",
            "not an IP address or CIDR",
        ),
        ({"app_id": "a1", "display_name": "A", "plan": "platinum"}, "Rate plan", "no plan named"),
        ({"app_id": "taken", "display_name": "A"}, "App id", "already exists"),
        ({"app_id": "a1", "display_name": "x" * 5000}, "Display name", "longer than 4096"),
        ({"app_id": "a1", "display_name": "x" * 300}, "Display name", "1 to 100 characters"),
    ],
)
async def test_bad_app_values_are_refused_with_a_note(
    xmpp_server: XmppServer,
    admin: AdhocClient,
    stored: SqliteKeystore,
    values: dict[str, object],
    field_label: str,
    words: str,
) -> None:
    gw = xmpp_server.component_domain
    first = await admin.run(gw, cmd("app-register"), {"app_id": "taken", "display_name": "T"})
    assert first.status == "completed"
    reply = await admin.run(gw, cmd("app-register"), values)  # type: ignore[arg-type]
    assert reply.status == "executing", reply
    assert reply.notes and reply.notes[0][0] == "error"
    assert field_label in reply.notes[0][1] and words in reply.notes[0][1], reply.notes
    assert "app_id" in reply.values  # the form is shown again
    assert [a.app_id for a in await stored.list_apps()] == ["taken"]


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("alice@", "not a valid email"),
        ("+1 555 01", "not a valid phone number"),
        ("98765 43210", "international form"),
    ],
)
async def test_bad_directory_values_are_refused(
    xmpp_server: XmppServer, admin: AdhocClient, stored: SqliteKeystore, address: str, words: str
) -> None:
    reply = await admin.run(
        xmpp_server.component_domain,
        cmd("directory-set"),
        {"address": address, "jid": f"alice@{xmpp_server.domain}"},
    )
    assert reply.status == "executing"
    assert words in reply.notes[0][1], reply.notes
    assert await stored.resolve_address(address) is None


async def test_ping(xmpp_server: XmppServer, admin: AdhocClient) -> None:
    rtt = await admin.xmpp.plugin["xep_0199"].ping(
        jid=JID(xmpp_server.component_domain), timeout=10
    )
    assert rtt >= 0
