"""Two gateway processes sharing one PostgreSQL database on a real 2-node ejabberd
cluster: one is killed with SIGKILL while apps submit to both, and the survivor takes
over its messages; every message is shown once and reaches ``delivered``."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import psycopg
import pytest
from psycopg import sql

from cmaas.clientservice import GatewayApi
from cmaas.devservers import EjabberdCluster, PostgresServer
from cmaas.envelope import TextContent
from cmaas.lifecycle import Priority

from .apps import accepted, http_session, register_app, roomy_plan, seal_flood
from .conftest import CLUSTER_INSTANCE_HOSTS
from .devices import collect_shown, new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

BATCH = 40
BATCHES = 6


async def test_a_survivor_takes_over_a_killed_instances_messages(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    first, second = ejabberd_cluster.nodes
    domain = ejabberd_cluster.domain
    database = "cmaas_instances"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = postgres_server.url(database)
    (tmp_path / "blobs").mkdir()
    gateways: list[GatewayProcess] = []
    for name, node, host in zip("ab", (first, second), CLUSTER_INSTANCE_HOSTS[:2], strict=True):
        (tmp_path / name).mkdir()
        process = GatewayProcess(node, tmp_path / name, admins=f"admin@{domain}")
        if gateways:  # one database: one master key
            process.master_key = gateways[0].master_key
        process.env.update(
            CMAAS_DATABASE=url,
            CMAAS_BLOB_DIR=str(tmp_path / "blobs"),
            CMAAS_MASTER_KEY=base64.b64encode(process.master_key).decode(),
            CMAAS_INSTANCE_HOST=host,
            CMAAS_HEARTBEAT="0.5",
            CMAAS_DEAD_AFTER="2",
        )
        gateways.append(process)
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
    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*) FROM messages WHERE status = 'delivered'").fetchone()
    return int(row[0]) if row else 0
