"""An ad-hoc command whose steps alternate between two gateway processes sharing one
PostgreSQL database, on a real 2-node ejabberd cluster: each step is addressed to one
instance's own host (``CMAAS_INSTANCE_HOST``), which the cluster routes to that
instance's connection alone, so every step lands on the other instance than the step
before. The session, kept in the database, carries the command from one to the other."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cmaas.devservers import EjabberdCluster, PostgresServer
from cmaas.devservers.client import AdhocClient

from .conftest import CLUSTER_INSTANCE_HOSTS, connect
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

UPDATE = "urn:cmaas:cmd:app-update"


@asynccontextmanager
async def two_instances(
    cluster: EjabberdCluster, postgres: PostgresServer, workdir: Path, database: str
) -> AsyncIterator[tuple[str, list[GatewayProcess]]]:
    """Gateways ``a`` on the cluster's first node and ``b`` on its second, on a fresh
    PostgreSQL ``database``, each with its own host; yields the database URL and them."""
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = postgres.url(database)
    (workdir / "blobs").mkdir()
    gateways: list[GatewayProcess] = []
    for name, node, host in zip("ab", cluster.nodes, CLUSTER_INSTANCE_HOSTS[:2], strict=True):
        (workdir / name).mkdir()
        process = GatewayProcess(node, workdir / name, admins=f"admin@{cluster.domain}")
        if gateways:  # one database: one master key
            process.master_key = gateways[0].master_key
        process.env.update(
            CMAAS_DATABASE=url,
            CMAAS_BLOB_DIR=str(workdir / "blobs"),
            CMAAS_MASTER_KEY=base64.b64encode(process.master_key).decode(),
            CMAAS_INSTANCE_HOST=host,
        )
        gateways.append(process)
    async with AsyncExitStack() as stack:
        for process in gateways:
            process.start()
            stack.callback(process.stop)
        yield url, gateways


async def _answering(client: AdhocClient, hosts: Sequence[str], within: float = 20.0) -> None:
    """Wait until each instance answers commands on its own host (its second component
    connection may come up after the health check passed)."""
    deadline = time.monotonic() + within
    for host in hosts:
        while (listed := await client.execute(host, "urn:cmaas:cmd:app-list")).error:
            assert time.monotonic() < deadline, f"{host} never answered: {listed}"
            await asyncio.sleep(0.2)
        assert listed.status == "completed", listed


async def test_app_update_steps_alternate_between_instances(
    ejabberd_cluster: EjabberdCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    first, second = ejabberd_cluster.nodes
    on_a, on_b = CLUSTER_INSTANCE_HOSTS[:2]
    async with (
        two_instances(ejabberd_cluster, postgres_server, tmp_path, "cmaas_adhoc") as (url, gws),
        AsyncExitStack() as stack,
    ):
        admin = await connect(first, "admin")
        stack.push_async_callback(admin.disconnect)
        alice = await connect(second, "alice")
        stack.push_async_callback(alice.disconnect)
        await _answering(admin, (on_a, on_b))
        registered = await admin.run(
            on_a, "urn:cmaas:cmd:app-register", {"app_id": "shop", "display_name": "Shop"}
        )
        assert registered.status == "completed", registered

        opened = await admin.execute(on_b, UPDATE)  # opened on b
        assert opened.status == "executing", opened
        session = opened.session_id
        picked = await admin.submit(on_a, UPDATE, session, {"app_id": "shop"}, "next")  # on a
        assert picked.status == "executing", picked
        assert picked.values["display_name"] == ["Shop"]
        # Another JID, on the other instance, is refused and changes nothing.
        intruder = await alice.submit(on_b, UPDATE, session, {"display_name": "Mine"})
        assert intruder.error == "forbidden", intruder
        refused = await admin.submit(  # on b: the edit form again, with the refusal
            on_b, UPDATE, session, {"display_name": "Shop & Co", "plan": "gold"}
        )
        assert refused.status == "executing", refused
        assert any("no plan named 'gold'" in note for note in refused.error_notes), refused
        assert refused.values["display_name"] == ["Shop & Co"]
        saved = await admin.submit(  # on a
            on_a,
            UPDATE,
            session,
            {"display_name": "Shop & Co", "plan": "default", "suspended": "1"},
        )
        assert saved.status == "completed", saved
        assert saved.values["display_name"] == ["Shop & Co"]

        # The change is visible on both instances and in the database; the session is
        # gone from the database, so no instance takes another step of it.
        for host in (on_a, on_b):
            shown = await admin.run(host, "urn:cmaas:cmd:app-show", {"app_id": "shop"})
            assert shown.values["display_name"] == ["Shop & Co"], shown
        with psycopg.connect(url) as db:
            app = db.execute("SELECT display_name, suspended FROM apps WHERE app_id = 'shop'")
            assert app.fetchone() == ("Shop & Co", 1)
            left = db.execute("SELECT count(*) FROM adhoc_sessions").fetchone()
            assert left == (0,)
        gone = await admin.submit(on_b, UPDATE, session, {"display_name": "Again"})
        assert (gone.error, gone.app_error) == ("bad-request", "bad-sessionid"), gone
        for process in gws:
            assert "Traceback" not in process.log(), process.log()
        # Each host is served by its own instance alone: with a stopped, a's host
        # answers no more, and b's still does.
        gws[0].stop()
        stopped = await admin.execute(on_a, "urn:cmaas:cmd:app-list")
        assert stopped.error is not None, stopped
        assert (await admin.execute(on_b, "urn:cmaas:cmd:app-list")).status == "completed"
