"""``cmaas device web``: only the built files and ``/config.json``, GET and HEAD, with the
security headers on every answer; a page whose integrity hashes do not match its files
is refused at start, and so is a non-loopback address."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cmaas.cli.main import main
from cmaas.device.web import StaticFiles, WebDeviceConfig, WebDeviceError, web_application
from cmaas.device.web import web_device_config as read_config
from cmaas.devservers import free_port

SCRIPT = b"export const device = 1;\n"
STYLE = b"body { color: #111; }\n"


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def _page(script_integrity: str, style_integrity: str) -> bytes:
    return (
        "<!doctype html><html><head>"
        f'<link rel="stylesheet" href="./style.css" integrity="{style_integrity}">'
        f'<script type="module" src="./device.js" integrity="{script_integrity}"></script>'
        "</head><body></body></html>"
    ).encode()


@pytest.fixture
def built(tmp_path: Path) -> Path:
    directory = tmp_path / "web_static"
    directory.mkdir()
    (directory / "device.js").write_bytes(SCRIPT)
    (directory / "style.css").write_bytes(STYLE)
    (directory / "index.html").write_bytes(_page(_sri(SCRIPT), _sri(STYLE)))
    (tmp_path / "secret.txt").write_text("outside the served directory")
    return directory


def _config(port: int) -> WebDeviceConfig:
    return WebDeviceConfig(
        websocket="ws://127.0.0.1:5280/xmpp-websocket",
        gateway="gateway.cmaas.test",
        blob_origins=("http://127.0.0.1:8480", "https://files.example.org"),
        jid="alice@cmaas.test",
        port=port,
    )


@pytest.fixture
async def client(built: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    port = free_port()
    app = web_application(_config(port), StaticFiles.load(built))
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as test_client:
        yield test_client


async def test_the_page_is_served_with_the_security_headers(
    client: TestClient[web.Request, web.Application],
) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert await page.read() == _page(_sri(SCRIPT), _sri(STYLE))
    assert page.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:;"
        " connect-src 'self' ws://127.0.0.1:5280/xmpp-websocket http://127.0.0.1:8480"
        " https://files.example.org; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-cache"
    script = await client.get("/device.js")
    assert (script.headers["Content-Type"], await script.read()) == (
        "text/javascript; charset=utf-8",
        SCRIPT,
    )
    head = await client.head("/style.css")
    assert (head.status, head.headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    assert "Access-Control-Allow-Origin" not in page.headers


async def test_config_json_comes_from_the_settings(
    client: TestClient[web.Request, web.Application],
) -> None:
    answer = await client.get("/config.json")
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(await answer.read()) == {
        "websocket": "ws://127.0.0.1:5280/xmpp-websocket",
        "gateway": "gateway.cmaas.test",
        "jid": "alice@cmaas.test",
    }
    unset = WebDeviceConfig(websocket="wss://x.example/ws", gateway="gw.example")
    assert json.loads(unset.config_json())["jid"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/web_static/device.js",
        "/%2Fetc%2Fpasswd",
        "/index.html/",
        "/nope.js",
    ],
)
async def test_nothing_but_the_built_files_is_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    answer = await client.get(path, allow_redirects=False)
    assert answer.status == 404
    assert b"outside" not in await answer.read()
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_only_get_and_head(client: TestClient[web.Request, web.Application]) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        answer = await client.request(method, "/index.html")
        assert (answer.status, answer.headers["Allow"]) == (405, "GET, HEAD"), method
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_another_host_name_is_sent_to_the_one_origin(
    client: TestClient[web.Request, web.Application],
) -> None:
    # Another name is another origin, with other (empty) storage: refused, never served.
    answer = await client.get("/", headers={"Host": f"localhost:{client.port}"})
    assert answer.status == 421
    assert f"http://127.0.0.1:{client.port}/" in await answer.text()


def test_a_file_changed_after_the_build_is_refused(built: Path) -> None:
    (built / "device.js").write_bytes(SCRIPT + b"steal();\n")
    with pytest.raises(WebDeviceError, match=r"device\.js does not match"):
        StaticFiles.load(built)


def test_a_page_without_integrity_or_with_foreign_scripts_is_refused(built: Path) -> None:
    index = built / "index.html"
    index.write_bytes(b'<script src="./device.js"></script>')
    with pytest.raises(WebDeviceError, match="without an integrity hash"):
        StaticFiles.load(built)
    index.write_bytes(
        f'<script src="https://cdn.example/x.js" integrity="{_sri(SCRIPT)}">'.encode()
    )
    with pytest.raises(WebDeviceError, match="not a built file"):
        StaticFiles.load(built)
    index.write_bytes(b"<script>alert(1)</script>")
    with pytest.raises(WebDeviceError, match="inline script"):
        StaticFiles.load(built)
    index.unlink()
    with pytest.raises(WebDeviceError, match="build-web-device"):
        StaticFiles.load(built)


def test_settings_are_checked_together() -> None:
    config = read_config(
        {
            "CMAAS_WEB_WEBSOCKET": "wss://example.org/xmpp-websocket",
            "CMAAS_COMPONENT_JID": "Gateway.Example.org",
            "CMAAS_WEB_BLOB_ORIGINS": "https://api.example.org:8480/, http://127.0.0.1:8480",
        }
    )
    assert (config.gateway, config.jid, config.url) == (
        "gateway.example.org",
        None,
        "http://127.0.0.1:5290/",
    )
    assert config.blob_origins == ("https://api.example.org:8480", "http://127.0.0.1:8480")
    with pytest.raises(WebDeviceError) as refused:
        read_config(
            {
                "CMAAS_WEB_WEBSOCKET": "https://example.org/ws",
                "CMAAS_WEB_BLOB_ORIGINS": "https://api.example.org/v1/blobs",
                "CMAAS_WEB_BIND": "0.0.0.0",  # noqa: S104 (refused, which is the point)
                "CMAAS_DEVICE_JID": "not a jid",
                "CMAAS_WEB_PORT": "99999",
            }
        )
    problems = str(refused.value)
    for label in (
        "--websocket or CMAAS_WEB_WEBSOCKET",
        "--gateway or CMAAS_DEVICE_GATEWAY is required",
        "--blob-origin or CMAAS_WEB_BLOB_ORIGINS",
        "--bind or CMAAS_WEB_BIND: '0.0.0.0' is not a loopback address",
        "--jid or CMAAS_DEVICE_JID",
        "--port or CMAAS_WEB_PORT",
    ):
        assert label in problems
    ipv6 = read_config(
        {"CMAAS_WEB_WEBSOCKET": "ws://[::1]:5280/ws", "CMAAS_DEVICE_GATEWAY": "gw.test"}
        | {"CMAAS_WEB_BIND": "::1", "CMAAS_DEVICE_JID": "Bob@Example.org"}
    )
    assert ipv6.url == "http://[::1]:5290/?jid=bob@example.org"


def test_the_command_refuses_a_public_address_before_serving(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CMAAS_"):
            monkeypatch.delenv(name)
    web = ["device", "web", "--websocket", "ws://127.0.0.1:1/ws", "--gateway", "gw.test"]
    status = main(["--env-file", os.devnull, *web, "--bind", "192.0.2.1"])
    assert status == 1
    assert "not a loopback address" in capsys.readouterr().err
