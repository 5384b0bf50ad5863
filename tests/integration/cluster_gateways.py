"""Gateway instances sharing one PostgreSQL database and one component domain: on the
real 2-node ejabberd cluster, each on a node of its own with its own ping reply host;
on Prosody, one active and the others standing by."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import psycopg

from cmaas.devservers import EjabberdCluster, PostgresServer, XmppServer

from .conftest import CLUSTER_INSTANCE_HOSTS
from .gateway_process import GatewayProcess

__all__ = ["cluster_gateways", "fresh_database", "scalar", "shared_gateways"]


def fresh_database(server: PostgresServer, name: str) -> str:
    """An empty database ``name`` (dropped first if a former run left it); its URL."""
    return server.fresh_database(name)


def cluster_gateways(
    cluster: EjabberdCluster,
    url: str,
    workdir: Path,
    *,
    count: int = 2,
    heartbeat_s: float = 0.5,
    dead_after_s: float = 2.0,
) -> list[GatewayProcess]:
    """``count`` gateway processes (not started) on the database at ``url``, linked to
    the cluster's nodes in turn, each with its own ping reply host."""
    return shared_gateways(
        [cluster.nodes[index % 2] for index in range(count)],
        url,
        workdir,
        instance_hosts=CLUSTER_INSTANCE_HOSTS[:count],
        heartbeat_s=heartbeat_s,
        dead_after_s=dead_after_s,
    )


def shared_gateways(
    servers: Sequence[XmppServer],
    url: str,
    workdir: Path,
    *,
    instance_hosts: Sequence[str] = (),
    heartbeat_s: float = 0.5,
    dead_after_s: float = 2.0,
) -> list[GatewayProcess]:
    """One gateway process (not started) per server given, all on the database at
    ``url``; quick heartbeats, so that a death is noticed soon."""
    gateways: list[GatewayProcess] = []
    for index, server in enumerate(servers):
        home = workdir / f"gateway-{index}"
        home.mkdir()
        process = GatewayProcess(server, home, admins=f"admin@{server.domain}")
        if gateways:  # one database: one master key
            process.master_key = gateways[0].master_key
        process.env.update(
            CMAAS_DATABASE=url,
            CMAAS_MASTER_KEY=base64.b64encode(process.master_key).decode(),
            CMAAS_HEARTBEAT=str(heartbeat_s),
            CMAAS_DEAD_AFTER=str(dead_after_s),
        )
        if instance_hosts:
            process.env["CMAAS_INSTANCE_HOST"] = instance_hosts[index]
        gateways.append(process)
    return gateways


def scalar(url: str, query: str, *params: object) -> int:
    """The one number a query answers, read over a connection of its own."""
    with psycopg.connect(url) as db:
        row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])
