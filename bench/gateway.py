"""Items c and d: the whole gateway (``cmaas gateway run`` as its own process) between
signed HTTP submissions and the raw receipt responder.

(c) ingest: pre-sealed envelopes submitted in batches of 500, four requests in flight,
    timed from the first request until the gateway has recorded every receipt.
(d) OTP latency: high-priority messages submitted one at a time every 20 ms while a
    backlog of bulk messages drains; latency is from the request until the gateway
    records the receipt (the event's timestamp).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.measure import RECIPIENT, Settings, _responder, _until_stopped
from bench.report import Row, ms, percentile, ticker
from cmaas.clientservice import AppCredentials, GatewayApi
from cmaas.clientservice.sealing import seal_submission
from cmaas.clock import now_ms
from cmaas.devservers import XmppServer, cmaas_executable, free_port
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
from cmaas.keystore import MasterKeyring, SqliteKeystore
from cmaas.lifecycle import (
    Priority,
)
from cmaas.wire import KeyLookup, Submission

__all__ = [
    "BenchGateway",
    "delivered_count",
    "gateway_process",
    "ingest",
    "otp_latency",
    "submit_all",
    "wait_link",
    "workdir",
]

APP = "bench"
BATCH = 500
IN_FLIGHT = 4
BACKLOG = 20_000
OTP_EVERY_S = 0.02


@dataclass
class BenchGateway:
    url: str
    api: GatewayApi
    app_jid: str
    key: PrivateKey
    bundle: DeviceBundle
    process: subprocess.Popen[bytes]

    def seal(self, count: int, priority: Priority, prefix: str) -> list[Submission]:
        """Pre-seal ``count`` messages to the recipient's signed prekey (CPU, untimed)."""
        now = now_ms()
        keys = KeyLookup(self.bundle.jid, (self.bundle,))
        messages = []
        for n in range(count):
            messages.append(
                seal_submission(
                    keys,
                    self.bundle.jid,
                    TextContent(f"{n:010d} benchmark message"),
                    message_id=f"{prefix}{n}",
                    app_jid=self.app_jid,
                    app_key=self.key,
                    priority=priority,
                    created_ms=now,
                    expires_ms=now + 3_600_000,
                )
            )
        return messages


