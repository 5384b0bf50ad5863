"""``cmaas dev run``: the gateway against a throwaway local IM server, for a first look."""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from slixmpp.exceptions import IqError

from cmaas.settings import Settings, load_settings

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
    from cmaas.component.runner import run_gateway
    from cmaas.devservers import ensure_installed, free_port, start_ejabberd, start_prosody
    from cmaas.devservers.client import AdhocClient

    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="cmaas-dev-"))
    start = start_prosody if kind == "prosody" else start_ejabberd
    server = start(workdir / kind, domain=_DOMAIN, component_domain=_COMPONENT)
    try:
        password = secrets.token_urlsafe(12)
        server.register_user("admin", password)
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
        gateway = asyncio.create_task(run_gateway(settings, stop))
        async with AdhocClient(
            f"admin@{_DOMAIN}/dev", password, server.host, server.c2s_port
        ) as admin:
            nodes = await _wait_for_commands(admin, gateway)
        _banner(kind, server.c2s_port, password, settings, env_file, nodes)
        if duration is not None:
            loop.call_later(duration, stop.set)
        await gateway
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


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
    kind: str, c2s_port: int, password: str, settings: Settings, env_file: Path, nodes: list[str]
) -> None:
    beside = Path(sys.executable).with_name("cmaas")
    cmaas = str(beside) if beside.exists() else "cmaas"
    print(
        f"""
CMaaS gateway is running against a throwaway {kind} on loopback.

  XMPP server     127.0.0.1:{c2s_port}  (plain, no TLS: loopback only)
  Admin account   admin@{_DOMAIN}  password {password}
  Gateway         {settings.component_jid}  (XEP-0114 component)
  Health          http://{settings.http_host}:{settings.http_port}/healthz

Admin commands answered by the gateway (XEP-0050, e.g. Gajim: Accounts > Execute command
on {settings.component_jid}):
"""
        + "".join(f"  {node}\n" for node in sorted(nodes))
        + f"""
The same operations from a shell, against the same database:
  {cmaas} --env-file {env_file} admin app-register my-app --name "My App" --network 127.0.0.1
  {cmaas} --env-file {env_file} admin app-list

Ctrl-C stops everything and removes the throwaway files.
""",
        flush=True,
    )
