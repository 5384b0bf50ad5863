"""The measurements run against one started server, each bounded by its own deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.cpu import CpuSplit
from bench.peer_http import send_messages
from bench.raw_client import ReceiptResponder, login
from bench.raw_component import RawComponent
from bench.report import Row, ms, percentile, say, ticker
from cmaas.devservers import XmppServer

RECIPIENT = "alice"
HTTP_SENDER = "bench"
# Enough to reach every session and code path once, so the clock starts on a warm server.
WARMUP = 500


@dataclass(frozen=True)
class Settings:
    count: int
    window: int
    concurrency: int
    body_size: int
    deadline: float
    password: str
    # Item f: messages queued during the outage, messages processed in all, and the
    # time the processing may take.
    queue: int = 100_000
    processed: int = 1_000_000
    footprint_deadline: float = 600.0


async def _responder(server: XmppServer, settings: Settings, lifetime: float) -> ReceiptResponder:
    stream, jid = await login(
        server.host,
        server.c2s_port,
        server.domain,
        RECIPIENT,
        settings.password,
        "bench",
    )
    responder = ReceiptResponder(stream, jid)
    responder.start(lifetime)
    return responder


async def _until_stopped(work: Awaitable[Row], responder: ReceiptResponder) -> Row:
    """``work``'s row, unless the responder dies first (then waiting on would only end at
    the deadline)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.create_task(responder.stopped.wait())
    try:
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ConnectionError(f"the receipt responder stopped: {responder.error!r}")
    finally:
        for pending in (task, stop):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


def _body_note(item: str, settings: Settings) -> str:
    return f", {settings.body_size:,}-char bodies (c's envelope)" if item.endswith("-env") else ""


async def raw_limit(server: XmppServer, settings: Settings, *, item: str = "a") -> Row:
    """(a) raw XEP-0114 injector → server → raw client, receipts back to the injector."""
    responder = await _responder(server, settings, settings.deadline + 60)
    component: RawComponent | None = None
    try:
        component = await RawComponent.connect(
            server.host, server.component_port, server.component_domain, server.component_secret
        )
        to = f"{RECIPIENT}@{server.domain}"

        async def run() -> Row:
            assert component is not None
            prefix, stanzas = component.stanzas(to, min(WARMUP, settings.count), settings.body_size)
            warmed = await component.inject(prefix, stanzas, settings.window, time.monotonic() + 30)
            if not warmed.complete:
                raise ConnectionError(
                    f"warm-up: {warmed.acked}/{len(stanzas)} receipts, {warmed.errors} bounced"
                )
            prefix, stanzas = component.stanzas(to, settings.count, settings.body_size)
            responder.reset(0)
            progress = [0]

            def on_progress(done: int, _total: int) -> None:
                progress[0] = done

            tick = asyncio.create_task(
                ticker(f"{server.kind} a", settings.count, lambda: progress[0])
            )
            cpu = time.process_time()
            split = CpuSplit(server.pids)
            try:
                result = await component.inject(
                    prefix,
                    stanzas,
                    settings.window,
                    time.monotonic() + settings.deadline,
                    on_progress,
                )
            finally:
                tick.cancel()
            return Row(
                server=server.kind,
                item=item,
                description="raw component -> raw client" + _body_note(item, settings),
                count=settings.count,
                done=result.acked,
                rate=round(result.rate, 1),
                p50_ms=ms(percentile(result.round_trips, 0.50)),
                p99_ms=ms(percentile(result.round_trips, 0.99)),
                seconds=round(result.last_receipt - result.first_send, 3),
                complete=result.complete,
                latency=f"receipt round trip at the component, window {settings.window}",
                errors=result.errors,
                note=(
                    f"{result.errors} bounced"
                    if result.errors
                    else ("" if result.complete else f"deadline {settings.deadline:g} s")
                ),
                extra={
                    # The injector and the responder share this process: if it nears one
                    # core, the figure is the benchmark's limit, not the server's.
                    "bench_cpu_s": round(time.process_time() - cpu, 3),
                    "cpu_us_per_message": split.per_message(result.acked),
                    "responder_answered": responder.answered,
                },
            )

        return await _until_stopped(run(), responder)
    finally:
        await responder.close()
        if component is not None:
            await component.close()


