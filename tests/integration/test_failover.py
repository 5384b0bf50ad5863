"""A flood of 10,000 messages through two gateway instances on one PostgreSQL database
and the 2-node ejabberd cluster, while one instance, or one ejabberd node, is killed
with SIGKILL: every message is shown once, every status reaches the app's webhook with
no gap, and the copies sent twice stay within what the resend window covers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import psycopg
import pytest

from cmaas.clientservice import GatewayApi
from cmaas.devservers import EjabberdCluster, PostgresServer, XmppServer
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.wire.messages import Accepted

from .apps import WebhookReceiver, accepted, http_session, register_app, roomy_plan, seal_flood
from .cluster_gateways import cluster_gateways, fresh_database, scalar, shared_gateways
from .conftest import PASSWORD
from .devices import collect_shown, new_device

pytestmark = pytest.mark.integration

FLOOD = 10_000
BATCH = 500
KILL_AT_BATCH = FLOOD // BATCH // 2 + 1  # odd: a batch the victim is handling
WITHIN_S = 180.0


@pytest.mark.parametrize("failure", ["gateway instance", "ejabberd node"])
async def test_a_flood_loses_nothing_when_one_dies(
    failure: str,
    ejabberd_cluster: EjabberdCluster,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    url = fresh_database(postgres_server, "cmaas_failover_" + failure.split()[-1])
    # Two busy gateways, the cluster, the database and the device share two cores: a
    # heartbeat may come a second late without the instance being dead.
    survivor, victim = cluster_gateways(
        ejabberd_cluster, url, tmp_path, heartbeat_s=1.0, dead_after_s=5.0
    )
    # A person of this test's own: nothing another test left for them arrives here.
    user = "flood" + failure.split()[-1]
    ejabberd_cluster.register_user(user, PASSWORD)
    alice = f"{user}@{ejabberd_cluster.domain}"
    node_killed = False
    async with AsyncExitStack() as stack:
        # The victim starts first and leads: its death moves the webhooks too.
        for process in (victim, survivor):
            process.start()
            stack.callback(process.stop)
        sink = await stack.enter_async_context(WebhookReceiver().running())
        session = await stack.enter_async_context(http_session())
        await roomy_plan(survivor, rate=20_000)
        app = await register_app(survivor, session, "bank", "--callback-url", sink.url)
        sink.hmac_key = app.credentials.hmac_key
        apis = [
            app.api,
            GatewayApi(f"http://127.0.0.1:{victim.http_port}", app.credentials, session),
        ]
        # The device is on the node that lives.
        device = await stack.enter_async_context(
            new_device(ejabberd_cluster.nodes[0], tmp_path, user, "phone")
        )
        await device.publish("phone")
        sealed = await seal_flood(app, alice, FLOOD, Priority.NORMAL)
        ids = {message.message_id for message in sealed}
        shown: list[str] = []
        stack.callback(collect_shown(device, shown).cancel)
        to_victim_at: list[tuple[float, int]] = []
        victim_up = True
        killed_at = 0.0
        for number in range(FLOOD // BATCH):
            batch = sealed[number * BATCH : (number + 1) * BATCH]
            api = apis[number % 2] if victim_up else apis[0]
            if api is apis[1]:
                to_victim_at.append((time.monotonic(), len(batch)))
            submitting = asyncio.create_task(api.submit_batch(batch))
            if number == KILL_AT_BATCH:
                # The kill lands while a batch is being stored, answered or dispatched.
                await asyncio.sleep(0.05)
                if failure == "gateway instance":
                    await asyncio.to_thread(victim.kill)
                    victim_up = False
                else:
                    await asyncio.to_thread(ejabberd_cluster.kill, 1)
                    node_killed = True
                killed_at = time.monotonic()
            try:
                results = await submitting
            except aiohttp.ClientError as error:
                # The answer was lost: the app submits again (the ids make it
                # idempotent), to the other instance.
                print(f"batch {number}: {error!r}; submitted again")
                results = await apis[0].submit_batch(batch)
                assert all(isinstance(r, Accepted) for r in results), results
                continue
            assert accepted(results), results

        def situation() -> str:
            return (
                f"{len(set(shown))} of {FLOOD} shown, {_count(url, 'delivered')} delivered,"
                f" {_delivered_at(sink)} delivered at the webhook; survivor's log:\n"
                f"{survivor.log()[-4000:]}\nvictim's log:\n{victim.log()[-4000:]}"
            )

        started = time.monotonic()
        await _until(lambda: len(set(shown)) == FLOOD, situation)
        await _until(lambda: _count(url, "delivered") == FLOOD, situation)
        await _until(lambda: _delivered_at(sink) == FLOOD, situation)
        print(
            f"{failure}: all shown and delivered {time.monotonic() - started:.1f} s after the flood"
        )

        assert set(shown) == ids and len(shown) == FLOOD, "each message shown exactly once"
        if failure == "gateway instance":
            assert "took over from dead instances" in survivor.log()
        else:  # the victim lives on without a link, and hands over what it accepts
            assert "link down;" in victim.log()
            assert "taken over from no instance" in survivor.log()
        stored_events = _event_ids(url)
        received = [event.event_id for event in sink.events]
        assert set(received) == stored_events, "the webhook saw every event stored: no gap"
        assert sink.bad_signatures == 0
        # Copies written twice: at most what the victim held within the resend window
        # before its death (what a survivor resends, and what it had not yet sent).
        resent = sum(
            int(n)
            for _, n in re.findall(r"(\d+) messages to dispatch, (\d+) to resend", survivor.log())
        )
        window_s = 15.0
        held = sum(n for at, n in to_victim_at if killed_at - window_s <= at <= killed_at)
        print(f"{failure}: {resent} resent by the survivor, of {held} the victim held")
        assert resent <= held
        for process in (survivor, victim):
            assert "Traceback" not in process.log(), process.log()
    if node_killed:
        await asyncio.to_thread(ejabberd_cluster.revive, 1)


PROSODY_FLOOD = 2_000
PROSODY_BATCH = 250


@pytest.mark.parametrize("xmpp_server", ["prosody"], indirect=True)
async def test_a_prosody_failover_loses_nothing(
    xmpp_server: XmppServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Prosody takes one connection per component: one instance is active, the other
    stands by and serves its HTTP API meanwhile. The active one is killed mid-flood;
    the standby takes the link within seconds and sends what both accepted."""
    url = fresh_database(postgres_server, "cmaas_failover_prosody")
    active, standby = shared_gateways(
        [xmpp_server, xmpp_server], url, tmp_path, heartbeat_s=1.0, dead_after_s=5.0
    )
    standby.env["CMAAS_STANDBY_RETRY"] = "1"
    xmpp_server.register_user("floodstandby", PASSWORD)
    person = f"floodstandby@{xmpp_server.domain}"
    async with AsyncExitStack() as stack:
        active.start()
        stack.callback(active.stop)
        standby.start(wait=False)
        stack.callback(standby.stop)
        await _until(lambda: standby.health().get("component_link") == "standby", str, 20)
        sink = await stack.enter_async_context(WebhookReceiver().running())
        session = await stack.enter_async_context(http_session())
        await roomy_plan(active, rate=20_000)
        app = await register_app(active, session, "bank", "--callback-url", sink.url)
        sink.hmac_key = app.credentials.hmac_key
        apis = [
            app.api,
            GatewayApi(f"http://127.0.0.1:{standby.http_port}", app.credentials, session),
        ]
        device = await stack.enter_async_context(
            new_device(xmpp_server, tmp_path, "floodstandby", "phone")
        )
        await device.publish("phone")
        sealed = await seal_flood(app, person, PROSODY_FLOOD, Priority.NORMAL)
        shown: list[str] = []
        stack.callback(collect_shown(device, shown).cancel)
        active_up = True
        for number in range(PROSODY_FLOOD // PROSODY_BATCH):
            batch = sealed[number * PROSODY_BATCH : (number + 1) * PROSODY_BATCH]
            api = apis[number % 2] if active_up else apis[1]
            submitting = asyncio.create_task(api.submit_batch(batch))
            if number == PROSODY_FLOOD // PROSODY_BATCH // 2:
                await asyncio.sleep(0.05)
                await asyncio.to_thread(active.kill)
                active_up = False
            try:
                results = await submitting
            except aiohttp.ClientError:
                results = await apis[1].submit_batch(batch)
            assert all(isinstance(r, Accepted) for r in results), results

        def situation() -> str:
            return (
                f"{len(set(shown))} of {PROSODY_FLOOD} shown, {_count(url, 'delivered')}"
                f" delivered; standby's log:\n{standby.log()[-6000:]}"
            )

        await _until(lambda: len(set(shown)) == PROSODY_FLOOD, situation)
        await _until(lambda: _count(url, "delivered") == PROSODY_FLOOD, situation)
        await _until(lambda: _delivered_at(sink) == PROSODY_FLOOD, situation)
        assert sorted(shown) == sorted(m.message_id for m in sealed), "each shown exactly once"
        assert {event.event_id for event in sink.events} == _event_ids(url)
        assert standby.health()["component_link"] == "connected"
        assert "took over from dead instances" in standby.log()
        assert "Traceback" not in standby.log(), standby.log()


async def _until(
    condition: Callable[[], bool], situation: Callable[[], str], within: float = WITHIN_S
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, situation()
        await asyncio.sleep(0.2)


def _count(url: str, status: str) -> int:
    return scalar(url, "SELECT count(*) FROM messages WHERE status = %s", status)


def _event_ids(url: str) -> set[int]:
    with psycopg.connect(url) as db:
        return {
            int(row[0])
            for row in db.execute("SELECT event_id FROM status_events WHERE app_id = 'bank'")
        }


def _delivered_at(sink: WebhookReceiver) -> int:
    return len(
        {
            e.message_id
            for e in sink.events
            if e.status in (MessageStatus.DELIVERED, MessageStatus.READ)
        }
    )
