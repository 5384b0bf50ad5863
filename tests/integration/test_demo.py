"""The README's first command: ``cmaas dev run`` brings everything up on loopback and
shows a sealed one-time password travelling from an app to a device."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cmaas.clientservice import AppCredentials, ClientConfig, GatewayClient
from cmaas.devservers import DevServerError, cmaas_executable
from cmaas.devservers.client import AdhocClient


async def _dev_run(server: str, *options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        cmaas_executable(),
        "--env-file",
        os.devnull,
        "dev",
        "run",
        "--server",
        server,
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("server", ["prosody", "ejabberd"])
async def test_dev_run_shows_a_sealed_message_opened_on_a_device(server: str) -> None:
    process = await _dev_run(server, "--duration", "1")
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    assert re.search(r"opened on the device: one-time password \d{6} \(demo login\)", text)
    assert 'from "Demo Bank"' in text
    assert re.search(r"message \S+: accepted -> dispatched -> delivered -> read", text), text
    assert "urn:cmaas:cmd:device-publish" in text
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("server", ["prosody", "ejabberd"])
async def test_dev_run_json_prints_one_object_with_working_separate_credentials(
    server: str, tmp_path: Path
) -> None:
    process = await _dev_run(server, "--json", "--duration", "120")
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.create_task(process.stderr.read())
    try:
        async with asyncio.timeout(120):
            line = await process.stdout.readline()
        assert line, (await errors).decode()[-3000:]
        shown = json.loads(line)
        await _check_what_dev_run_printed(shown, tmp_path)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest = await process.stdout.read()
            await process.wait()
    err = (await errors).decode()
    assert process.returncode == 0, err[-3000:]
    # Standard output carries the one object; the progress for people went to stderr.
    assert rest == b""
    assert re.search(r"opened on the device: one-time password \d{6} \(demo login\)", err)
    assert "Traceback" not in err


async def _check_what_dev_run_printed(shown: dict[str, Any], tmp_path: Path) -> None:
    # The fields README.md documents for `dev run --json`.
    assert set(shown) == {
        "server",
        "xmpp",
        "domain",
        "component_domain",
        "accounts",
        "api_url",
        "websocket_url",
        "web_device_url",
        "health_url",
        "env_file",
        "app",
        "first_message",
        "commands",
    }
    assert shown["server"] in ("prosody", "ejabberd")
    assert shown["component_domain"] == f"gateway.{shown['domain']}"
    assert shown["first_message"]["statuses"] == ["accepted", "dispatched", "delivered", "read"]
    assert "urn:cmaas:cmd:device-publish" in shown["commands"]
    admin, alice = shown["accounts"]["admin"], shown["accounts"]["alice"]
    assert admin["password"] and alice["password"]
    assert admin["password"] != alice["password"]
    host, port = shown["xmpp"]["host"], shown["xmpp"]["port"]
    assert re.fullmatch(rf"ws://{host}:\d+/(xmpp-websocket|ws)", shown["websocket_url"])
    # None only when the web device's fixed port is taken (the progress says so).
    if shown["web_device_url"] is not None:
        assert shown["web_device_url"] == f"http://127.0.0.1:5290/?jid={alice['jid']}"
        async with (
            aiohttp.ClientSession() as session,
            session.get("http://127.0.0.1:5290/config.json") as answer,
        ):
            page_config = await answer.json()
        assert page_config == {
            "websocket": shown["websocket_url"],
            "gateway": shown["component_domain"],
            "jid": alice["jid"],
        }

    # Alice's password does not open the admin account; the admin's own does, and the
    # admin sees the admin commands; alice logs in with hers.
    wrong = AdhocClient(f"{admin['jid']}/test", alice["password"], host, port)
    with pytest.raises(DevServerError, match="wrong password"):
        await wrong.connect()
    await wrong.disconnect()
    async with AdhocClient(f"{admin['jid']}/test", admin["password"], host, port) as client:
        nodes = await client.command_nodes(shown["component_domain"])
    assert "urn:cmaas:cmd:app-register" in nodes
    async with AdhocClient(f"{alice['jid']}/test", alice["password"], host, port) as client:
        nodes = await client.command_nodes(shown["component_domain"])
    assert "urn:cmaas:cmd:device-list" in nodes
    assert "urn:cmaas:cmd:app-register" not in nodes

    # The demo app's credentials work against the API it names.
    app = shown["app"]
    credentials = AppCredentials(
        app["client_id"], app["client_secret"], base64.b64decode(app["hmac_key"])
    )
    url = shown["api_url"].removesuffix("/v1/")
    async with GatewayClient(ClientConfig(url, credentials, tmp_path / "client")) as gateway:
        assert gateway.app_jid == app["app_jid"]
        assert gateway.api is not None
        found = await gateway.api.lookup(alice["mobile"])
    assert found.jid == alice["jid"]
    assert len(found.devices) == 1