async def peer(server: XmppServer, settings: Settings, *, item: str = "b") -> Row:
    """(b) ejabberd send_message over HTTP → server → raw client (no receipts)."""
    responder = await _responder(server, settings, settings.deadline + 60)
    url = f"http://{server.host}:{server.http_port}/api/send_message"
    sender = f"{HTTP_SENDER}@{server.domain}"
    to = f"{RECIPIENT}@{server.domain}"
    try:

        async def run() -> Row:
            warm = min(WARMUP, settings.count)
            warmed = await send_messages(
                url,
                sender,
                to,
                warm,
                settings.concurrency,
                settings.body_size,
                responder,
                time.monotonic() + 30,
            )
            if not warmed.complete:
                raise ConnectionError(f"send_message warm-up failed: {warmed.first_failure}")
            tick = asyncio.create_task(
                ticker(f"{server.kind} b", settings.count, lambda: responder.received)
            )
            cpu = time.process_time()
            split = CpuSplit(server.pids)
            try:
                result = await send_messages(
                    url,
                    sender,
                    to,
                    settings.count,
                    settings.concurrency,
                    settings.body_size,
                    responder,
                    time.monotonic() + settings.deadline,
                )
            finally:
                tick.cancel()
            note = "" if result.complete else f"deadline {settings.deadline:g} s"
            if result.first_failure:
                note = f"{result.failed} failed: {result.first_failure}"
            return Row(
                server=server.kind,
                item=item,
                description=f"send_message HTTP x{settings.concurrency} -> raw client"
                + _body_note(item, settings),
                count=settings.count,
                done=result.arrived,
                rate=round(result.rate, 1),
                p50_ms=ms(percentile(result.latencies, 0.50)),
                p99_ms=ms(percentile(result.latencies, 0.99)),
                seconds=round(result.last_arrival - result.first_request, 3),
                complete=result.complete,
                latency="HTTP request start -> arrival at the client (one way)",
                errors=result.failed,
                note=note,
                extra={
                    "bench_cpu_s": round(time.process_time() - cpu, 3),
                    "cpu_us_per_message": split.per_message(result.arrived),
                    # send_message answers before delivery: how far deliveries trail.
                    "last_http_answer_s": round(result.last_response - result.first_request, 3),
                    "http_answer_p50_ms": ms(percentile(result.responses, 0.50)),
                    "http_answer_p99_ms": ms(percentile(result.responses, 0.99)),
                },
            )

        return await _until_stopped(run(), responder)
    finally:
        await responder.close()


Measurement = Callable[[XmppServer, Settings], Awaitable[Row]]


async def run_all(
    server: XmppServer, settings: Settings, items: list[tuple[str, str, Measurement]]
) -> list[Row]:
    """Run ``items`` one after the other; a failure becomes an incomplete row."""
    rows: list[Row] = []
    for item, description, measurement in items:
        say(f"[{server.kind}] {item}: {description}, N={settings.count:,}")
        try:
            row = await measurement(server, settings)
        except Exception as exc:
            row = Row.failed(server.kind, item, description, settings.count, f"failed: {exc!r}")
        say(
            f"[{server.kind}] {item}: {row.done:,}/{row.count:,} in {row.seconds:.2f} s, "
            f"{row.rate:,.0f} msg/s, p50 {row.p50_ms} ms, p99 {row.p99_ms} ms"
            + ("" if row.complete else f"  INCOMPLETE {row.note}")
            + "".join(f", {key} {value}" for key, value in row.extra.items())
        )
        rows.append(row)
    return rows
