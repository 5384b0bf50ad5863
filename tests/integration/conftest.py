"""Integration fixtures: real Prosody and ejabberd on loopback, the real gateway process,
and real XMPP client accounts. A server that cannot start fails the run; nothing skips."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cmaas.devservers import (
    DevServerError,
    EjabberdCluster,
    PostgresServer,
    XmppServer,
    ensure_installed,
    start_ejabberd,
    start_ejabberd_cluster,
    start_postgres,
    start_prosody,
)
from cmaas.devservers.client import AdhocClient
from cmaas.keystore import MasterKeyring, SqliteKeystore

from .gateway_process import GatewayProcess

PASSWORD = "correct horse battery staple"
# dana is the several-clients tests' own: what their other clients leave in offline
# storage and the archive reaches no other test.
USERS = ("admin", "alice", "bot", "dana")
# One ping reply host per gateway instance on the cluster (CMAAS_INSTANCE_HOST).
CLUSTER_INSTANCE_HOSTS = ("a.gateway.cmaas.test", "b.gateway.cmaas.test", "c.gateway.cmaas.test")


@pytest.fixture(scope="session", params=["prosody", "ejabberd"])
def xmpp_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[XmppServer]:
    kind = request.param
    ensure_installed()
    start = start_prosody if kind == "prosody" else start_ejabberd
    server = start(tmp_path_factory.mktemp(kind))
    try:
        for user in USERS:
            server.register_user(user, PASSWORD)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ejabberd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EjabberdCluster]:
    """Two joined ejabberd nodes serving one component domain, once per session."""
    ensure_installed()
    cluster = start_ejabberd_cluster(
        tmp_path_factory.mktemp("cluster"), instance_hosts=CLUSTER_INSTANCE_HOSTS
    )
    try:
        for user in USERS:
            cluster.register_user(user, PASSWORD)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session; each test makes its own database."""
    try:
        server = start_postgres()
    except DevServerError as error:
        pytest.fail(f"PostgreSQL could not start (scripts/bootstrap installs it): {error}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def gateway(xmpp_server: XmppServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        xmpp_server, tmp_path, admins=f"admin@{xmpp_server.domain}", log_level="DEBUG"
    )
    process.start()
    try:
        yield process
    finally:
        status = process.stop()
        assert status == 0, f"gateway did not shut down cleanly ({status}):\n{process.log()}"
        # Every stanza must leave with an explicit 'from' (ejabberd closes the stream
        # otherwise); the gateway's safety net logs any it had to stamp.
        assert "stanza without 'from'" not in process.log()
        assert "Traceback" not in process.log(), process.log()


async def connect(server: XmppServer, user: str, resource: str = "test") -> AdhocClient:
    client = AdhocClient(
        f"{user}@{server.domain}/{resource}", PASSWORD, server.host, server.c2s_port
    )
    await client.connect()
    return client


@pytest.fixture
async def admin(xmpp_server: XmppServer, gateway: GatewayProcess) -> AsyncIterator[AdhocClient]:
    client = await connect(xmpp_server, "admin")
    yield client
    await client.disconnect()


@pytest.fixture
async def alice(xmpp_server: XmppServer, gateway: GatewayProcess) -> AsyncIterator[AdhocClient]:
    client = await connect(xmpp_server, "alice")
    yield client
    await client.disconnect()


@pytest.fixture
async def stored(gateway: GatewayProcess) -> AsyncIterator[SqliteKeystore]:
    """The gateway's own database, opened beside it to check what it stored."""
    keystore = await SqliteKeystore.open(gateway.database, MasterKeyring(gateway.master_key))
    yield keystore
    await keystore.close()
