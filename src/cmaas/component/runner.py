"""``cmaas gateway run``: assemble the gateway from settings and run it until signalled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from cmaas.admin import AdminService
from cmaas.apps import AppContacts
from cmaas.component.adhoc.access import AccessPolicy
from cmaas.component.adhoc.engine import AdhocEngine
from cmaas.component.commands import admin_commands, device_commands
from cmaas.component.gateway import GatewayComponent
from cmaas.component.health import health_routes
from cmaas.keydirectory import DeviceLimits, KeyDirectory, LowPoolNotifier
from cmaas.keystore import DeviceKeys, MasterKeyring, SqliteKeystore
from cmaas.settings import Settings
from cmaas.xmpp_link import XmppLink

__all__ = ["Gateway", "open_gateway", "run_gateway"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gateway:
    """The assembled gateway: its storage, key directory, component and link."""

    keystore: SqliteKeystore
    directory: KeyDirectory
    xmpp: GatewayComponent
    link: XmppLink


async def run_gateway(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set, or until SIGTERM/SIGINT when it is ``None``.

    Raises:
        KeystoreError: The database cannot be migrated or read.
        OSError: The HTTP listener cannot bind.
    """
    stop = stop or _stop_on_signals()
    async with open_gateway(settings) as gateway:
        await gateway.link.run(stop)
    log.info("gateway stopped")


@asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Open the database and the HTTP listener and build the component; the caller
    runs ``gateway.link``. Everything is closed on exit.

    Raises: as :func:`run_gateway`.
    """
    async with AsyncExitStack() as stack:
        keystore = await SqliteKeystore.open(
            settings.database,
            MasterKeyring(settings.master_key, settings.previous_master_key),
        )
        stack.push_async_callback(keystore.close)
        domain = settings.component_jid
        directory = KeyDirectory(keystore, notify_low=_late(lambda: xmpp.notify_prekeys_low))
        engine = AdhocEngine(
            [*admin_commands(AdminService(keystore), domain), *device_commands(directory)],
            AccessPolicy(settings.admins, settings.served_domains, keystore),
            settings.adhoc_session_timeout,
        )
        xmpp = GatewayComponent(
            domain, settings.component_secret, engine, AppContacts(keystore, domain)
        )
        link = XmppLink(
            xmpp, settings.xmpp_host, settings.xmpp_port, max_delay=settings.reconnect_max_delay
        )
        http = web.Application()
        http.add_routes(health_routes(link))
        runner = web.AppRunner(http, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        log.info(
            "gateway %s: HTTP on %s:%d, database %s",
            domain,
            settings.http_host,
            settings.http_port,
            settings.database,
        )
        yield Gateway(keystore, directory, xmpp, link)


def _late(get: Callable[[], LowPoolNotifier]) -> LowPoolNotifier:
    """A notifier resolved at call time: the component is built after the directory."""

    async def notify(device: DeviceKeys, limits: DeviceLimits) -> None:
        await get()(device, limits)

    return notify


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Windows has no loop signal handlers; Ctrl-C still raises KeyboardInterrupt there.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    return stop
