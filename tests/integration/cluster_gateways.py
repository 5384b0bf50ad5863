"""Gateway instances sharing one PostgreSQL database and one component domain on the
real 2-node ejabberd cluster: each on a node of its own, with its own ping reply host."""

from __future__ import annotations

import base64
from pathlib import Path

import psycopg
from psycopg import sql

from cmaas.devservers import EjabberdCluster, PostgresServer

from .conftest import CLUSTER_INSTANCE_HOSTS
from .gateway_process import GatewayProcess

__all__ = ["cluster_gateways", "fresh_database", "scalar"]


def fresh_database(server: PostgresServer, name: str) -> str:
    """An empty database ``name`` (dropped first if a former run left it); its URL."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.url(name)


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
    the cluster's nodes in turn; quick heartbeats, so that a death is noticed soon."""
    domain = cluster.domain
    gateways: list[GatewayProcess] = []
    for index in range(count):
        home = workdir / f"gateway-{index}"
        home.mkdir()
        process = GatewayProcess(cluster.nodes[index % 2], home, admins=f"admin@{domain}")
        if gateways:  # one database: one master key
            process.master_key = gateways[0].master_key
        process.env.update(
            CMAAS_DATABASE=url,
            CMAAS_BLOB_DIR=str(workdir / "blobs"),
            CMAAS_MASTER_KEY=base64.b64encode(process.master_key).decode(),
            CMAAS_INSTANCE_HOST=CLUSTER_INSTANCE_HOSTS[index],
            CMAAS_HEARTBEAT=str(heartbeat_s),
            CMAAS_DEAD_AFTER=str(dead_after_s),
        )
        gateways.append(process)
    (workdir / "blobs").mkdir()
    return gateways


def scalar(url: str, query: str, *params: object) -> int:
    """The one number a query answers, read over a connection of its own."""
    with psycopg.connect(url) as db:
        row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])
