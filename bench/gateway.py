"""Items c and d: the whole gateway (``cmaas gateway run`` as its own process) between
signed HTTP submissions and the raw receipt responder.

(c) ingest: pre-sealed envelopes submitted in batches of 500, four requests in flight,
    timed from the first request until the gateway has recorded every receipt; on
    SQLite (c), on PostgreSQL (c-pg1) and, where the IM server lets several instances
    share the component domain, two instances on one PostgreSQL database (c-pg2). Each
    instance's CPU time over the timed part (and the PostgreSQL server's) is read from
    /proc and reported per message delivered.
(d) OTP latency: high-priority messages submitted one at a time every 20 ms while a
    backlog of bulk messages drains and the rest of it is still being submitted;
    latency is from the request until the gateway records the receipt (the event's
    timestamp).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.cpu import CpuSplit, gateway_part_seconds, tree_cpu_seconds
from bench.flood import Flood
from bench.measure import RECIPIENT, Settings, _responder, _until_stopped
from bench.raw_client import ReceiptResponder
from bench.report import Row, ms, percentile, say, ticker
from bench.timing import frozen_heap
from cmaas.api.door import DoorLimits
from cmaas.assembly import open_keystore
from cmaas.clientservice import AppCredentials, GatewayApi
from cmaas.clientservice.sealing import seal_submission
from cmaas.clock import now_ms
from cmaas.devservers import (
    PostgresServer,
    XmppServer,
    cmaas_executable,
    free_port,
    start_postgres,
)
from cmaas.envelope import (
    DeviceBundle,
    DeviceKeyring,
    PrivateKey,
    TextContent,
    b64url,
    generate_private_key,
    point_bytes,
)
from cmaas.keydirectory import KeyDirectory
from cmaas.lifecycle import (
    Priority,
)
from cmaas.settings import load_settings
from cmaas.wire import KeyLookup, Submission

__all__ = [
    "BenchGateway",
    "GatewayInstance",
    "Storage",
    "delivered_count",
    "delivered_total",
    "envelope_chars",
    "gateway_process",
    "ingest",
    "otp_latency",
    "shared_postgres",
    "stop_postgres",
    "submit_all",
    "wait_link",
    "workdir",
]

APP = "bench"
BATCH = 500
IN_FLIGHT = 4
BACKLOG = 20_000
OTP_EVERY_S = 0.02


@dataclass(frozen=True)
class GatewayInstance:
    """One ``cmaas gateway run`` process and the app's client of its HTTP API."""

    url: str
    api: GatewayApi
    process: subprocess.Popen[bytes]


@dataclass
class BenchGateway:
    """The gateway instances (one, or several on one PostgreSQL database), the app's
    signing key and the recipient's device."""

    instances: list[GatewayInstance]
    app_jid: str
    key: PrivateKey
    bundle: DeviceBundle
    credentials: AppCredentials
    # The PostgreSQL server's postmaster, when the instances share a database on it.
    postgres_pid: int | None = None

    @property
    def url(self) -> str:
        return self.instances[0].url

    @property
    def api(self) -> GatewayApi:
        return self.instances[0].api

    @property
    def apis(self) -> list[GatewayApi]:
        return [instance.api for instance in self.instances]

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.instances[0].process

    def seal(self, count: int, priority: Priority, prefix: str) -> list[Submission]:
        """Pre-seal ``count`` messages to the recipient's signed prekey (CPU, untimed)."""
        now = now_ms()
        return [
            _sealed(self.bundle, self.app_jid, self.key, n, priority, prefix, now)
            for n in range(count)
        ]


def _sealed(
    bundle: DeviceBundle,
    app_jid: str,
    key: PrivateKey,
    n: int,
    priority: Priority,
    prefix: str,
    now: int,
) -> Submission:
    return seal_submission(
        KeyLookup(bundle.jid, (bundle,)),
        bundle.jid,
        TextContent(f"{n:010d} benchmark message"),
        message_id=f"{prefix}{n}",
        app_jid=app_jid,
        app_key=key,
        priority=priority,
        created_ms=now,
        expires_ms=now + 3_600_000,
    )


