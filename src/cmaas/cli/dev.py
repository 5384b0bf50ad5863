"""``cmaas dev run``: the gateway against a throwaway local IM server, for a first look."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from slixmpp.exceptions import IqError

from cmaas.cli.logging_setup import configure_logging
from cmaas.device.web import WebDeviceConfig
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.settings import Settings, load_settings
from cmaas.wire import StatusEvent

if TYPE_CHECKING:
    from cmaas.assembly import Gateway
    from cmaas.keystore import IssuedCredentials

log = logging.getLogger(__name__)

__all__ = ["add_parser"]

_DOMAIN = "cmaas.test"
_COMPONENT = f"gateway.{_DOMAIN}"
_MOBILE = "+919876543210"
_APP_ID = "demo-bank"


def add_parser(parts: Any) -> None:
    parser = parts.add_parser("dev", help="try CMaaS locally against a throwaway IM server")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="start a loopback Prosody (or ejabberd), an admin account and the gateway",
        description="Starts a throwaway IM server on loopback with an admin account, runs"
        " the gateway against it, checks the admin commands answer, prints how to reach"
        " everything, and cleans up on Ctrl-C (or after --duration seconds). Needs root:"
        " the servers run as their own system users.",
    )
    run.add_argument("--server", choices=("prosody", "ejabberd"), default="prosody")
    run.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="once everything is up, print one JSON object on standard output with how to"
        " reach it (accounts and passwords, the API, the demo app's credentials); the"
        " progress lines go to standard error",
    )
    run.set_defaults(handler=_run)


@dataclass(frozen=True, slots=True)
class _Account:
    jid: str
    password: str


@dataclass(frozen=True, slots=True)
class _DemoApp:
    """The app the first message comes from, with the credentials issued to it."""

    credentials: IssuedCredentials
    client_dir: Path

    @property
    def jid(self) -> str:
        return f"{_APP_ID}@{_COMPONENT}"


@dataclass(frozen=True, slots=True)
class _Reachable:
    """Everything ``dev run`` tells people, and scripts with ``--json``."""

    kind: str
    host: str
    c2s_port: int
    admin: _Account
    alice: _Account
    settings: Settings
    env_file: Path
    nodes: list[str]
    device_dir: Path
    app: _DemoApp
    message_id: str
    statuses: list[str]
    websocket_url: str
    web_device_url: str | None

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def to_json(self) -> dict[str, object]:
        credentials = self.app.credentials
        return {
            "server": self.kind,
            "xmpp": {"host": self.host, "port": self.c2s_port, "tls": False},
            "domain": _DOMAIN,
            "component_domain": self.settings.component_jid,
            "accounts": {
                "admin": {"jid": self.admin.jid, "password": self.admin.password},
                "alice": {
                    "jid": self.alice.jid,
                    "password": self.alice.password,
                    "mobile": _MOBILE,
                    "device_dir": str(self.device_dir),
                },
            },
            "api_url": f"{self.http_url}/v1/",
            "websocket_url": self.websocket_url,
            "web_device_url": self.web_device_url,
            "health_url": f"{self.http_url}/healthz",
            "env_file": str(self.env_file),
            "app": {
                "app_id": _APP_ID,
                "app_jid": self.app.jid,
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
                "hmac_key": base64.b64encode(credentials.hmac_key).decode(),
                "client_dir": str(self.app.client_dir),
            },
            "first_message": {"message_id": self.message_id, "statuses": self.statuses},
            "commands": sorted(self.nodes),
        }


def _run(args: argparse.Namespace) -> int:
    configure_logging("INFO")
    return asyncio.run(_dev(args.server, args.duration, as_json=args.json))


async def _dev(kind: str, duration: float | None, *, as_json: bool) -> int:
    from cmaas.assembly import open_gateway
    from cmaas.devservers import ensure_installed, free_port, start_ejabberd, start_prosody
    from cmaas.devservers.client import AdhocClient

    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="cmaas-dev-"))
    start = start_prosody if kind == "prosody" else start_ejabberd
    server = start(workdir / kind, domain=_DOMAIN, component_domain=_COMPONENT)
    # Progress is for people; with --json, standard output carries the one object only.
    progress = sys.stderr if as_json else sys.stdout
    try:
        # One password each: a leaked demo password must not open the admin account.
        admin = _Account(f"admin@{_DOMAIN}", secrets.token_urlsafe(12))
        alice = _Account(f"alice@{_DOMAIN}", secrets.token_urlsafe(12))
        for account in (admin, alice):
            server.register_user(account.jid.partition("@")[0], account.password)
        master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        env = {
            "CMAAS_COMPONENT_JID": _COMPONENT,
            "CMAAS_COMPONENT_SECRET": server.component_secret,
            "CMAAS_XMPP_HOST": server.host,
            "CMAAS_XMPP_PORT": str(server.component_port),
            "CMAAS_DATABASE": str(workdir / "cmaas.sqlite3"),
            "CMAAS_ADMINS": admin.jid,
            "CMAAS_MASTER_KEY": master_key,
            "CMAAS_HTTP_HOST": "127.0.0.1",
            "CMAAS_HTTP_PORT": str(free_port()),
        }
        env_file = workdir / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        settings = load_settings(environ=env, env_file=None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with open_gateway(settings) as running, contextlib.AsyncExitStack() as stack:
            gateway = asyncio.create_task(running.link.run(stop))
            async with AdhocClient(
                f"{admin.jid}/dev", admin.password, server.host, server.c2s_port
            ) as commands:
                nodes = await _wait_for_commands(commands, gateway)
            device_dir = workdir / "alice-device"
            app, message_id, statuses = await _first_message(
                running, server, alice, device_dir, workdir / f"{_APP_ID}-client", progress
            )
            web_config = WebDeviceConfig(
                websocket=server.websocket_url,
                gateway=_COMPONENT,
                blob_origins=(running.http_url,),
                jid=alice.jid,
            )
            web_device = await _serve_web_device(stack, web_config, progress)
            reachable = _Reachable(
                kind,
                server.host,
                server.c2s_port,
                admin,
                alice,
                settings,
                env_file,
                nodes,
                device_dir,
                app,
                message_id,
                statuses,
                server.websocket_url,
                web_device,
            )
            if as_json:
                print(json.dumps(reachable.to_json()), flush=True)
            else:
                _banner(reachable)
            if duration is not None:
                loop.call_later(duration, stop.set)
            await gateway
        log.info("gateway stopped")
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _first_message(
    gateway: Gateway,
    server: Any,
    alice: _Account,
    device_dir: Path,
    client_dir: Path,
    progress: TextIO,
) -> tuple[_DemoApp, str, list[str]]:
    """Show the whole path once: a device publishes its keys; the app, through the client
    service, seals a one-time password for it at the source and submits it over the HTTP
    API; the gateway carries it; the device opens it; and the statuses come back.

    Returns: the demo app with its credentials, the message id and the statuses seen.
    """
    from cmaas.admin import AdminService, DirectoryRequest, RegisterAppRequest
    from cmaas.clientservice import AppCredentials, ClientConfig, GatewayClient
    from cmaas.device.client import DeviceClient
    from cmaas.device.config import DeviceConfig
    from cmaas.device.keyfile import KeyFile
    from cmaas.envelope import DeviceKeyring, OtpContent

    admin = AdminService(gateway.keystore)
    issued = await admin.register_app(
        RegisterAppRequest(app_id=_APP_ID, display_name="Demo Bank", networks=["127.0.0.1"])
    )
    await admin.set_directory(DirectoryRequest(address=_MOBILE, jid=alice.jid))
    config = DeviceConfig(
        jid=alice.jid,
        password=alice.password,
        gateway=_COMPONENT,
        state_dir=device_dir,
        host=server.host,
        port=server.c2s_port,
        require_tls=False,
        resource="demo-phone",
    )
    KeyFile(config.keyring_path).create(
        DeviceKeyring.generate(alice.jid, now_ms=int(time.time() * 1000)), None
    )
    credentials = issued.credentials
    client_config = ClientConfig(
        gateway.http_url,
        AppCredentials(credentials.client_id, credentials.client_secret, credentials.hmac_key),
        client_dir,
    )
    statuses: list[str] = []
    stop = asyncio.Event()
    read = asyncio.Event()

    def arrived(event: StatusEvent) -> None:
        where = f" (device {event.device})" if event.device else ""
        statuses.append(event.status.value)
        print(f"  status at the app: {event.status.value}{where}", file=progress, flush=True)
        if event.status is MessageStatus.READ:
            read.set()

    print(
        f"\nFirst sealed message: {_APP_ID}@{_COMPONENT} -> {_MOBILE} ({alice.jid})",
        file=progress,
        flush=True,
    )
    async with DeviceClient(config) as device, GatewayClient(client_config) as client:
        await device.publish("demo phone")
        following = asyncio.create_task(client.follow(arrived, stop))
        code = f"{secrets.randbelow(10**6):06d}"
        sent = await client.send(_MOBILE, otp=code, purpose="demo login", priority=Priority.HIGH)
        async with asyncio.timeout(20):
            opened = await device.next_message()
        assert isinstance(opened.content, OtpContent)
        print(
            f"  opened on the device: one-time password {opened.content.code}"
            f' ({opened.content.purpose}), from "{opened.app_name}",'
            f" app key {opened.app_fingerprint[:16]}... (pinned on first use)",
            file=progress,
            flush=True,
        )
        device.mark_read(opened.message_id)
        async with asyncio.timeout(20):
            await read.wait()
        stop.set()
        await following
    print(
        f"  message {sent.message_id}: {' -> '.join(statuses)}; the gateway held only"
        " the sealed envelope",
        file=progress,
        flush=True,
    )
    return _DemoApp(credentials, client_dir), sent.message_id, statuses


async def _serve_web_device(
    stack: contextlib.AsyncExitStack, config: WebDeviceConfig, progress: TextIO
) -> str | None:
    """Serve the web device for the demo user, as ``cmaas device web`` does, until
    ``stack`` closes.

    Returns: its URL, or ``None`` when it cannot be served (the page is not built, or
    its fixed port is taken); the progress line says why.
    """
    from cmaas.device.web import WEB_STATIC, StaticFiles, WebDeviceError, serving_web_device

    try:
        static = StaticFiles.load(WEB_STATIC)
        await stack.enter_async_context(serving_web_device(config, static))
    except (WebDeviceError, OSError) as error:
        print(f"  the web device is not served: {error}", file=progress, flush=True)
        return None
    return config.url


async def _wait_for_commands(admin: Any, gateway: asyncio.Task[None]) -> list[str]:
    for _attempt in range(50):
        if gateway.done():
            gateway.result()  # raises what stopped the gateway
        try:
            nodes: list[str] = await admin.command_nodes(_COMPONENT)
        except IqError:  # the component link is not up yet
            nodes = []
        if nodes:
            return nodes
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not answer disco#items within 10 s")


def _banner(reachable: _Reachable) -> None:
    beside = Path(sys.executable).with_name("cmaas")
    cmaas = str(beside) if beside.exists() else "cmaas"
    settings, credentials = reachable.settings, reachable.app.credentials
    admin, alice = reachable.admin, reachable.alice
    env_file = reachable.env_file
    hmac_key = base64.b64encode(credentials.hmac_key).decode()
    web_device = (
        f"Alice's web device, in a browser on this machine (sign in with her password):\n"
        f"  {reachable.web_device_url}\n"
        if reachable.web_device_url
        else f"Alice's web device, once built (scripts/build-web-device), from another shell:\n"
        f"  {cmaas} device web --websocket {reachable.websocket_url} --gateway"
        f" {settings.component_jid} --blob-origin {reachable.http_url} --jid {alice.jid}\n"
    )
    print(
        f"""
