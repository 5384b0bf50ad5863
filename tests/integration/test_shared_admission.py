"""Admission across two gateway processes sharing one PostgreSQL database on the real
2-node ejabberd cluster: a request nonce used at one instance is refused at the other,
an app's rate plan holds for both together, and back-pressure at one counts the
messages queued at the other."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from cmaas.clientservice import ApiError, GatewayApi
from cmaas.devservers import EjabberdCluster, PostgresServer, free_port
from cmaas.lifecycle import Priority
from cmaas.wire import Submission

from .apps import RegisteredApp, admin, http_session, register_app, seal_flood
from .cluster_gateways import cluster_gateways, fresh_database
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

RATE, BURST = 10, 50
# The clients submit until this many were refused, for at most HAMMER_S: on a busy
# machine they may need longer than the burst lasts at full speed to get past it.
REFUSALS = 20
HAMMER_S = 30.0


@asynccontextmanager
async def two_instances(
    cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path, **env: str
) -> AsyncIterator[tuple[RegisteredApp, list[GatewayProcess], list[GatewayApi]]]:
    """Both instances running (``env`` added to their settings), app ``bank``
    registered with the plan's rate and burst, and alice's phone published; yields the
    app, the instances and the app's API at each."""
    url = fresh_database(postgres_server, "cmaas_shared_admission")
    gateways = cluster_gateways(cluster, url, tmp_path)
    async with AsyncExitStack() as stack:
        for gateway in gateways:
            gateway.env.update(env)
            gateway.start()
            stack.callback(gateway.stop)
        session = await stack.enter_async_context(http_session())
        await asyncio.to_thread(
            admin, gateways[0], "plan-set", "default", "--rate", str(RATE), "--burst", str(BURST)
        )
        app = await register_app(gateways[0], session, "bank")
        device = await stack.enter_async_context(
            new_device(cluster.nodes[1], tmp_path, "alice", "phone")
        )
        await device.publish("phone")
        apis = [
            GatewayApi(f"http://127.0.0.1:{gateway.http_port}", app.credentials, session)
            for gateway in gateways
        ]
        yield app, gateways, apis


async def _unlinked(gateway: GatewayProcess, within: float = 30.0) -> None:
    """Start ``gateway`` again with its IM server's port closed: it serves the API but
    dispatches nothing, and (as every unlinked instance) owns nothing it admits."""
    gateway.stop()
    gateway.env["CMAAS_XMPP_PORT"] = str(free_port())
    gateway.start(wait=False)
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(gateway.health):
        assert time.monotonic() < deadline, gateway.log()
        await asyncio.sleep(0.1)


async def _send(
    api: GatewayApi, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    """One request with the headers given (a replay sends another's again)."""
    async with (
        http_session() as session,
        session.request(method, api.base_url + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _outcome(api: GatewayApi, message: Submission) -> str:
    """``accepted``, or the refusal's status and code."""
    try:
        return (await api.submit(message)).status
    except ApiError as error:
        return f"{error.status} {error.code}"


async def test_a_nonce_used_at_one_instance_is_refused_at_the_other(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with two_instances(ejabberd_cluster, postgres_server, tmp_path) as (app, _, apis):
        at_a, at_b = apis
        (message,) = await seal_flood(app, f"alice@{ejabberd_cluster.domain}", 1, Priority.HIGH)
        body = json.dumps(message.to_json()).encode()
        # A submission: its nonce is claimed with its message, at A...
        headers = at_a.signed_headers("POST", "/v1/messages", body)
        headers["Content-Type"] = "application/json"
        status, answer = await _send(at_a, "POST", "/v1/messages", body, headers)
        assert status == 202, answer
        # ... and the same request at B is a replay.
        status, answer = await _send(at_b, "POST", "/v1/messages", body, headers)
        assert (status, answer["error"]) == (401, "unauthenticated"), answer
        assert "used before" in answer["detail"]
        # A request that stores nothing, the other way round.
        headers = at_b.signed_headers("GET", "/v1/app", b"")
        status, answer = await _send(at_b, "GET", "/v1/app", b"", headers)
        assert status == 200, answer
        status, answer = await _send(at_a, "GET", "/v1/app", b"", headers)
        assert (status, "used before" in answer["detail"]) == (401, True), answer
        history = (await at_b.status(message.message_id)).history
        assert [event.status.value for event in history][:1] == ["accepted"]


async def test_a_plan_holds_across_both_instances_together(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with two_instances(ejabberd_cluster, postgres_server, tmp_path) as (app, _, apis):
        at_a, at_b = apis
        messages = iter(
            await seal_flood(app, f"alice@{ejabberd_cluster.domain}", 1200, Priority.HIGH)
        )
        outcomes: list[str] = []

        async def client(apis: tuple[GatewayApi, GatewayApi], until: float) -> None:
            """Submits one message at a time, alternating between the instances."""
            for turn, message in enumerate(messages):
                if time.monotonic() >= until or len(outcomes) - outcomes.count("accepted") >= (
                    REFUSALS
                ):
                    return
                outcomes.append(await _outcome(apis[turn % 2], message))

        started = time.monotonic()
        await asyncio.gather(
            client((at_a, at_b), started + HAMMER_S), client((at_b, at_a), started + HAMMER_S)
        )
        elapsed = time.monotonic() - started
        ceiling = BURST + RATE * elapsed
        granted = outcomes.count("accepted")
        print(
            f"{granted} granted, {len(outcomes) - granted} refused in {elapsed:.2f} s"
            f" (one bucket allows {ceiling:.1f}; one per instance would allow {2 * ceiling:.1f})"
        )
        assert set(outcomes) == {"accepted", "429 rate_limited"}, set(outcomes)
        # Every take, at either instance, was between the test's first request and its
        # last answer: the shared bucket can have granted no more than that allows.
        assert BURST <= granted <= ceiling


async def test_back_pressure_at_one_instance_counts_what_the_other_queued(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with two_instances(
        ejabberd_cluster, postgres_server, tmp_path, CMAAS_OUTBOX_BULK_LIMIT="3"
    ) as (app, gateways, (at_a, at_b)):
        alice = f"alice@{ejabberd_cluster.domain}"
        queued = await seal_flood(app, alice, 3, Priority.BULK)
        later = iter(await seal_flood(app, alice, 100, Priority.BULK))
        (urgent,) = await seal_flood(app, alice, 1, Priority.HIGH)
        # Neither instance can dispatch now, nor take over what the other admits: the
        # messages A admits stay queued, and B's own queue stays empty.
        for gateway in gateways:
            await _unlinked(gateway)
        for message in queued:
            assert (await at_a.submit(message)).status == "accepted"
        # B reads the count at most once a second: within a few, it refuses bulk.
        deadline = time.monotonic() + 10
        outcome = await _outcome(at_b, next(later))
        while outcome == "accepted" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            outcome = await _outcome(at_b, next(later))
        assert outcome == "503 backpressure", outcome
        assert (await at_b.submit(urgent)).status == "accepted"  # never refused for depth
