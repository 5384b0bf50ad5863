"""The gateway survives its own restart and the IM server's, and keeps secrets out of logs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient

from .conftest import connect
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

APP_LIST = "urn:cmaas:cmd:app-list"


async def test_gateway_restart_keeps_state_and_commands_work(
    xmpp_server: XmppServer, gateway: GatewayProcess, admin: AdhocClient
) -> None:
    gw = xmpp_server.component_domain
    made = await admin.run(
        gw, "urn:cmaas:cmd:app-register", {"app_id": "keep", "display_name": "K"}
    )
    assert made.status == "completed"
    assert gateway.stop() == 0  # SIGTERM: clean shutdown
    assert "component link closed" in gateway.log()
    gateway.start()
    listed = await admin.run(gw, APP_LIST)
    assert listed.status == "completed"
    assert listed.values["app_id"] == ["keep"]


async def test_im_server_restart_under_a_running_gateway(
    xmpp_server: XmppServer, gateway: GatewayProcess
) -> None:
    assert gateway.health()["link_connects"] == 1
    started = time.monotonic()
    xmpp_server.restart()
    # Wait for the gateway to notice and come back on its own.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and gateway.health().get("link_connects") != 2:
        await asyncio.sleep(0.1)
    health = gateway.wait_healthy(within=1)
    assert health["link_connects"] == 2, gateway.log()
    back_after = time.monotonic() - started
    assert "component link lost" in gateway.log()
    admin = await connect(xmpp_server, "admin", "after-restart")
    try:
        reply = await admin.run(xmpp_server.component_domain, APP_LIST)
        assert reply.status == "completed", reply
    finally:
        await admin.disconnect()
    print(f"{xmpp_server.kind}: link back {back_after:.1f} s after the restart began")


async def test_credentials_are_never_logged(
    xmpp_server: XmppServer, gateway: GatewayProcess, admin: AdhocClient
) -> None:
    gw = xmpp_server.component_domain
    made = await admin.run(
        gw, "urn:cmaas:cmd:app-register", {"app_id": "quiet", "display_name": "Q"}
    )
    rotated = await admin.run(
        gw, "urn:cmaas:cmd:app-rotate", {"app_id": "quiet", "grace_seconds": "60"}
    )
    secrets = [
        made.values["client_secret"][0],
        made.values["hmac_key"][0],
        rotated.values["client_secret"][0],
        rotated.values["hmac_key"][0],
    ]
    assert gateway.stop() == 0
    log = gateway.log()
    assert "DEBUG" in log  # the gateway ran at its most verbose
    for secret in secrets:
        assert secret not in log
    cli = gateway.admin_cli("app-rotate", "quiet", "--grace", "0")
    assert cli.returncode == 0
    assert "shown only this once" in cli.stdout
    gateway.start()  # the fixture expects to stop a running gateway


async def test_presence_and_subscription_of_an_app_jid(
    xmpp_server: XmppServer, admin: AdhocClient, alice: AdhocClient
) -> None:
    gw = xmpp_server.component_domain
    await admin.run(gw, "urn:cmaas:cmd:app-register", {"app_id": "notices", "display_name": "N"})
    app_jid = f"notices@{gw}"
    alice.xmpp.send_presence(pto=app_jid, ptype="subscribe")
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 10
    while "available" not in {t for j, t in seen if j == app_jid} and time.monotonic() < deadline:
        try:
            seen.add(await asyncio.wait_for(alice.presences.get(), 1))
        except TimeoutError:
            continue
    assert (app_jid, "available") in seen, seen
    # The app asks back, so that clients which send receipts only to contacts allowed
    # to see their presence (Conversations, Gajim) will; alice approves.
    deadline = time.monotonic() + 10
    while (app_jid, "subscribe") not in seen and time.monotonic() < deadline:
        try:
            seen.add(await asyncio.wait_for(alice.presences.get(), 1))
        except TimeoutError:
            continue
    assert (app_jid, "subscribe") in seen, seen
    alice.xmpp.send_presence(pto=app_jid, ptype="subscribed")
    # The server now holds a subscription to the app: its roster push says so.
    deadline = time.monotonic() + 10
    while (
        alice.xmpp.client_roster[app_jid]["subscription"] != "both" and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.1)
    assert alice.xmpp.client_roster[app_jid]["subscription"] == "both"

    # A suspended app shows as unavailable on the next probe.
    await admin.run(
        gw,
        "urn:cmaas:cmd:app-update",
        {"app_id": "notices"},
        {"display_name": "N", "plan": "default", "suspended": True},
    )
    alice.xmpp.send_presence(pto=app_jid, ptype="probe")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            jid, kind = await asyncio.wait_for(alice.presences.get(), 1)
        except TimeoutError:
            continue
        if jid == app_jid and kind == "unavailable":
            break
    else:
        pytest.fail("no unavailable presence for the suspended app")


async def test_wrong_component_secret_is_reported_and_retried(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    process = GatewayProcess(xmpp_server, tmp_path, admins="admin@cmaas.test")
    process.env["CMAAS_COMPONENT_SECRET"] = "not-the-secret"
    process.start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.log().count("failed") < 2:
            await asyncio.sleep(0.1)
        log = process.log()
        assert log.count("component link to") >= 2, log  # it keeps retrying
        assert "not-authorized" in log, log
        health = process.health()
        assert health["status"] == "degraded"
        assert health["component_link"] in ("connecting", "backing_off")
    finally:
        assert process.stop() == 0
