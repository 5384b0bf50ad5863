"""The gateway's one assembly point: every part built from settings in dependency order,
and run until signalled (``cmaas gateway run``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from cmaas.admin import AdminService
from cmaas.api import ClientAddresses, api_routes, error_middleware
from cmaas.api.door import Door, DoorLimits
from cmaas.api.health import health_routes
from cmaas.component.adhoc.access import AccessPolicy
from cmaas.component.adhoc.command import Access
from cmaas.component.adhoc.engine import AdhocEngine, SessionLimits
from cmaas.component.commands import admin_commands, device_commands, messaging_commands
from cmaas.component.contacts import AppContacts
from cmaas.component.gateway import GatewayComponent
from cmaas.component.ping_replies import PingReplies
from cmaas.delivery.auth import RequestAuthenticator
from cmaas.delivery.backlog import SharedDepth
from cmaas.delivery.blobs import BlobLimits, BlobService
from cmaas.delivery.destinations import PublicOnlyResolver
from cmaas.delivery.dispatcher import Dispatcher
from cmaas.delivery.doorbells import SHARED_POLL_FLOOR_S, Doorbells
from cmaas.delivery.envelope_checks import EnvelopeChecks, EnvelopeWorkers
from cmaas.delivery.events import EventHub
from cmaas.delivery.instances import (
    Instance,
    InstanceFenced,
    InstanceLeadership,
    lead,
)
from cmaas.delivery.maintenance import Housekeeper
from cmaas.delivery.metrics import GatewayMetrics
from cmaas.delivery.notices import NoticeConsumer
from cmaas.delivery.omemo import OmemoLimits
from cmaas.delivery.ratelimit import RateLimiter, SharedBuckets, TokenBuckets
from cmaas.delivery.recipient_omemo import RecipientOmemoLookup
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import AdmissionLimits, SubmissionService
from cmaas.delivery.tracker import StatusTracker
from cmaas.delivery.urgency import UrgentTraffic
from cmaas.delivery.webhooks import WebhookConsumer
from cmaas.keydirectory import DeviceLimits, KeyDirectory
from cmaas.keystore import GatewayLock, Keystore, MasterKeyring, SqliteKeystore
from cmaas.keystore.sqlite import default_blob_dir
from cmaas.settings import PostgresDatabase, Settings
from cmaas.shutdown import stop_on_signals
from cmaas.xmpp.link import XmppLink, wait_first

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "Gateway",
    "blob_dir",
    "collect_young_less_often",
    "freeze_startup_heap",
    "open_gateway",
    "open_keystore",
    "run_gateway",
]

if TYPE_CHECKING:
    from cmaas.keystore.postgres import PostgresBellRelay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gateway:
    """The assembled gateway: storage, key directory, delivery engine, component, link."""

    keystore: Keystore
    directory: KeyDirectory
    xmpp: GatewayComponent
    link: XmppLink
    ping_link: XmppLink | None
    messaging: Messaging
    dispatcher: Dispatcher
    webhooks: WebhookConsumer
    http_url: str
    instance: Instance

    async def run_links(self, stop: asyncio.Event) -> None:
        """Keep the component link, and the ping reply link if any, up until ``stop``,
        or until this instance is fenced."""
        links = [self.link] if self.ping_link is None else [self.link, self.ping_link]
        until = asyncio.Event()

        async def watch() -> None:
            await wait_first(stop, self.instance.fenced)
            until.set()

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(link.run(until) for link in links))
        finally:
            watcher.cancel()


async def open_keystore(settings: Settings) -> Keystore:
    """The keystore ``CMAAS_DATABASE`` names: a PostgreSQL database, or a SQLite file.

    Raises:
        SchemaTooNew: The database was migrated by a newer CMaaS.
        sqlite3.Error, psycopg.Error: The database cannot be opened or reached.
    """
    keyring = MasterKeyring(settings.master_key, settings.previous_master_key)
    if isinstance(settings.database, PostgresDatabase):
        # Imported only here: PostgreSQL's driver costs a SQLite gateway 9 MiB.
        from cmaas.keystore.postgres import PostgresKeystore

        return await PostgresKeystore.open(settings.database.url, keyring)
    return await SqliteKeystore.open(settings.database, keyring, blob_dir=blob_dir(settings))


def blob_dir(settings: Settings) -> Path:
    """Where a SQLite gateway keeps its blobs' files: ``CMAAS_BLOB_DIR``, else beside
    the database file.

    Raises: ValueError: The database is PostgreSQL, which keeps blobs itself.
    """
    if isinstance(settings.database, PostgresDatabase):
        raise ValueError("a PostgreSQL database keeps blobs itself, not in a directory")
    return settings.blob_dir or default_blob_dir(settings.database)


async def run_gateway(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set, or until SIGTERM/SIGINT when it is ``None``.

    Raises:
        DatabaseInUse: Another gateway process holds the SQLite database.
        InstanceFenced: Another instance took this one for dead (or it lost the
            database): it stopped, and must be started again as a new instance.
        KeystoreError: The database cannot be migrated or read.
        OSError: The HTTP listener cannot bind, or an admission worker cannot start.
        WorkerLost: An admission worker ended as it started.
    """
    stop = stop or stop_on_signals()
    async with open_gateway(settings) as gateway:
        freeze_startup_heap()
        collect_young_less_often()
        await gateway.run_links(stop)
    if gateway.instance.fenced.is_set():
        raise InstanceFenced(
            f"instance {gateway.instance.epoch} was fenced and stopped; start it again"
        )
    log.info("gateway stopped")


