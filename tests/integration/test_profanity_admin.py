"""An admin runs the admin and device commands from Profanity 0.13, a real terminal client,
on Prosody and on ejabberd, and reads refusals, results and choices on its screen.

Profanity shows neither XEP-0050 notes (only in its console), nor reported tables, nor
the options of a list without a value: these tests prove the forms carry all of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient
from cmaas.envelope import DeviceKeyring
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import SqliteKeystore

from .conftest import PASSWORD
from .gateway_process import GatewayProcess
from .profanity import Profanity

pytestmark = pytest.mark.integration


def cmd(name: str) -> str:
    return f"urn:cmaas:cmd:{name}"


@pytest.fixture
def profanity(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> Iterator[Profanity]:
    client = Profanity(tmp_path / "profanity")
    try:
        client.start()
        client.log_in(xmpp_server, "admin", PASSWORD)
        yield client
    finally:
        client.stop()


async def test_app_register_refusal_result_and_list_on_screen(
    xmpp_server: XmppServer, profanity: Profanity, stored: SqliteKeystore
) -> None:
    gw = xmpp_server.component_domain
    profanity.type(f"/cmd list {gw}")
    profanity.wait_for(cmd("app-register"))

    profanity.type(f"/cmd exec {cmd('app-register')} {gw}")
    profanity.wait_for("Form title: Register an app")
    # The required plan choice comes with a default, so its options show.
    profanity.wait_for("[default] default (10/s, burst 50)")
    profanity.set_field("field1", "ops-app", "App id (required): ops-app")
    profanity.set_field("field2", "Ops Console", "Display name (required): Ops Console")
    profanity.answer(
        "/form help field4", "Description : One address or CIDR per value, IPv4 or IPv6."
    )
    profanity.answer("/field4 add 10.0.0.0/33", "[val1] 10.0.0.0/33")
    profanity.answer("/form submit", "Refused: Allowed IP addresses or CIDRs:")
    profanity.wait_for("'10.0.0.0/33' is not an IP address or CIDR")
    # The form is shown again with what was typed, ready to correct.
    profanity.wait_for("App id (required): ops-app")
    assert await stored.list_apps() == []

    # Profanity runs what is typed in order: val1 is the new network only if the bad
    # one was removed first.
    profanity.type("/field4 remove val1")
    profanity.answer("/field4 add 10.0.0.0/8", "[val1] 10.0.0.0/8")
    profanity.type("/form submit")
    profanity.wait_for("Form title: App ops-app registered")
    result = profanity.wait_for("Client secret:")
    warning = result.index("shown only this once")
    secret_line = next(line for line in result.splitlines() if "Client secret:" in line)
    assert warning < result.index("Client secret:"), result
    secret = secret_line.split("Client secret:")[1].strip()
    app = await stored.get_app("ops-app")
    assert [str(n) for n in app.networks] == ["10.0.0.0/8"]
    assert (await stored.authenticate(app.client_id, secret)).app.app_id == "ops-app"

    profanity.type(f"/cmd exec {cmd('app-list')} {gw}")
    profanity.wait_for("1 app(s)")
    profanity.wait_for("App id: ops-app; Display name: Ops Console; Plan: default; Status: active")

    # An app picker shows its labelled choices, the first one chosen.
    profanity.type(f"/cmd exec {cmd('app-show')} {gw}")
    profanity.wait_for("Form title: Show an app")
    profanity.wait_for("[ops-app] Ops Console (ops-app)")


async def test_device_revoke_offers_named_devices_on_screen(
    xmpp_server: XmppServer, admin: AdhocClient, profanity: Profanity, stored: SqliteKeystore
) -> None:
    gw = xmpp_server.component_domain
    ids = {}
    for label in ("phone", "laptop"):
        keyring = DeviceKeyring.generate(
            f"admin@{xmpp_server.domain}", now_ms=int(time.time() * 1000), one_time_prekeys=2
        )
        published = await admin.run(
            gw,
            cmd("device-publish"),
            {"bundle": keyring.bundle().to_bytes().decode(), "label": label},
        )
        assert published.status == "completed", published
        ids[label] = published.values["device_id"][0]

    profanity.type(f"/cmd exec {cmd('device-list')} {gw}")
    profanity.wait_for("2 active device(s)")
    for label, device_id in ids.items():
        profanity.wait_for(f"Device id: {device_id}; Name: {label};")

    profanity.type(f"/cmd exec {cmd('device-revoke')} {gw}")
    profanity.wait_for("Form title: Revoke a device")
    for label, device_id in ids.items():
        profanity.wait_for(f"[{device_id}] {label} ({device_id}), key ")
    profanity.set_field("field1", ids["laptop"], "Field updated")
    profanity.type("/form submit")
    profanity.wait_for("Form title: Device revoked")
    profanity.wait_for(f"Device {ids['laptop']} revoked")
    devices = {
        str(d.device_id): d
        for d in await KeyDirectory(stored).devices(f"admin@{xmpp_server.domain}")
    }
    assert devices[ids["laptop"]].revoked_at is not None
    assert devices[ids["phone"]].revoked_at is None
