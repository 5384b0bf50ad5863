"""Two gateway processes sharing one PostgreSQL database on a real 2-node ejabberd
cluster: one is killed with SIGKILL while apps submit to both, and the survivor takes
over its messages; every message is shown once and reaches ``delivered``. And what one
instance stores the other serves: blobs, and the answers to its long-polls."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from cmaas.clientservice import GatewayApi
from cmaas.delivery.doorbells import SHARED_POLL_FLOOR_S
from cmaas.devservers import EjabberdCluster, PostgresServer
from cmaas.envelope import TextContent
from cmaas.keystore.blobs import BLOB_CHUNK_BYTES
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


async def test_instances_share_blobs_and_wake_each_others_long_polls(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """A blob uploaded through one instance downloads through the other, its bytes in the
    database; a long-poll waiting on one is answered by a submission through the other
    well before the poll floor, by the notification the other sends."""
    url = fresh_database(postgres_server, "cmaas_sharing")
    a, b = cluster_gateways(ejabberd_cluster, url, tmp_path)
    async with AsyncExitStack() as stack:
        for process in (a, b):
            process.start()
            stack.callback(process.stop)
        session = await stack.enter_async_context(http_session())
        app = await register_app(a, session, "shop")
        through_b = GatewayApi(f"http://127.0.0.1:{b.http_port}", app.credentials, session)

        # Several chunks' worth, and not a whole number of them.
        data = os.urandom(2 * BLOB_CHUNK_BYTES + 1000)
        upload = tmp_path / "upload.bin"
        upload.write_bytes(data)
        receipt = await app.api.upload_blob(upload, hashlib.sha256(data).hexdigest(), 600)
        async with session.get(f"{through_b.base_url}/v1/blobs/{receipt.blob_id}") as response:
            assert response.status == 200, await response.text()
            assert await response.read() == data
        chunks = "SELECT count(*) FROM blob_chunks WHERE blob_id = %s"
        stored = "SELECT sum(length(data)) FROM blob_chunks WHERE blob_id = %s"
        assert scalar(url, chunks, receipt.blob_id) == 3
        assert scalar(url, stored, receipt.blob_id) == len(data)

        alice = f"alice@{ejabberd_cluster.domain}"
        device = await stack.enter_async_context(
            new_device(ejabberd_cluster.nodes[1], tmp_path, "alice", "phone")
        )
        await device.publish("phone")
        lookup = await through_b.lookup(alice)
        sealed = app.seal(lookup, TextContent("hello"), message_id=app.new_id(), to=alice)
        after = (await app.api.events()).next
        waiting = asyncio.create_task(app.api.events(after=after, wait=20))
        # A's reader waits from here: its poll floor would find the event no sooner than
        # about SHARED_POLL_FLOOR_S - 1 s after the submission.
        await asyncio.sleep(1.0)
        assert not waiting.done(), "nothing to answer yet"
        submitted = time.monotonic()
        await through_b.submit(sealed)
        page = await asyncio.wait_for(waiting, 25)
        answered_s = time.monotonic() - submitted
        print(f"long-poll on A answered {answered_s * 1000:.0f} ms after B accepted")
        assert sealed.message_id in {event.message_id for event in page.events}
        assert answered_s < SHARED_POLL_FLOOR_S / 2, answered_s
        for process in (a, b):
            assert "Traceback" not in process.log(), process.log()


async def _until(
    condition: Callable[[], bool], situation: Callable[[], str], within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, situation()
        await asyncio.sleep(0.1)


def _delivered(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM messages WHERE status = 'delivered'")
