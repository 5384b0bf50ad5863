"""Two gateway processes sharing one PostgreSQL database on a real 2-node ejabberd
cluster: one is killed with SIGKILL while apps submit to both, and the survivor takes
over its messages; every message is shown once and reaches ``delivered``."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from cmaas.clientservice import GatewayApi
from cmaas.devservers import EjabberdCluster, PostgresServer
from cmaas.envelope import TextContent
from cmaas.lifecycle import Priority

from .apps import accepted, http_session, register_app, roomy_plan, seal_flood
from .cluster_gateways import cluster_gateways, fresh_database, scalar
from .devices import collect_shown, new_device

pytestmark = pytest.mark.integration

BATCH = 40
BATCHES = 6


async def test_a_survivor_takes_over_a_killed_instances_messages(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    second = ejabberd_cluster.nodes[1]
    domain = ejabberd_cluster.domain
    url = fresh_database(postgres_server, "cmaas_instances")
    gateways = cluster_gateways(ejabberd_cluster, url, tmp_path)
    survivor, victim = gateways
    async with AsyncExitStack() as stack:
        for process in gateways:
            process.start()
            stack.callback(process.stop)
        session = await stack.enter_async_context(http_session())
        await roomy_plan(survivor)
        app = await register_app(survivor, session, "bank")
        apis = [
            app.api,
            GatewayApi(f"http://127.0.0.1:{victim.http_port}", app.credentials, session),
        ]
        alice = f"alice@{domain}"
        device = await stack.enter_async_context(new_device(second, tmp_path, "alice", "phone"))
        await device.publish("phone")
        sealed = await seal_flood(app, alice, BATCH * BATCHES, Priority.NORMAL)
        ids = [message.message_id for message in sealed]
        shown: list[str] = []
        collecting = collect_shown(device, shown)
        stack.callback(collecting.cancel)
        killed = False
        for number in range(BATCHES):
            batch = sealed[number * BATCH : (number + 1) * BATCH]
            if killed:
                results = await apis[0].submit_batch(batch)
            elif number == BATCHES // 2 + 1:
                # The kill lands while the victim stores, answers or dispatches a batch.
                submitting = asyncio.create_task(apis[1].submit_batch(batch))
                await asyncio.sleep(0.02)
                await asyncio.to_thread(victim.kill)
                killed = True
                try:
                    results = await submitting
                except aiohttp.ClientError:
                    # The answer was lost: the app submits again, to the other instance.
                    results = await apis[0].submit_batch(batch)
            else:
                results = await apis[number % 2].submit_batch(batch)
            assert accepted(results), results

        def situation() -> str:
            return (
                f"{len(set(shown))} of {len(ids)} shown, {_delivered(url)} delivered;"
                f" survivor's log:\n{survivor.log()[-6000:]}"
            )

        await _until(lambda: "took over from dead instances" in survivor.log(), situation)
        await _until(lambda: len(set(shown)) == len(ids), situation)
        # A later message of the lowest priority: a resend still queued at the survivor
        # is written before it, and shown (or not) before it arrives.
        last = await app.send(alice, TextContent("last"), priority=Priority.BULK)
        await _until(lambda: last.message_id in shown, situation)
        await _until(lambda: _delivered(url) == len(ids) + 1, situation)
        assert shown[-1] == last.message_id
        assert sorted(shown[:-1]) == sorted(ids), "each message shown exactly once"
        taken = re.findall(r"outbox: (\d+) messages to dispatch, (\d+) to resend", survivor.log())
        print("taken over (to dispatch, to resend):", taken)
        assert "Traceback" not in survivor.log(), survivor.log()


async def _until(
    condition: Callable[[], bool], situation: Callable[[], str], within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, situation()
        await asyncio.sleep(0.1)


def _delivered(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM messages WHERE status = 'delivered'")