def _start(
    server: XmppServer, workdir: Path, extra_env: dict[str, str]
) -> tuple[dict[str, Any], subprocess.Popen[bytes], str, DeviceKeyring]:
    """Register the app, raise the plan, publish the recipient's device and start the
    gateway process (blocking work, run in a thread)."""
    workdir.mkdir(parents=True, exist_ok=True)
    master_key = os.urandom(32)
    database = workdir / "cmaas.sqlite3"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")},
        "CMAAS_COMPONENT_JID": server.component_domain,
        "CMAAS_COMPONENT_SECRET": server.component_secret,
        "CMAAS_XMPP_HOST": server.host,
        "CMAAS_XMPP_PORT": str(server.component_port),
        "CMAAS_DATABASE": str(database),
        "CMAAS_MASTER_KEY": base64.b64encode(master_key).decode(),
        "CMAAS_HTTP_PORT": str(port),
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
        keystore = await SqliteKeystore.open(database, MasterKeyring(master_key))
        try:
            await KeyDirectory(keystore).publish(jid, keyring.bundle().to_bytes().decode())
        finally:
            await keystore.close()

    asyncio.run(publish())
    # CMAAS_BENCH_PROFILE=DIR: the gateway runs under cProfile and leaves DIR/<item>.prof.
    profile_dir = os.environ.get("CMAAS_BENCH_PROFILE")
    profiler = (
        [sys.executable, "-m", "cProfile", "-o", str(Path(profile_dir) / f"{workdir.name}.prof")]
        if profile_dir
        else []
    )
    with (workdir / "gateway.log").open("ab") as log:
        process = subprocess.Popen(
            [*profiler, cmaas_executable(), "--env-file", os.devnull, "gateway", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return issued, process, f"http://127.0.0.1:{port}", keyring


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
) -> AsyncIterator[BenchGateway]:
    """A gateway process with one app, its signing key, and the recipient's device."""
    issued, process, url, keyring = await asyncio.to_thread(
        _start, server, workdir, extra_env or {}
    )
    try:
        await wait_link(session, url, process)
        api = GatewayApi(url, AppCredentials.from_issued(issued), session)
        key = generate_private_key()
        await api.register_signing_key(b64url(point_bytes(key.public_key())))
        app_jid = f"{APP}@{server.component_domain}"
        yield BenchGateway(url, api, app_jid, key, keyring.bundle(), process)
    finally:
        await asyncio.to_thread(_stop, process)


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


async def submit_all(api: GatewayApi, messages: list[Submission]) -> list[float]:
    """Submit in batches, IN_FLIGHT at a time; returns each batch's answer time."""
    batches = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
    answers: list[float] = []
    queue = iter(batches)

    async def worker() -> None:
        for batch in queue:
            began = time.perf_counter()
            results = await api.submit_batch(batch)
            answers.append(time.perf_counter() - began)
            refused = [r for r in results if r.status_code != 202]
            if refused:
                raise ConnectionError(f"{len(refused)} refused, first: {refused[0]}")

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return answers


async def _until_delivered(
    session: aiohttp.ClientSession, url: str, target: int, deadline: float
) -> int:
    done = 0
    while time.monotonic() < deadline:
        done = await delivered_count(session, url)
        if done >= target:
            return done
        await asyncio.sleep(0.05)
    return done


async def _with_gateway(
    server: XmppServer,
    settings: Settings,
    item: str,
    measure: Callable[[aiohttp.ClientSession, BenchGateway], Awaitable[Row]],
) -> Row:
    """Run ``measure`` against a fresh gateway process and the raw receipt responder."""
    responder = await _responder(server, settings, settings.deadline + 120)
    try:
        async with (
            aiohttp.ClientSession() as session,
            gateway_process(server, session, workdir(server, item)) as gateway,
        ):
            responder.device = str(gateway.bundle.device_id)
            return await _until_stopped(measure(session, gateway), responder)
    finally:
        await responder.close()


async def ingest(server: XmppServer, settings: Settings) -> Row:
    """(c) pre-sealed HTTP batches → gateway → server → raw client, until every receipt."""

    async def run(session: aiohttp.ClientSession, gateway: BenchGateway) -> Row:
        warm = gateway.seal(min(BATCH, settings.count), Priority.NORMAL, "w")
        await submit_all(gateway.api, warm)
        await _until_delivered(session, gateway.url, len(warm), time.monotonic() + 60)
        messages = gateway.seal(settings.count, Priority.NORMAL, "c")
        progress = [0]
        tick = asyncio.create_task(ticker(f"{server.kind} c", settings.count, lambda: progress[0]))
        began = time.perf_counter()
        deadline = time.monotonic() + settings.deadline
        try:
            answers = await submit_all(gateway.api, messages)
            submitted = time.perf_counter() - began
            while time.monotonic() < deadline:
                progress[0] = await delivered_count(session, gateway.url) - len(warm)
                if progress[0] >= settings.count:
                    break
                await asyncio.sleep(0.05)
        finally:
            tick.cancel()
        seconds = time.perf_counter() - began
        done = min(progress[0], settings.count)
        return Row(
            server=server.kind,
            item="c",
            description=f"gateway: HTTP batches of {BATCH} -> raw client",
            count=settings.count,
            done=done,
            rate=round(done / seconds, 1),
            p50_ms=ms(percentile(answers, 0.50)),
            p99_ms=ms(percentile(answers, 0.99)),
            seconds=round(seconds, 3),
            complete=done == settings.count,
            latency=f"answer to a batch of {BATCH} (durably stored)",
            errors=0,
            note="" if done == settings.count else f"deadline {settings.deadline:g} s",
            extra={"all_accepted_s": round(submitted, 3)},
        )

    return await _with_gateway(server, settings, "c", run)


async def otp_latency(server: XmppServer, settings: Settings) -> Row:
    """(d) high-priority submit → delivered while a bulk backlog drains."""

    async def run(session: aiohttp.ClientSession, gateway: BenchGateway) -> Row:
        backlog = gateway.seal(min(BACKLOG, settings.count), Priority.BULK, "b")
        otps = gateway.seal(200, Priority.HIGH, "otp")
        submitted_ms: dict[str, int] = {}
        latencies: list[float] = []
        await submit_all(gateway.api, backlog)
        cursor = (await gateway.api.events()).next
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
        # One every 20 ms whatever the answers take: a late answer must not thin the
        # OTPs out while the backlog drains.
        submitting = []
        for message in otps:
            submitted_ms[message.message_id] = now_ms()
            submitting.append(asyncio.create_task(gateway.api.submit(message)))
            await asyncio.sleep(OTP_EVERY_S)
        await asyncio.gather(*submitting)
        # Still queued when the last OTP went in: every OTP met a real backlog.
        left = await gateway.api.request("GET", "/healthz")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(following, max(1.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - began
        return Row(
            server=server.kind,
            item="d",
            description=f"OTP submit -> delivered, {len(backlog):,} bulk draining",
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
                **_stage_percentiles(submitted_ms, stages),
            },
        )

    return await _with_gateway(server, settings, "d", run)


def _stage_percentiles(
    submitted_ms: dict[str, int], stages: dict[str, dict[str, int]]
) -> dict[str, float | None]:
    """p50/p99 ms of submit -> accepted (stored), accepted -> dispatched (queue and
    dispatcher) and dispatched -> delivered (IM server, client, receipt recorded)."""
    spans: dict[str, list[float]] = {"stored": [], "queued": [], "receipt": []}
    for message_id, at in stages.items():
        if {"accepted", "dispatched", "delivered"} <= at.keys():
            spans["stored"].append((at["accepted"] - submitted_ms[message_id]) / 1000)
            spans["queued"].append((at["dispatched"] - at["accepted"]) / 1000)
            spans["receipt"].append((at["delivered"] - at["dispatched"]) / 1000)
    return {
        f"{name}_{label}_ms": ms(percentile(values, fraction))
        for name, values in spans.items()
        for label, fraction in (("p50", 0.50), ("p99", 0.99))
    }
