"""``cmaas client serve`` on real Prosody and ejabberd: an app that can only make HTTP
requests sends through the local daemon, natively or the Sandes way, and receives signed
statuses on its own webhook."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cmaas.devservers import XmppServer, cmaas_executable, free_port
from cmaas.envelope import FileContent, OtpContent, TextContent

from .apps import WebhookReceiver, admin, client_config_for, http_session, statuses
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


async def test_an_http_only_app_sends_through_the_daemon(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    await asyncio.to_thread(admin, gateway, "directory-set", "alice@mail.example", alice)
    config = await client_config_for(gateway, tmp_path / "client")
    credentials = config.credentials
    hook = WebhookReceiver()
    hook.hmac_key = credentials.hmac_key
    port = free_port()
    file_port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
        "CMAAS_CLIENT_URL": config.url,
        "CMAAS_CLIENT_ID": credentials.client_id,
        "CMAAS_CLIENT_SECRET": credentials.client_secret,
        "CMAAS_CLIENT_HMAC_KEY": base64.b64encode(credentials.hmac_key).decode(),
        "CMAAS_CLIENT_DIR": str(config.state_dir),
        "CMAAS_CLIENT_WEBHOOK": hook.url,
        "CMAAS_CLIENT_FILE_URLS": f"http://127.0.0.1:{file_port}/files/",
    }
    bearer = {"Authorization": f"Bearer {credentials.client_secret}"}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hook.running())
        session = await stack.enter_async_context(http_session())
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "d"))
        await device.publish()
        daemon = await asyncio.create_subprocess_exec(
            cmaas_executable(),
            "--env-file",
            os.devnull,
            "client",
            "serve",
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert daemon.stdout is not None
            async with asyncio.timeout(30):
                banner = (await daemon.stdout.readline()).decode()
            assert f"client service for shop@{xmpp_server.component_domain}" in banner

            # Native API.
            status, answer = await _post(session, f"{base}/v1/send", {"to": alice, "otp": "5"})
            assert (status, answer["error"]) == (401, "unauthenticated")
            status, answer = await _post(
                session, f"{base}/v1/send", {"to": alice, "otp": "12"}, bearer
            )
            assert (status, answer["error"]) == (400, "invalid_request"), answer
            status, answer = await _post(
                session,
                f"{base}/v1/send",
                {"to": "alice@mail.example", "otp": "161803", "ttl": 120},
                bearer,
            )
            assert (status, answer["status"]) == (202, "accepted"), answer
            native_id = answer["message_id"]
            async with asyncio.timeout(15):
                assert (await device.next_message()).content == OtpContent("161803", "login")

            # Sandes-shaped multicast: one known receiver, one unknown.
            sandes = {
                "message": "424242",
                "type": "OTP",
                "title": "Login",
                "category": "auth",
                "created_on": "2026-11-30T10:00:00Z",
                "expire_on": None,
                "receivers": ["alice@mail.example", "nobody@mail.example"],
            }
            raw = json.dumps(sandes).encode()
            signed = {
                "clientid": credentials.client_id,
                "clientsecret": credentials.client_secret,
                "hmac": base64.b64encode(
                    hmac.new(credentials.hmac_key, raw, hashlib.sha256).digest()
                ).decode(),
                "Content-Type": "application/json",
            }
            url = f"{base}/v1/api/message/multicast"
            status, answer = await _post_raw(session, url, raw, signed)
            assert status == 200, answer
            assert answer["status"] == "partial"
            assert [r["status"] for r in answer["results"]] == ["accepted", "refused"]
            assert answer["results"][1]["error"] == "not_found"
            async with asyncio.timeout(15):
                assert (await device.next_message()).content == OtpContent("424242", "Login")
            status, answer = await _post_raw(session, url, raw, {**signed, "hmac": "AAAA"})
            assert (status, answer["error"]) == (401, "unauthenticated")
            # The same bytes again are a replay: refused, and no second OTP arrives (the
            # next message alice gets is the text below).
            status, answer = await _post_raw(session, url, raw, signed)
            assert (status, answer["error"]) == (401, "unauthenticated"), answer
            assert "replay" in answer["detail"]
            # The text with a timestamp, which the HMAC then covers.
            text = json.dumps({**sandes, "type": "info", "receivers": ["alice@mail.example"]})
            stamp = str(int(time.time()))
            stamped = {
                **signed,
                "timestamp": stamp,
                "hmac": _mac(credentials.hmac_key, f"{stamp}.{text}"),
            }
            status, answer = await _post_raw(
                session, url, text.encode(), {**stamped, "timestamp": str(int(stamp) - 1)}
            )
            assert (status, answer["error"]) == (401, "unauthenticated"), answer
            status, _ = await _post_raw(session, url, text.encode(), stamped)
            assert status == 200
            async with asyncio.timeout(15):
                assert (await device.next_message()).content == TextContent("Login\n\n424242")
            # A file the app serves on its own host: fetched, encrypted here, sent.
            report = os.urandom(300_000)

            async def serve_report(_request: web.Request) -> web.Response:
                return web.Response(body=report)

            async def elsewhere(_request: web.Request) -> web.Response:
                raise web.HTTPFound(f"{config.url}/metrics")

            files = web.Application()
            files.add_routes(
                [
                    web.get("/files/report.pdf", serve_report),
                    web.get("/files/moved.pdf", elsewhere),
                ]
            )
            file_runner = web.AppRunner(files, access_log=None)
            await file_runner.setup()
            stack.push_async_callback(file_runner.cleanup)
            await web.TCPSite(file_runner, "127.0.0.1", file_port).start()

            def file_message(file_url: str) -> str:
                return json.dumps(
                    {
                        **sandes,
                        "type": "info",
                        "receivers": ["alice@mail.example"],
                        "file_url": file_url,
                        "file_content_type": "application/pdf",
                    }
                )

            # Outside CMAAS_CLIENT_FILE_URLS (the gateway's loopback-only /metrics, a
            # dot segment out of the prefix), or a redirect there: refused, nothing sent.
            for refused_url, expected in [
                (f"{config.url}/metrics", (403, "file_url_not_allowed")),
                (f"http://127.0.0.1:{file_port}/files/../metrics", (403, "file_url_not_allowed")),
                (f"http://127.0.0.1:{file_port}/files/moved.pdf", (502, "file_unavailable")),
            ]:
                body = file_message(refused_url)
                status, answer = await _post_raw(
                    session,
                    url,
                    body.encode(),
                    {**signed, "hmac": _mac(credentials.hmac_key, body)},
                )
                assert (status, answer["error"]) == expected, (refused_url, answer)
            with_file = file_message(f"http://127.0.0.1:{file_port}/files/report.pdf")
            status, answer = await _post_raw(
                session,
                url,
                with_file.encode(),
                {**signed, "hmac": _mac(credentials.hmac_key, with_file)},
            )
            assert status == 200, answer
            assert answer["results"][0]["file_message_id"]
            async with asyncio.timeout(30):
                first, second = await device.next_message(), await device.next_message()
            assert first.content == TextContent("Login\n\n424242")
            assert isinstance(second.content, FileContent)
            assert (second.content.name, second.content.media_type) == (
                "report.pdf",
                "application/pdf",
            )
            assert second.saved_file is not None and second.saved_file.read_bytes() == report

            # Statuses reach the app's own webhook, signed.
            await hook.wait_for(lambda events: "delivered" in statuses(events, native_id))
            assert statuses(hook.events, native_id)[:3] == ["accepted", "dispatched", "delivered"]
            assert hook.bad_signatures == 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                _, err = await daemon.communicate()
        assert daemon.returncode == 0, err.decode()[-2000:]


def _mac(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    return await _post_raw(
        session,
        url,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


async def _post_raw(
    session: aiohttp.ClientSession, url: str, raw: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.json(content_type=None)