def envelope_chars(server: XmppServer, count: int) -> int:
    """How long item c's envelopes are on ``server``: the one c seals last (the longest
    id), sealed here the same way for a throwaway device and key."""
    keyring = DeviceKeyring.generate(
        f"{RECIPIENT}@{server.domain}", now_ms=now_ms(), one_time_prekeys=0
    )
    app_jid = f"{APP}@{server.component_domain}"
    last = _sealed(
        keyring.bundle(), app_jid, generate_private_key(), count - 1, Priority.NORMAL, "c", now_ms()
    )
    assert last.envelope is not None  # sealed to a CMaaS device
    return len(last.envelope)


@dataclass(frozen=True)
class Storage:
    """Where the gateway instances keep their state: the SQLite file ``cmaas.sqlite3`` in
    the item's directory, or a fresh database on the run's PostgreSQL server shared by
    ``instances`` gateway processes (each with its ping reply host, if any given)."""

    postgres: bool = False
    instances: int = 1
    instance_hosts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if not self.postgres:
            return "SQLite"
        return f"PostgreSQL, {self.instances} instance{'s' if self.instances > 1 else ''}"


_postgres_servers: list[PostgresServer] = []


def shared_postgres() -> PostgresServer:
    """The run's PostgreSQL server, started on first use; :func:`stop_postgres` ends it.

    Raises: DevServerError: PostgreSQL is missing or did not start.
    """
    if not _postgres_servers:
        say("[postgres] starting")
        _postgres_servers.append(start_postgres())
    return _postgres_servers[0]


def stop_postgres() -> None:
    """Stop and delete the run's PostgreSQL server, if one was started."""
    while _postgres_servers:
        _postgres_servers.pop().remove()


