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

from cmaas.settings import Settings, load_settings

if TYPE_CHECKING:
    from cmaas.component.runner import Gateway

log = logging.getLogger(__name__)

__all__ = ["add_parser"]

_DOMAIN = "cmaas.test"
_COMPONENT = f"gateway.{_DOMAIN}"


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
    from cmaas.cli.main import configure_logging

    configure_logging("INFO")
    return asyncio.run(_dev(args.server, args.duration))


async def _dev(kind: str, duration: float | None) -> int:
    from cmaas.component.runner import open_gateway
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
            await _first_message(running, server, password, device_dir)
            _banner(kind, server.c2s_port, password, settings, env_file, nodes, device_dir)
            if duration is not None:
                loop.call_later(duration, stop.set)
            await gateway
        log.info("gateway stopped")
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _first_message(gateway: Gateway, server: Any, password: str, device_dir: Path) -> None:
    """Show the whole path once: a device publishes its keys, an app seals a one-time
    password for it, the gateway carries it, the device opens it and acknowledges."""
    from cmaas.admin import AdminService, RegisterAppRequest
    from cmaas.component.delivery import FEEDBACK_EVENTS, Feedback, FeedbackKind
    from cmaas.device.client import DeviceClient
    from cmaas.device.config import DeviceConfig
    from cmaas.device.keyfile import KeyFile
    from cmaas.devservers.sender import DirectSender
    from cmaas.envelope import DeviceKeyring, OtpContent

    await AdminService(gateway.keystore).register_app(
        RegisterAppRequest(app_id="demo-bank", display_name="Demo Bank")
    )
    alice = f"alice@{_DOMAIN}"
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
    delivered: asyncio.Queue[Feedback] = asyncio.Queue()
    gateway.xmpp.add_event_handler(FEEDBACK_EVENTS[FeedbackKind.DELIVERED], delivered.put_nowait)
    async with DeviceClient(config) as device:
        await device.publish("demo phone")
        code = f"{secrets.randbelow(10**6):06d}"
        message_id = await DirectSender(gateway, "demo-bank").send(
            alice, OtpContent(code, "demo login")
        )
        async with asyncio.timeout(20):
            opened = await device.next_message()
            receipt = await delivered.get()
    assert isinstance(opened.content, OtpContent)
    print(
        f"""
First sealed message: demo-bank@{_COMPONENT} -> {alice}
  sealed by the app for device {device.keyring.device_id if device.keyring else "?"}, \
carried by the gateway as message {message_id}
  opened on the device: one-time password {opened.content.code} ({opened.content.purpose}),
  from "{opened.app_name}", app key {opened.app_fingerprint[:16]}... (pinned on first use)
  receipt back at the gateway from {receipt.sender}""",
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
