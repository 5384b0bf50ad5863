"""A SlixTest harness that runs the real GatewayComponent over slixmpp's mock socket."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slixmpp import Iq
from slixmpp.test import SlixTest, TestTransport
from slixmpp.test.mocksocket import TestSocket
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath

from cmaas.admin import AdminService
from cmaas.component.adhoc.access import AccessPolicy
from cmaas.component.adhoc.command import Command
from cmaas.component.adhoc.engine import AdhocEngine, SessionLimits
from cmaas.component.commands import admin_commands, device_commands
from cmaas.component.contacts import AppContacts
from cmaas.component.gateway import GatewayComponent
from cmaas.delivery.tracker import Feedback
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import MasterKeyring, SqliteKeystore

DOMAIN = "gateway.cmaas.test"
ADMIN = "admin@cmaas.test/gajim"
USER = "alice@cmaas.test/phone"


class MonotonicClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordedFeedback:
    """A feedback sink that keeps what it is handed."""

    def __init__(self) -> None:
        self.items: list[Feedback] = []

    async def report(self, feedback: Feedback) -> None:
        self.items.append(feedback)

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        self.items.extend(feedbacks)


class PausableTransport:
    """slixmpp's test transport, with the flow control of a real one."""

    def __init__(self, inner: TestTransport) -> None:
        self.inner = inner
        self.paused = False
        self.paused_reads = 0
        self.extra: dict[str, object] = {}
        """What :meth:`get_extra_info` answers beside the test transport's own."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name in self.extra:
            return self.extra[name]
        return self.inner.get_extra_info(name, default=default)

    def pause_reading(self) -> None:
        self.paused = True
        self.paused_reads += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class GatewayStanzaTest(SlixTest):
    """Feeds stanzas to the gateway as the server would, and reads what it writes."""

    session_limits: SessionLimits | None = None
    """The engine's session limits; its defaults when ``None``."""

    def setUp(self) -> None:
        # SlixTest drives the loop with get_event_loop(); give each test its own, so
        # it neither depends on nor disturbs pytest-asyncio's loops.
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._tmp = tempfile.TemporaryDirectory()
        self.monotonic = MonotonicClock()
        self.database_path = Path(self._tmp.name) / "db.sqlite3"
        self.keystore = self.run_coro(
            SqliteKeystore.open(self.database_path, MasterKeyring(os.urandom(32)))
        )
        self.service = AdminService(self.keystore)
        self.directory = KeyDirectory(self.keystore)
        self.engine = self.new_engine()
        self.feedback = RecordedFeedback()
        self.xmpp = GatewayComponent(DOMAIN, "secret", AppContacts(self.keystore, DOMAIN))
        self.xmpp.feedback.subscribe(self.feedback)
        self.xmpp.serve(self.engine)
        self.mode = "component"
        self.xmpp._always_send_everything = True
        self.transport = PausableTransport(TestTransport(self.xmpp))
        self.xmpp.connection_made(self.transport)  # type: ignore[arg-type]
        self.xmpp.session_bind_event.set()
        self.xmpp.default_lang = None
        self.xmpp.peer_default_lang = None
        counter = iter(range(1, 1_000_000))
        self.xmpp.new_id = lambda: str(next(counter))  # type: ignore[method-assign]
        self.xmpp.data_received(self.xmpp.stream_header)
        self.wait_for_send_queue()
        assert isinstance(self.xmpp.socket, TestSocket)
        self.xmpp.socket.next_sent()  # our stream header
        self.xmpp.socket.next_sent()  # the handshake
        self.xmpp.use_message_ids = False
        self.xmpp.use_presence_ids = False
        self.xmpp.event("session_start")

    @property
    def gateway(self) -> GatewayComponent:
        """The stream under test, as the gateway's own type."""
        assert isinstance(self.xmpp, GatewayComponent)
        return self.xmpp

    def new_engine(self, commands: list[Command] | None = None) -> AdhocEngine:
        """An engine on this test's keystore, with command objects of its own."""
        return AdhocEngine(
            commands
            or [
                *admin_commands(AdminService(self.keystore), DOMAIN),
                *device_commands(KeyDirectory(self.keystore)),
            ],
            AccessPolicy(frozenset({"admin@cmaas.test"}), frozenset({"cmaas.test"}), self.keystore),
            self.keystore.adhoc_sessions,
            session_timeout=300,
            clock=self.monotonic,
            limits=self.session_limits,
        )

    def switch_instance(self, commands: list[Command] | None = None) -> AdhocEngine:
        """From now on, command steps reach a new engine on the same keystore, as
        they reach another gateway instance on the same database: nothing held in the
        first engine's process serves them."""
        engine = self.new_engine(commands)
        self.xmpp.remove_handler("cmaas ad-hoc")
        self.xmpp.register_handler(
            CoroutineCallback(
                "cmaas ad-hoc",
                StanzaPath("iq@type=set/command"),
                engine.handle,  # type: ignore[arg-type]
            )
        )
        return engine

    def tearDown(self) -> None:
        self.run_coro(self.keystore.close())
        self._tmp.cleanup()
        super().tearDown()
        self.transport.inner.socket.socket.close()  # slixmpp's mock wraps a real, unused socket
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()
        asyncio.set_event_loop(None)

    def next_stanza(self, timeout: float = 3.0) -> ET.Element:
        """The next stanza the gateway writes, waiting for async handlers (SQLite threads)."""
        deadline = time.monotonic() + timeout
        assert isinstance(self.xmpp.socket, TestSocket)
        while time.monotonic() < deadline:
            self.wait_for_send_queue()
            sent = self.xmpp.socket.next_sent()
            if sent is not None:
                xml = self.parse_xml(sent)
                self.fix_namespaces(xml, "jabber:component:accept")
                return xml
            self.run_coro(asyncio.sleep(0.01))
        raise AssertionError("the gateway wrote nothing")

    def expect(self, expected: str) -> ET.Element:
        """Assert the next stanza equals ``expected`` exactly (a golden stanza)."""
        xml = self.next_stanza()
        stanza = self.xmpp._build_stanza(xml)
        self.check(stanza, expected, method="exact", use_values=False)
        return xml

    def expect_only_the_answer(self, probe: str, answer: str) -> None:
        """Assert that the next stanza the gateway writes is ``answer``, to ``probe``.

        The gateway handles stanzas in the order they arrive, so anything it wrote for
        the earlier ones would come before the answer: that proves it wrote nothing for
        them, where waiting a while and seeing nothing would only hope so. ``probe``
        must take the same path (handler kind) as the stanzas it vouches for.
        """
        self.recv(probe)
        self.expect(answer)

    def command_reply(self, xml: str) -> Iq:
        self.recv(xml)
        stanza = self.xmpp._build_stanza(self.next_stanza())
        assert isinstance(stanza, Iq)
        return stanza

    def execute(self, node: str, sender: str = ADMIN, iq_id: str = "e1") -> Iq:
        return self.command_reply(
            f"<iq type='set' id='{iq_id}' from='{sender}' to='{DOMAIN}'>"
            f"<command xmlns='http://jabber.org/protocol/commands' node='{node}'"
            " action='execute'/></iq>"
        )

    def submit(
        self,
        node: str,
        session: str,
        values: dict[str, Any],
        sender: str = ADMIN,
        iq_id: str = "s1",
        action: str = "complete",
    ) -> Iq:
        fields = ["<field var='FORM_TYPE'><value>urn:cmaas:cmd:1</value></field>"]
        for var, value in values.items():
            items = value if isinstance(value, list) else [value]
            rendered = "".join(f"<value>{_escape(str(v))}</value>" for v in items)
            fields.append(f"<field var='{var}'>{rendered}</field>")
        return self.command_reply(
            f"<iq type='set' id='{iq_id}' from='{sender}' to='{DOMAIN}'>"
            f"<command xmlns='http://jabber.org/protocol/commands' node='{node}'"
            f" sessionid='{session}' action='{action}'>"
            f"<x xmlns='jabber:x:data' type='submit'>{''.join(fields)}</x>"
            "</command></iq>"
        )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def form_values(iq: Iq) -> dict[str, list[str]]:
    form = iq["command"].xml.find("{jabber:x:data}x")
    assert form is not None, "the reply carries no form"
    return {
        f.get("var", ""): [v.text or "" for v in f.findall("{jabber:x:data}value")]
        for f in form.findall("{jabber:x:data}field")
    }