def _start(
    server: XmppServer,
    workdir: Path,
    extra_env: dict[str, str],
    storage: Storage,
    database_name: str,
) -> tuple[dict[str, Any], list[tuple[subprocess.Popen[bytes], str]], DeviceKeyring]:
    """Register the app, raise the plan, publish the recipient's device and start the
    gateway processes (blocking work, run in a thread)."""
    workdir.mkdir(parents=True, exist_ok=True)
    master_key = os.urandom(32)
    if storage.postgres:
        database = shared_postgres().fresh_database(database_name)
    else:
        database = str(workdir / "cmaas.sqlite3")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
        "CMAAS_COMPONENT_JID": server.component_domain,
        "CMAAS_COMPONENT_SECRET": server.component_secret,
        "CMAAS_XMPP_HOST": server.host,
        "CMAAS_XMPP_PORT": str(server.component_port),
        "CMAAS_DATABASE": database,
        "CMAAS_MASTER_KEY": base64.b64encode(master_key).decode(),
        "CMAAS_HTTP_PORT": str(free_port()),
        "CMAAS_LOG_LEVEL": "WARNING",
        **extra_env,
    }

    def admin(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [cmaas_executable(), "--env-file", os.devnull, "admin", "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    issued = admin("app-register", APP, "--name", "Benchmark", "--network", "127.0.0.0/8")
    admin("plan-set", "default", "--rate", "100000", "--burst", "100000")
    jid = f"{RECIPIENT}@{server.domain}"
    keyring = DeviceKeyring.generate(jid, now_ms=int(time.time() * 1000), one_time_prekeys=0)

    async def publish() -> None:
        keystore = await open_keystore(load_settings(env, env_file=None))
        try:
            await KeyDirectory(keystore).publish(jid, keyring.bundle().to_bytes().decode())
        finally:
            await keystore.close()

    asyncio.run(publish())
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for index in range(storage.instances):
            port = free_port() if index else int(env["CMAAS_HTTP_PORT"])
            own = {**env, "CMAAS_HTTP_PORT": str(port)}
            if storage.instance_hosts:
                own["CMAAS_INSTANCE_HOST"] = storage.instance_hosts[index]
            process = _launch(own, workdir, f"gateway-{index}" if index else "gateway")
            started.append((process, f"http://127.0.0.1:{port}"))
    except BaseException:
        for process, _ in started:
            _stop(process)
        raise
    return issued, started, keyring


def _launch(env: dict[str, str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    # CMAAS_BENCH_PROFILE=DIR: the gateway runs under cProfile and leaves DIR/<item>.prof.
    profile_dir = os.environ.get("CMAAS_BENCH_PROFILE")
    profile = Path(profile_dir or ".") / f"{workdir.name}-{name}.prof"
    profiler = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile_dir else []
    with (workdir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [*profiler, cmaas_executable(), "--env-file", os.devnull, "gateway", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def bench_session() -> aiohttp.ClientSession:
    """An HTTP session that lets go of an idle keep-alive connection before the gateway
    does. The gateway closes one idle for its header timeout (10 s); aiohttp keeps one
    15 s by default, so a request written after 10 to 15 s of idling (while a busy
    machine seals 20,000 messages, say) met a closing connection and failed with "Can
    not write request body"."""
    keepalive_s = DoorLimits().header_timeout_s / 2
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=keepalive_s))


def workdir(server: XmppServer, item: str) -> Path:
    """A fresh directory for one item's gateway: its database, log and profile."""
    return Path(tempfile.mkdtemp(prefix=f"cmaas-bench-{server.kind}-{item}-"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@asynccontextmanager
async def gateway_process(
    server: XmppServer,
    session: aiohttp.ClientSession,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[BenchGateway]:
    """Gateway processes (one unless ``storage`` says more) with one app, its signing
    key, and the recipient's device."""
    storage = storage or Storage()
    database_name = f"bench_{secrets.token_hex(6)}"
    issued, started, keyring = await asyncio.to_thread(
        _start, server, workdir, extra_env or {}, storage, database_name
    )
    try:
        credentials = AppCredentials.from_issued(issued)
        instances = []
        for process, url in started:
            await wait_link(session, url, process)
            instances.append(GatewayInstance(url, GatewayApi(url, credentials, session), process))
        key = generate_private_key()
        await instances[0].api.register_signing_key(b64url(point_bytes(key.public_key())))
        app_jid = f"{APP}@{server.component_domain}"
        postgres_pid = _postmaster_pid() if storage.postgres else None
        yield BenchGateway(instances, app_jid, key, keyring.bundle(), credentials, postgres_pid)
    finally:
        for process, _ in started:
            await asyncio.to_thread(_stop, process)
        if storage.postgres:
            # Left behind, its tables would keep autovacuum and the checkpointer busy
            # through the next items, on the same two cores.
            await asyncio.to_thread(shared_postgres().drop_database, database_name)


def _postmaster_pid() -> int:
    data = shared_postgres().workdir / "data" / "postmaster.pid"
    return int(data.read_text().split("\n", 1)[0])


async def wait_link(
    session: aiohttp.ClientSession,
    url: str,
    process: subprocess.Popen[bytes],
    *,
    up: bool = True,
    within: float = 30.0,
) -> None:
    """Wait until the gateway's ``/healthz`` says its component link is up (or down).

    Raises: ConnectionError: The gateway exited, or the link did not change in time.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConnectionError(f"the gateway exited with {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/healthz") as response:
                if ((await response.json()).get("component_link") == "connected") is up:
                    return
        await asyncio.sleep(0.1)
    state = "up" if up else "down"
    raise ConnectionError(f"the gateway's component link did not go {state} in {within:g} s")


async def delivered_count(session: aiohttp.ClientSession, url: str) -> int:
    """The gateway's count of delivered events, from /metrics."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('cmaas_status_events_total{status="delivered"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def delivered_total(session: aiohttp.ClientSession, gateway: BenchGateway) -> int:
    """The delivered events all the gateway's instances counted (each receipt is
    recorded by the one instance it reached)."""
    counts = await asyncio.gather(
        *(delivered_count(session, instance.url) for instance in gateway.instances)
    )
    return sum(counts)


async def submit_all(apis: Sequence[GatewayApi], messages: list[Submission]) -> list[float]:
    """Submit in batches, IN_FLIGHT at a time, the requests spread over ``apis`` (one
    per gateway instance) in turn; returns each batch's answer time."""
    batches = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
    answers: list[float] = []
    queue = iter(batches)

    async def worker(api: GatewayApi) -> None:
        for batch in queue:
            began = time.perf_counter()
            results = await api.submit_batch(batch)
            answers.append(time.perf_counter() - began)
            refused = [r for r in results if r.status_code != 202]
            if refused:
                raise ConnectionError(f"{len(refused)} refused, first: {refused[0]}")

    await asyncio.gather(*(worker(apis[n % len(apis)]) for n in range(IN_FLIGHT)))
    return answers


async def _until_delivered(
    session: aiohttp.ClientSession, gateway: BenchGateway, target: int, deadline: float
) -> int:
    done = 0
    while time.monotonic() < deadline:
        done = await delivered_total(session, gateway)
        if done >= target:
            return done
        await asyncio.sleep(0.05)
    return done


async def _with_gateway(
    server: XmppServer,
    settings: Settings,
    item: str,
    measure: Callable[[aiohttp.ClientSession, BenchGateway, ReceiptResponder], Awaitable[Row]],
    storage: Storage | None = None,
) -> Row:
    """Run ``measure`` against fresh gateway processes and the raw receipt responder."""
    responder = await _responder(server, settings, settings.deadline + 120)
    try:
        async with (
            bench_session() as session,
            gateway_process(server, session, workdir(server, item), storage=storage) as gateway,
        ):
            responder.device = str(gateway.bundle.device_id)
            return await _until_stopped(measure(session, gateway, responder), responder)
    finally:
        await responder.close()


class _CpuMeter:
    """CPU seconds spent by each gateway instance (with its admission workers, which
    are its children), and by the PostgreSQL server if the gateway uses one, since the
    meter was made."""

    def __init__(self, gateway: BenchGateway) -> None:
        self.gateway = gateway
        self.before = self._read()

    def _read(self) -> tuple[list[float], float | None]:
        instances = [tree_cpu_seconds(instance.process.pid) for instance in self.gateway.instances]
        pid = self.gateway.postgres_pid
        return instances, None if pid is None else tree_cpu_seconds(pid)

    def spent(self) -> tuple[list[float], float | None]:
        """Per instance, and the database server's (None with SQLite).

        Raises: OSError: A gateway process or the postmaster is gone.
        """
        (instances, database), (was, database_was) = self._read(), self.before
        return (
            [now - then for now, then in zip(instances, was, strict=True)],
            None if database is None or database_was is None else database - database_was,
        )


def _per_message(seconds: float, messages: int) -> float:
    return round(seconds / max(messages, 1), 9)


async def ingest(server: XmppServer, settings: Settings, storage: Storage | None = None) -> Row:
    """(c) pre-sealed HTTP batches → gateway → server → raw client, until every receipt;
    with several instances the batches are spread over their APIs."""
    storage = storage or Storage()
    item = f"c-pg{storage.instances}" if storage.postgres else "c"

    async def run(
        session: aiohttp.ClientSession, gateway: BenchGateway, _: ReceiptResponder
    ) -> Row:
        warm = gateway.seal(min(BATCH, settings.count), Priority.NORMAL, "w")
        await submit_all(gateway.apis, warm)
        warmed = await _until_delivered(session, gateway, len(warm), time.monotonic() + 60)
        if warmed != len(warm):
            raise ConnectionError(f"warm-up: {warmed}/{len(warm)} delivered")
        messages = gateway.seal(settings.count, Priority.NORMAL, "c")
        with frozen_heap():
            return await timed(session, gateway, len(warm), messages)

    async def timed(
        session: aiohttp.ClientSession,
        gateway: BenchGateway,
        warm: int,
        messages: list[Submission],
    ) -> Row:
        progress = [0]
        tick = asyncio.create_task(
            ticker(f"{server.kind} {item}", settings.count, lambda: progress[0])
        )
        cpu = _CpuMeter(gateway)
        first = gateway.instances[0].process.pid
        parts_before = gateway_part_seconds(first)
        split = CpuSplit(
            server.pids,
            {
                "gateway": [instance.process.pid for instance in gateway.instances],
                **({} if gateway.postgres_pid is None else {"database": [gateway.postgres_pid]}),
            },
        )
        began = time.perf_counter()
        deadline = time.monotonic() + settings.deadline
        try:
            answers = await submit_all(gateway.apis, messages)
            submitted = time.perf_counter() - began
            while time.monotonic() < deadline:
                progress[0] = await delivered_total(session, gateway) - warm
                if progress[0] >= settings.count:
                    break
                await asyncio.sleep(0.05)
        finally:
            tick.cancel()
        seconds = time.perf_counter() - began
        by_instance, database_cpu = cpu.spent()
        done = min(progress[0], settings.count)
        cpu_split = split.per_message(done)
        parts = {
            name: round((seconds - parts_before[name]) / max(done, 1) * 1e6, 1)
            for name, seconds in gateway_part_seconds(first).items()
        }
        # More delivered events than messages: an instance recorded one twice.
        surplus = max(0, progress[0] - settings.count)
        per_instance = [_per_message(spent, done) for spent in by_instance]
        notes = []
        if len(per_instance) > 1:
            notes.append(f"CPU us/msg {' + '.join(f'{s * 1e6:.0f}' for s in per_instance)}")
        if done < settings.count:
            notes.append(f"deadline {settings.deadline:g} s")
        if surplus:
            notes.append(f"{surplus} delivered twice")
        return Row(
            server=server.kind,
            item=item,
            description=f"gateway on {storage.label}: HTTP batches of {BATCH} -> raw client",
            count=settings.count,
            done=done,
            rate=round(done / seconds, 1),
            p50_ms=ms(percentile(answers, 0.50)),
            p99_ms=ms(percentile(answers, 0.99)),
            seconds=round(seconds, 3),
            complete=done == settings.count and not surplus,
            latency=f"answer to a batch of {BATCH} (durably stored)",
            errors=surplus,
            note=", ".join(notes),
            extra={
                "all_accepted_s": round(submitted, 3),
                "database": "postgresql" if storage.postgres else "sqlite",
                "instances": storage.instances,
                "cpu_s_per_message_by_instance": per_instance,
                "database_server_cpu_s_per_message": (
                    None if database_cpu is None else _per_message(database_cpu, done)
                ),
                "cpu_us_per_message": cpu_split,
                # The first instance's: with several, each has its own.
                "gateway_cpu_us_per_message": parts,
            },
            cpu_s_per_message=_per_message(sum(by_instance), done),
        )

    return await _with_gateway(server, settings, item, run, storage)


async def otp_latency(server: XmppServer, settings: Settings, *, flood: bool = False) -> Row:
    """(d) high-priority submit → delivered while a bulk backlog drains; with ``flood``
    (d-flood), while the most of it is still being submitted too."""

    async def run(
        session: aiohttp.ClientSession, gateway: BenchGateway, responder: ReceiptResponder
    ) -> Row:
        backlog = gateway.seal(min(BACKLOG, settings.count), Priority.BULK, "b")
        otps = gateway.seal(200, Priority.HIGH, "otp")
        responder.watched = frozenset(message.message_id for message in otps)
        with frozen_heap():
            return await timed(gateway, backlog, otps, responder)

    async def timed(
        gateway: BenchGateway,
        backlog: list[Submission],
        otps: list[Submission],
        responder: ReceiptResponder,
    ) -> Row:
        submitted_ms: dict[str, int] = {}
        latencies: list[float] = []
        # d-flood: a quarter of the backlog is stored first and the rest submitted while
        # the OTPs go in, so that every OTP meets a backlog still arriving and draining
        # (stored whole first, it can drain before the OTPs are under way).
        first = len(backlog) // 4 if flood else len(backlog)
        await submit_all(gateway.apis, backlog[:first])
        cursor = (await gateway.api.events()).next
        flooding = Flood()
        if flood:
            await flooding.start(
                [i.url for i in gateway.instances], gateway.credentials, backlog[first:]
            )
        began = time.perf_counter()
        deadline = time.monotonic() + settings.deadline

        last_bulk_ms = 0
        # Per OTP, when each status was recorded: where the latency goes.
        stages: dict[str, dict[str, int]] = {}

        async def follow() -> None:
            nonlocal cursor, last_bulk_ms
            while len(latencies) < len(otps) and time.monotonic() < deadline:
                page = await gateway.api.events(after=cursor, wait=1)
                cursor = page.next
                for event in page.events:
                    sent = submitted_ms.get(event.message_id)
                    if sent is not None:
                        stages.setdefault(event.message_id, {})[event.status] = event.at_ms
                    if event.status != "delivered":
                        continue
                    if sent is not None:
                        latencies.append((event.at_ms - sent) / 1000)
                    else:
                        last_bulk_ms = max(last_bulk_ms, event.at_ms)

        following = asyncio.create_task(follow())
        try:
            # One every 20 ms whatever the answers take: a late answer must not thin
            # the OTPs out while the backlog drains.
            submitting = []
            for message in otps:
                submitted_ms[message.message_id] = now_ms()
                submitting.append(asyncio.create_task(gateway.api.submit(message)))
                await asyncio.sleep(OTP_EVERY_S)
            await asyncio.gather(*submitting)
            # Still queued when the last OTP went in: every OTP met a real backlog.
            left = await gateway.api.request("GET", "/healthz")
            if flood:
                await flooding.done()
        finally:
            flooding.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(following, max(1.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - began
        return Row(
            server=server.kind,
            item="d-flood" if flood else "d",
            description=f"OTP submit -> delivered, {len(backlog):,} bulk draining"
            + (f", {len(backlog) - first:,} of them submitted meanwhile" if flood else ""),
            count=len(otps),
            done=len(latencies),
            rate=round(len(latencies) / seconds, 1),
            p50_ms=ms(percentile(latencies, 0.50)),
            p99_ms=ms(percentile(latencies, 0.99)),
            seconds=round(seconds, 3),
            complete=len(latencies) == len(otps),
            latency="HTTP submit -> receipt recorded at the gateway",
            errors=0,
            note="",
            extra={
                "bulk_still_queued": left["outbox"]["bulk"],
                # OTPs submitted before the last bulk receipt seen while following.
                "otps_behind_backlog": (
                    len(otps)
                    if left["outbox"]["bulk"]
                    else sum(sent < last_bulk_ms for sent in submitted_ms.values())
                ),
                **_stage_percentiles(submitted_ms, stages, responder.arrived_ms),
            },
        )

    return await _with_gateway(server, settings, "d-flood" if flood else "d", run)


def _stage_percentiles(
    submitted_ms: dict[str, int], stages: dict[str, dict[str, int]], arrived_ms: dict[str, int]
) -> dict[str, float | None]:
    """p50/p99 ms of submit -> accepted (stored), accepted -> dispatched (queue and
    dispatcher) and dispatched -> delivered (IM server, client, receipt recorded); and
    that last one in two: dispatched -> arrival at the client (the gateway's write and
    the server's routing) and arrival -> delivered (the receipt's way back)."""
    spans: dict[str, list[float]] = {
        "stored": [],
        "queued": [],
        "receipt": [],
        "to_client": [],
        "back": [],
    }
    for message_id, at in stages.items():
        if {"accepted", "dispatched", "delivered"} <= at.keys():
            spans["stored"].append((at["accepted"] - submitted_ms[message_id]) / 1000)
            spans["queued"].append((at["dispatched"] - at["accepted"]) / 1000)
            spans["receipt"].append((at["delivered"] - at["dispatched"]) / 1000)
            arrived = arrived_ms.get(message_id)
            if arrived is not None:
                spans["to_client"].append((arrived - at["dispatched"]) / 1000)
                spans["back"].append((at["delivered"] - arrived) / 1000)
    return {
        f"{name}_{label}_ms": ms(percentile(values, fraction))
        for name, values in spans.items()
        for label, fraction in (("p50", 0.50), ("p99", 0.99))
    }