CMaaS gateway is running against a throwaway {reachable.kind} on loopback.

  XMPP server     {reachable.host}:{reachable.c2s_port}  (plain, no TLS: loopback only)
  WebSocket       {reachable.websocket_url}
  Admin account   {admin.jid}  password {admin.password}
  User account    {alice.jid}  password {alice.password}  (with a reference device)
  Gateway         {settings.component_jid}  (XEP-0114 component)
  Health          {reachable.http_url}/healthz
  App API         {reachable.http_url}/v1/  (docs/openapi.json)
  Demo app        {reachable.app.jid}  client id {credentials.client_id}
                  client secret {credentials.client_secret}
                  HMAC key {hmac_key}

Commands answered by the gateway to the admin (XEP-0050, e.g. Gajim: Accounts > Execute command
on {settings.component_jid}):
"""
        + "".join(f"  {node}\n" for node in sorted(reachable.nodes))
        + f"""
The same operations from a shell, against the same database:
  {cmaas} --env-file {env_file} admin app-register my-app --name "My App" --network 127.0.0.1
  {cmaas} --env-file {env_file} admin app-list

Another message from the demo app, from another shell:
  CMAAS_CLIENT_URL={reachable.http_url} CMAAS_CLIENT_ID={credentials.client_id} \\
    CMAAS_CLIENT_SECRET={credentials.client_secret} CMAAS_CLIENT_HMAC_KEY={hmac_key} \\
    CMAAS_CLIENT_DIR={reachable.app.client_dir} {cmaas} client send --to {_MOBILE} --text hello

Alice's reference device, from another shell:
  CMAAS_DEVICE_PASSWORD={alice.password} {cmaas} device devices --jid {alice.jid} \\
    --dir {reachable.device_dir} --gateway {settings.component_jid} \\
    --host {reachable.host} --port {reachable.c2s_port} --plaintext

{web_device}
Ctrl-C stops everything and removes the throwaway files.
""",
        flush=True,
    )
