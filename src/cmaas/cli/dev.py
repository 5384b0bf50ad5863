"""``cmaas dev run``: the gateway against a throwaway local IM server, for a first look."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slixmpp.exceptions import IqError

from cmaas.cli.logging_setup import configure_logging
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.settings import Settings, load_settings
from cmaas.wire import StatusEvent

if TYPE_CHECKING:
    from cmaas.assembly import Gateway

log = logging.getLogger(__name__)

__all__ = ["add_parser"]

_DOMAIN = "cmaas.test"
_COMPONENT = f"gateway.{_DOMAIN}"
_MOBILE = "+919876543210"


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
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    configure_logging("INFO")
    return asyncio.run(_dev(args.server, args.duration))


async def _dev(kind: str, duration: float | None) -> int:
    from cmaas.assembly import open_gateway
    from cmaas.devservers import ensure_installed, free_port, start_ejabberd, start_prosody
    from cmaas.devservers.client import AdhocClient

    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="cmaas-dev-"))
    start = start_prosody if kind == "prosody" else start_ejabberd
    server = start(workdir / kind, domain=_DOMAIN, component_domain=_COMPONENT)
    try:
        password = secrets.token_urlsafe(12)
        server.register_user("admin", password)
        server.register_user("alice", password)
        master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        env = {
            "CMAAS_COMPONENT_JID": _COMPONENT,
            "CMAAS_COMPONENT_SECRET": server.component_secret,
            "CMAAS_XMPP_HOST": server.host,
            "CMAAS_XMPP_PORT": str(server.component_port),
            "CMAAS_DATABASE": str(workdir / "cmaas.sqlite3"),
            "CMAAS_ADMINS": f"admin@{_DOMAIN}",
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
        async with open_gateway(settings) as running:
            gateway = asyncio.create_task(running.link.run(stop))
            async with AdhocClient(
                f"admin@{_DOMAIN}/dev", password, server.host, server.c2s_port
            ) as admin:
                nodes = await _wait_for_commands(admin, gateway)
            device_dir = workdir / "alice-device"
            await _first_message(
                running, server, password, device_dir, workdir / "demo-bank-client"
            )
            _banner(kind, server.c2s_port, password, settings, env_file, nodes, device_dir)
            if duration is not None:
                loop.call_later(duration, stop.set)
            await gateway
        log.info("gateway stopped")
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _first_message(
    gateway: Gateway, server: Any, password: str, device_dir: Path, client_dir: Path
) -> None:
    """Show the whole path once: a device publishes its keys; the app, through the client
    service, seals a one-time password for it at the source and submits it over the HTTP
    API; the gateway carries it; the device opens it; and the statuses come back."""
    from cmaas.admin import AdminService, DirectoryRequest, RegisterAppRequest
    from cmaas.clientservice import AppCredentials, ClientConfig, GatewayClient
    from cmaas.device.client import DeviceClient
    from cmaas.device.config import DeviceConfig
    from cmaas.device.keyfile import KeyFile
    from cmaas.envelope import DeviceKeyring, OtpContent

    admin = AdminService(gateway.keystore)
    issued = await admin.register_app(
        RegisterAppRequest(app_id="demo-bank", display_name="Demo Bank", networks=["127.0.0.1"])
    )
    alice = f"alice@{_DOMAIN}"
    await admin.set_directory(DirectoryRequest(address=_MOBILE, jid=alice))
    config = DeviceConfig(
        jid=alice,
        password=password,
        gateway=_COMPONENT,
        state_dir=device_dir,
        host=server.host,
        port=server.c2s_port,
        require_tls=False,
        resource="demo-phone",
    )
    KeyFile(config.keyring_path).create(
        DeviceKeyring.generate(alice, now_ms=int(time.time() * 1000)), None
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
        print(f"  status at the app: {event.status.value}{where}", flush=True)
        if event.status is MessageStatus.READ:
            read.set()

    print(f"\nFirst sealed message: demo-bank@{_COMPONENT} -> {_MOBILE} ({alice})", flush=True)
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
        flush=True,
    )


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


def _banner(
    kind: str,
    c2s_port: int,
    password: str,
    settings: Settings,
    env_file: Path,
    nodes: list[str],
    device_dir: Path,
) -> None:
    beside = Path(sys.executable).with_name("cmaas")
    cmaas = str(beside) if beside.exists() else "cmaas"
    print(
        f"""
CMaaS gateway is running against a throwaway {kind} on loopback.

  XMPP server     127.0.0.1:{c2s_port}  (plain, no TLS: loopback only)
  Admin account   admin@{_DOMAIN}  password {password}
  User account    alice@{_DOMAIN}  password {password}  (with a reference device)
  Gateway         {settings.component_jid}  (XEP-0114 component)
  Health          http://{settings.http_host}:{settings.http_port}/healthz
  App API         http://{settings.http_host}:{settings.http_port}/v1/  (docs/openapi.json)

Commands answered by the gateway to the admin (XEP-0050, e.g. Gajim: Accounts > Execute command
on {settings.component_jid}):
"""
        + "".join(f"  {node}\n" for node in sorted(nodes))
        + f"""
The same operations from a shell, against the same database:
  {cmaas} --env-file {env_file} admin app-register my-app --name "My App" --network 127.0.0.1
  {cmaas} --env-file {env_file} admin app-list

Alice's reference device, from another shell:
  CMAAS_DEVICE_PASSWORD={password} {cmaas} device devices --jid alice@{_DOMAIN} \\
    --dir {device_dir} --gateway {settings.component_jid} \\
    --host 127.0.0.1 --port {c2s_port} --plaintext

Ctrl-C stops everything and removes the throwaway files.
""",
        flush=True,
    )
