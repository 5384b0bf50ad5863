"""Item f: the gateway's resident memory with a large outbox, and after a long run.

The gateway runs as its own process. The IM server is stopped while the app submits
``--queue`` messages (an outage: the gateway stores them and cannot dispatch), and the
gateway's RSS is read with all of them queued. The server then comes back, the outbox
drains into the raw receipt responder, and the app keeps submitting until ``--processed``
messages have been delivered or the time is up; the RSS is read again at the end. The
IM server's own RSS in the same run is the peer figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import (
    BenchGateway,
    bench_session,
    delivered_count,
    gateway_process,
    submit_all,
    wait_link,
    workdir,
)
from bench.measure import Settings, _responder
from bench.report import Row, say, ticker
from cmaas.devservers import XmppServer
from cmaas.lifecycle import Priority

__all__ = ["footprint", "gateway_rss_mib", "rss_mib"]

CHUNK = 5_000
# Submissions stay this far ahead of deliveries, so the outbox never runs dry.
AHEAD = 30_000
# Receipts stop coming: something was lost; say so instead of waiting out the deadline.
STALL_S = 30.0


_STANDING = (
    "cmaas_outbox_",
    "cmaas_feedback_",
    "cmaas_component_link_",
    "cmaas_barrier_pings_total",
    "cmaas_status_events_total",
)


async def _where_it_stands(session: aiohttp.ClientSession, url: str) -> str:
    """The gateway's gauges and counters that say where a stalled drain stopped: its
    queue, the feedback it has yet to record, its link, the pings after its rounds."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return ", ".join(line for line in text.splitlines() if line.startswith(_STANDING))


def rss_mib(pid: int) -> tuple[float, float]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in MiB.

    Raises:
        OSError: The process is gone.
    """
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def gateway_rss_mib(pid: int) -> tuple[float, float]:
    """:func:`rss_mib` of the gateway process plus its children (its admission workers):
    each one's own figure summed, so pages they share count once per process.

    Raises:
        OSError: The gateway process is gone.
    """
    rss, peak = rss_mib(pid)
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for child_pid in child.read_text().split():
            with contextlib.suppress(OSError, KeyError):
                child_rss, child_peak = rss_mib(int(child_pid))
                rss, peak = rss + child_rss, peak + child_peak
    return round(rss, 1), round(peak, 1)


def _server_rss(server: XmppServer) -> float:
    total = 0.0
    for pid in server.pids():
        with contextlib.suppress(OSError, KeyError):
            total += rss_mib(pid)[0]
    return round(total, 1)


class _Feed:
    """Seals and submits chunk after chunk, with numbered ids that never repeat."""

    def __init__(self, gateway: BenchGateway) -> None:
        self.gateway = gateway
        self.submitted = 0

    async def submit(self, count: int) -> None:
        messages = self.gateway.seal(count, Priority.NORMAL, f"f{self.submitted}-")
        await submit_all(self.gateway.apis, messages)
        self.submitted += count


async def footprint(server: XmppServer, settings: Settings) -> Row:
    """(f) RSS with ``settings.queue`` messages queued, then after a long run."""
    queue, total = settings.queue, max(settings.queue, settings.processed)
    extra_env = {
        "CMAAS_OUTBOX_NORMAL_LIMIT": str(queue + AHEAD + CHUNK),
        "CMAAS_OUTBOX_BULK_LIMIT": str(queue + AHEAD + CHUNK),
        "CMAAS_RECONNECT_MAX_DELAY": "1",
    }
    figures: dict[str, Any] = {}
    async with (
        bench_session() as session,
        gateway_process(server, session, workdir(server, "f"), extra_env) as gateway,
    ):
        pid = gateway.process.pid
        feed = _Feed(gateway)
        figures["rss_idle_mib"] = gateway_rss_mib(pid)[0]
        await asyncio.to_thread(server.stop)
        await wait_link(session, gateway.url, gateway.process, up=False)
        tick = asyncio.create_task(ticker(f"{server.kind} f queue", queue, lambda: feed.submitted))
        try:
            while feed.submitted < queue:
                await feed.submit(min(CHUNK, queue - feed.submitted))
        finally:
            tick.cancel()
        async with session.get(f"{gateway.url}/healthz") as response:
            figures["queued"] = sum((await response.json())["outbox"].values())
        figures["rss_queued_mib"], _ = gateway_rss_mib(pid)
        say(f"  {server.kind} f: {figures['queued']:,} queued, RSS {figures['rss_queued_mib']} MiB")

        await asyncio.to_thread(server.start)
        began = time.perf_counter()
        deadline = time.monotonic() + settings.footprint_deadline
        responder = await _responder(server, settings, settings.footprint_deadline + 120)
        responder.device = str(gateway.bundle.device_id)
        done = [0]
        tick = asyncio.create_task(ticker(f"{server.kind} f processed", total, lambda: done[0]))
        try:
            await wait_link(session, gateway.url, gateway.process, within=60)
            progressed = time.monotonic()
            while done[0] < total and time.monotonic() < deadline:
                if responder.stopped.is_set():
                    raise ConnectionError(f"the receipt responder stopped: {responder.error!r}")
                count = await delivered_count(session, gateway.url)
                if count > done[0]:
                    done[0], progressed = count, time.monotonic()
                elif time.monotonic() - progressed > STALL_S:
                    raise ConnectionError(
                        f"no receipt for {STALL_S:g} s at {count:,}; the responder read"
                        f" {responder.received:,} messages and answered"
                        f" {responder.answered:,}; the gateway: "
                        + await _where_it_stands(session, gateway.url)
                    )
                if feed.submitted < total and feed.submitted - done[0] < AHEAD:
                    await feed.submit(min(CHUNK, total - feed.submitted))
                else:
                    await asyncio.sleep(0.2)
            done[0] = await delivered_count(session, gateway.url)
        finally:
            tick.cancel()
            figures["rss_after_mib"], figures["rss_peak_mib"] = gateway_rss_mib(pid)
            figures["server_rss_mib"] = _server_rss(server)
            await responder.close()
        seconds = time.perf_counter() - began
    figures["processed"] = done[0]
    worst = max(figures["rss_queued_mib"], figures["rss_after_mib"])
    # The largest run that fits the time counts, once the whole queue has drained.
    complete = figures["queued"] >= queue and done[0] >= queue
    note = "" if done[0] >= total else f"time up at {done[0]:,} processed"
    return Row(
        server=server.kind,
        item="f",
        description=f"gateway RSS (with its worker), {queue:,} queued / {done[0]:,} processed",
        count=total,
        done=done[0],
        rate=round(done[0] / seconds, 1),
        p50_ms=None,
        p99_ms=None,
        seconds=round(seconds, 3),
        complete=complete,
        latency="-",
        note=note,
        extra=figures,
        memory_mib=worst,
    )
