"""Several gateway instances on one component domain, across a real 2-node ejabberd
cluster: each instance's pings come back to it, and a component on one node reaches
users on the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from slixmpp import JID, Message
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.component.ping_replies import PingReplies
from cmaas.devservers import EjabberdCluster, XmppServer
from cmaas.envelope import OtpContent
from cmaas.xmpp.link import XmppLink

from .apps import http_session, metrics_text, register_app
from .conftest import CLUSTER_INSTANCE_HOSTS, connect
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

PINGS = 20
STATUS_NS = "urn:cmaas:status:1"


@asynccontextmanager
async def component(xmpp: ComponentXMPP, node: XmppServer) -> AsyncIterator[None]:
    """``xmpp`` connected to ``node``'s component port until the block ends."""
    stop = asyncio.Event()
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: up.set())
    running = asyncio.create_task(XmppLink(xmpp, node.host, node.component_port).run(stop))
    try:
        async with asyncio.timeout(10):
            await up.wait()
        yield
    finally:
        stop.set()
        await running


async def test_each_instance_gets_its_own_ping_replies(ejabberd_cluster: EjabberdCluster) -> None:
    """Three instances of one component domain, two on node 1 and one on node 2, ping at
    once from their own hosts on the shared stream: every result comes back to the
    instance that asked. (From the shared domain, node 1 would hand each result to
    either of its two connections at random.)"""
    first, second = ejabberd_cluster.nodes
    server = JID(ejabberd_cluster.domain)
    secret = first.component_secret
    instances = []
    async with AsyncExitStack() as stack:
        for node, host in zip((first, second, first), CLUSTER_INSTANCE_HOSTS, strict=True):
            shared = ComponentXMPP(ejabberd_cluster.component_domain, secret)
            shared.register_plugin("xep_0199")
            replies = PingReplies(host, secret)
            await stack.enter_async_context(component(shared, node))
            await stack.enter_async_context(component(replies, node))
            instances.append((shared, replies))
        answered = await asyncio.gather(
            *(
                replies.ping(shared, server, 5.0)
                for shared, replies in instances
                for _ in range(PINGS)
            )
        )
    assert answered == [True] * (len(instances) * PINGS)
    assert [replies.stray for _, replies in instances] == [0] * len(instances)


async def test_gateways_on_both_nodes_deliver_and_get_their_barrier_pings(
    ejabberd_cluster: EjabberdCluster, tmp_path: Path
) -> None:
    """Gateway A on node 1 and gateway B on node 2, each with its own ping host (and, for
    now, its own SQLite file): A's status notices reach a user on node 2, and both
    dispatchers' barriers are answered."""
    first, second = ejabberd_cluster.nodes
    domain = ejabberd_cluster.domain
    gateways = []
    for name, node, host in zip("ab", (first, second), CLUSTER_INSTANCE_HOSTS[:2], strict=True):
        (tmp_path / name).mkdir()
        process = GatewayProcess(node, tmp_path / name, admins=f"admin@{domain}")
        process.env["CMAAS_INSTANCE_HOST"] = host
        gateways.append(process)
    async with AsyncExitStack() as stack:
        for process in gateways:
            process.start()
            stack.callback(process.stop)
        session = await stack.enter_async_context(http_session())
        # bot, on node 2, is the app's bound JID: gateway A tells it about the message.
        bot = await connect(second, "bot")
        stack.push_async_callback(bot.disconnect)
        notices: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_notice(message: Message) -> None:
            status = message.xml.find(f"{{{STATUS_NS}}}status")
            assert status is not None
            notices.put_nowait((str(message["from"].bare), status.get("status", "")))

        bot.xmpp.register_handler(
            Callback(
                "status notices",
                MatchXPath(f"{{jabber:client}}message/{{{STATUS_NS}}}status"),
                on_notice,  # type: ignore[arg-type]
            )
        )
        # Each recipient's device is on its gateway's node: its publication reaches
        # that node's (local) gateway.
        for process, node, user in zip(gateways, (first, second), ("alice", "dana"), strict=True):
            app_id = f"bank-{user}"
            app = await register_app(process, session, app_id, "--jid", f"bot@{domain}")
            device = await stack.enter_async_context(new_device(node, tmp_path, user, "phone"))
            await device.publish("phone")
            lookup = await app.api.lookup(f"{user}@{domain}")
            message_id = app.new_id()
            await app.api.submit(
                app.seal(lookup, OtpContent("482913", "login"), message_id=message_id)
            )
            async with asyncio.timeout(10):
                received = await device.next_message()
            assert received.message_id == message_id
        async with asyncio.timeout(10):
            told = [await notices.get() for _ in range(6)]
        assert sorted(told) == sorted(
            (f"bank-{user}@{ejabberd_cluster.component_domain}", status)
            for user in ("alice", "dana")
            for status in ("accepted", "dispatched", "delivered")
        )
        for process in gateways:
            metrics = await metrics_text(process)
            assert 'cmaas_barrier_pings_total{outcome="unanswered"} 0.0' in metrics
            assert 'cmaas_barrier_pings_total{outcome="answered"} 0.0' not in metrics
            assert "ping reply link up" in process.log()
            health = process.health()
            assert (health["status"], health["ping_link"]) == ("ok", "connected"), health