async def start_envelope_checks(workers: int) -> EnvelopeChecks:
    """Envelope checks in ``workers`` worker processes, started; in this process for 0.

    Raises:
        OSError: A worker could not be started.
        WorkerLost: A worker ended as it started.
    """
    if workers == 0:
        return EnvelopeChecks()
    pool = EnvelopeWorkers(workers)
    try:
        await pool.start()
    except BaseException:
        await pool.close()
        raise
    return pool


GC_YOUNG_THRESHOLD = 10_000
"""New objects the collector tracks, net of those freed, between two collections of the
youngest generation (CPython's default: 700)."""


def collect_young_less_often() -> None:
    """Collect the youngest generation after :data:`GC_YOUNG_THRESHOLD` new objects.

    A batch of 500 submissions holds some thousands of dictionaries and lists while its
    request lasts, and reference counting frees them when it ends. At 700 the collector
    walked them over and over and promoted them to older generations, which then walked
    them again: about 4 % of the gateway's CPU while a backlog drained (bench item c).
    At 10,000 a collection is rare under that load; garbage in cycles waits for at most
    that many new objects.
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def freeze_startup_heap() -> None:
    """Leave what the process holds once started out of every later garbage collection.

    A full collection walks every object that the collector tracks, and most of them
    are the modules, classes and settings loaded at startup, which live as long as the
    process. Each one held the event loop for 45-60 ms of CPU, a few times a minute
    under load, and every OTP in flight waited for it; after the freeze, 6-13 ms. What
    is garbage now is collected first, so that nothing is frozen that could be freed.
    """
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Open the database, start the delivery engine and the HTTP listener, and build
    the component; the caller runs ``gateway.link``. Everything is closed on exit.

    Built in dependency order: storage; the component and its link, through which
    everything goes out; the delivery engine; the ad-hoc commands, which the component
    then serves; the HTTP API. What must follow the link subscribes to it.

    Raises: as :func:`run_gateway`.
    """
    async with AsyncExitStack() as stack:
        # Storage: a SQLite file for this gateway process alone, or a PostgreSQL
        # database shared with other instances, one of which leads.
        shared = isinstance(settings.database, PostgresDatabase)
        if not isinstance(settings.database, PostgresDatabase):
            stack.callback(GatewayLock.take(settings.database).release)
        keystore = await open_keystore(settings)
        stack.push_async_callback(keystore.close)
        store = keystore.messages
        domain = settings.component_jid
        epoch = await store.register_instance(
            settings.instance_host or f"{socket.gethostname()}:{os.getpid()}",
            dead_after_ms=int(settings.dead_after * 1000) if shared else None,
        )
        # On SQLite too: the one process takes it once its predecessors are fenced.
        leader = InstanceLeadership(store, epoch)
        stack.push_async_callback(leader.release)

        # The component and its link, and this instance's own host for its pings.
        ping_replies, ping_link = None, None
        if settings.instance_host is not None:
            ping_replies = PingReplies(settings.instance_host, settings.component_secret)
            ping_link = XmppLink(
                ping_replies,
                settings.xmpp_host,
                settings.xmpp_port,
                name="ping reply link",
                max_delay=settings.reconnect_max_delay,
            )
        xmpp = GatewayComponent(
            domain,
            settings.component_secret,
            AppContacts(keystore, domain),
            server=min(settings.served_domains),
            max_depth=settings.xmpp_max_depth,
            ping_replies=ping_replies,
        )
        link = XmppLink(
            xmpp,
            settings.xmpp_host,
            settings.xmpp_port,
            max_delay=settings.reconnect_max_delay,
            standby_retry=settings.standby_retry,
        )

        # The delivery engine.
        directory = KeyDirectory(
            keystore,
            notify_low=xmpp.notify_prekeys_low,
            limits=DeviceLimits(
                prekeys_per_app=settings.prekeys_per_app,
                prekey_window_s=int(settings.prekeys_per_app_window),
                revoked_kept=settings.revoked_devices_kept,
            ),
        )
        urgent = UrgentTraffic()
        xmpp.acknowledge_at_once_while(lambda: not urgent.all_answered)
        dispatcher = Dispatcher(
            store, xmpp, resend_window_s=settings.resend_window, owner=epoch, urgent=urgent
        )
        instance = Instance(
            store,
            dispatcher,
            epoch,
            heartbeat_s=settings.heartbeat,
            dead_after_s=settings.dead_after if shared else None,
            resend_window_s=settings.resend_window,
        )
        xmpp.feedback.subscribe(StatusTracker(store, dispatcher.resend, urgent=dispatcher.reported))
        # Long-polls wake when this process commits their answer; with a shared
        # database, also when another instance does (and read again at a floor).
        relay: PostgresBellRelay | None = None
        if isinstance(settings.database, PostgresDatabase):
            from cmaas.keystore.postgres import PostgresBellRelay

            relay = PostgresBellRelay(settings.database.url, origin=str(epoch))
        poll_floor = SHARED_POLL_FLOOR_S if relay is not None else None
        hub = EventHub(keystore, Doorbells("events", relay, poll_floor))
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=PublicOnlyResolver())
            if settings.webhook_deny_private
            else None
        )
        stack.push_async_callback(session.close)
        webhooks = WebhookConsumer(
            keystore,
            session,
            timeout_s=settings.webhook_timeout,
            max_backoff_s=settings.webhook_max_backoff,
            deny_private=settings.webhook_deny_private,
        )
        notices = NoticeConsumer(keystore, xmpp, resend_window_s=settings.resend_window)
        for listener in (dispatcher, notices):
            link.listen(listener)
        for consumer in (webhooks, notices):
            consumer.follow()
        envelopes = await start_envelope_checks(settings.admission_workers)
        stack.push_async_callback(envelopes.close)
        metrics = GatewayMetrics(
            depth=dispatcher.depth,
            inflight=lambda: dispatcher.inflight,
            resent=lambda: dispatcher.resent,
            link=lambda: (int(link.up), link.connects),
            pings=lambda: (xmpp.pings_answered, xmpp.pings_unanswered),
            consumers={"webhook": webhooks, "xmpp_notice": notices},
            admission_workers=lambda: (envelopes.alive, envelopes.replaced),
            feedback=lambda: (xmpp.feedback.in_progress, xmpp.feedback.backlogged),
        )
        resolver = RecipientResolver(keystore, settings.served_domains)
        # Rates hold across the instances sharing a PostgreSQL database: their buckets
        # are rows there. One gateway process has a SQLite file (GatewayLock): its
        # memory holds every request the file sees, and costs no write per request.
        buckets: RateLimiter = SharedBuckets(keystore.rates) if shared else TokenBuckets()
        submissions = SubmissionService(
            keystore,
            resolver,
            dispatcher.enqueue,
            # Back-pressure counts every instance's queue: in the database, where shared.
            SharedDepth(store) if shared else dispatcher.depth,
            component_domain=domain,
            limits=AdmissionLimits(
                bulk_backlog=settings.outbox_bulk_limit,
                normal_backlog=settings.outbox_normal_limit,
            ),
            buckets=buckets,
            on_outcomes=metrics.on_outcomes,
            owner=dispatcher.owner_for_new,
            envelopes=envelopes,
            urgent=urgent,
        )
        recipient_omemo = RecipientOmemoLookup(xmpp.pep, asker=xmpp)
        xmpp.on_subscribed(recipient_omemo.forget)
        messaging = Messaging(
            keystore,
            directory,
            resolver,
            submissions,
            hub,
            component_domain=domain,
            omemo_limits=OmemoLimits(settings.omemo_max_devices, settings.omemo_max_prekeys),
            recipient_omemo=recipient_omemo,
            key_transports=xmpp,
            inbound_bells=Doorbells("omemo_inbound", relay, poll_floor),
        )
        xmpp.omemo_inbound.subscribe(messaging.omemo.received)
        authenticator = RequestAuthenticator(keystore)
        for on_events in (hub.on_events, dispatcher.on_events, metrics.on_events):
            store.listen(on_events)
        hub.subscribe(webhooks.kick)
        hub.subscribe(notices.kick)
        blob_service = BlobService(
            keystore.blobs,
            BlobLimits(settings.blob_max_bytes, settings.blob_quota_bytes, settings.blob_max_count),
            plans=keystore.get_plan,
            buckets=buckets,
        )
        # The ad-hoc commands, served by the component.
        adhoc = AdhocEngine(
            [
                *admin_commands(
                    AdminService(keystore, deny_private=settings.webhook_deny_private),
                    domain,
                ),
                *device_commands(directory),
                *messaging_commands(keystore, messaging, authenticator),
            ],
            AccessPolicy(settings.admins, settings.served_domains, keystore),
            keystore.adhoc_sessions,
            settings.adhoc_session_timeout,
            limits=SessionLimits(
                per_account=settings.adhoc_sessions_per_account,
                per_class={
                    Access.ADMIN: settings.adhoc_admin_sessions,
                    Access.USER: settings.adhoc_user_sessions,
                    Access.APP: settings.adhoc_app_sessions,
                },
                lifetime_s=settings.adhoc_session_lifetime,
            ),
        )
        xmpp.serve(adhoc)
        housekeeper = Housekeeper(
            store,
            rates=keystore.rates if shared else None,
            retention_s=settings.retention_days * 86400.0,
            blobs=blob_service,
            omemo=messaging.omemo,
            purge_sessions=adhoc.purge_expired,
        )

        # Running: the engine's loops, then the HTTP API.
        await instance.take_over()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(dispatcher.run(stop), name="cmaas dispatcher"),
            asyncio.create_task(instance.run(stop), name="cmaas instance"),
        ]
        if relay is not None:
            tasks.append(asyncio.create_task(relay.run(stop), name="cmaas doorbells"))

        async def on_lead() -> None:
            for consumer in (webhooks, notices):
                consumer.lead(epoch)
                await consumer.start()  # notices wait for the link, if it is down
            tasks.append(asyncio.create_task(housekeeper.run(stop), name="cmaas housekeeping"))

        async def while_leading() -> None:
            # Events that other instances commit wake no one here: poll for them.
            if shared:
                await webhooks.catch_up()
                if link.up:
                    await notices.catch_up()

        tasks.append(
            asyncio.create_task(
                lead(
                    leader,
                    stop,
                    instance.fenced,
                    every_s=settings.heartbeat,
                    on_lead=on_lead,
                    while_leading=while_leading,
                ),
                name="cmaas leadership",
            )
        )

        async def stop_engine() -> None:
            stop.set()
            hub.release()
            messaging.omemo.release()
            await asyncio.gather(*tasks, return_exceptions=True)
            await webhooks.stop()
            await notices.stop()

        door = Door(door_limits(settings), settings.trusted_proxies)
        http = web.Application(
            client_max_size=settings.http_max_body,
            middlewares=[error_middleware(metrics), door.middleware],
        )
        http.add_routes(health_routes(link, dispatcher.depth, ping_link))
        http.add_routes(
            api_routes(
                messaging,
                authenticator,
                ClientAddresses(settings.trusted_proxies),
                metrics,
                settings.metrics_networks,
                blob_service,
                door,
            )
        )
        # A compressed body would be expanded by aiohttp before any handler could
        # refuse it; the door refuses Content-Encoding, and nothing is decompressed.
        runner = web.AppRunner(http, access_log=None, auto_decompress=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        stack.callback(door.quiet_accept_errors(asyncio.get_running_loop()))
        stack.push_async_callback(stop_engine)
        # Runs first on the way out: stanza handlers that started before the link closed
        # may still be reading the keystore; give them a moment before it closes.
        stack.push_async_callback(_let_handlers_finish)
        tls = _tls_context(settings)
        http_listener = await door.serve(runner, settings.http_host, settings.http_port, tls)
        # Closed, not awaited: aiohttp's cleanup closes the connections it leaves.
        stack.callback(http_listener.close)
        _check_descriptors(settings.http_max_connections)
        scheme = "https" if tls else "http"
        http_url = f"{scheme}://{settings.http_host}:{settings.http_port}"
        log.info("gateway %s: API on %s, database %s", domain, http_url, settings.database)
        yield Gateway(
            keystore,
            directory,
            xmpp,
            link,
            ping_link,
            messaging,
            dispatcher,
            webhooks,
            http_url,
            instance,
        )


def door_limits(settings: Settings) -> DoorLimits:
    return DoorLimits(
        header_timeout_s=settings.http_header_timeout,
        body_timeout_s=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
        max_connections_per_ip=settings.http_max_connections_per_ip,
        max_requests_per_app=settings.http_max_requests_per_app,
        max_long_polls_per_app=settings.http_max_long_polls_per_app,
        max_bodies_in_flight=settings.http_max_bodies_in_flight,
    )


# Descriptors the gateway needs beside its HTTP connections: the database and its
# journal, the XMPP link, webhook connections, blob files, logs.
_OTHER_DESCRIPTORS = 100


def _check_descriptors(max_connections: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < max_connections + _OTHER_DESCRIPTORS:
        log.warning(
            "the file descriptor limit (%d) leaves too little room for"
            " CMAAS_HTTP_MAX_CONNECTIONS=%d: raise LimitNOFILE (docs/operators.md)",
            soft,
            max_connections,
        )


async def _let_handlers_finish(within: float = 0.5) -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    if others:
        await asyncio.wait(others, timeout=within)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.http_tls_cert is None or settings.http_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.http_tls_cert, settings.http_tls_key)
    return context
