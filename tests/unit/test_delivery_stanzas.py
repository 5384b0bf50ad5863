"""Golden stanzas for sealed messages and device commands; feedback becomes events."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import pytest
from slixmpp import JID

from cmaas.admin import RegisterAppRequest
from cmaas.admin.requests import UpdateAppRequest
from cmaas.component.feedback import FEEDBACK_HIGH_WATER, FeedbackHandlers
from cmaas.component.gateway import READ_SLICE, GatewayComponent
from cmaas.component.outbound import key_transport_xml, sealed_message_xml, xml_attribute
from cmaas.delivery.omemo import AppOmemo, OmemoLimits
from cmaas.delivery.tracker import Feedback, FeedbackKind
from cmaas.envelope import DeviceKeyring
from cmaas.keydirectory import DeviceLimits
from cmaas.keystore import (
    DeviceKeys,
    StatusEvent,
    StoredPrekey,
)
from cmaas.lifecycle import (
    MessageStatus,
)
from cmaas.wire import OmemoInbound
from cmaas.wire.omemo_message import parse_encrypted
from tests.omemo_elements import AXOLOTL, encrypted_xml, shape

from .gateway_stanzas import DOMAIN, USER, GatewayStanzaTest, form_values

PUBLISH = "urn:cmaas:cmd:device-publish"
REVOKE = "urn:cmaas:cmd:device-revoke"


class TestOutbound(GatewayStanzaTest):
    def test_sealed_message_is_the_spec_stanza(self) -> None:
        self.gateway.send_sealed("bank", "alice@cmaas.test", "m-1", '{"v":1}')
        self.expect(
            f"""
          <message type='chat' id='m-1' from='bank@{DOMAIN}/cmaas' to='alice@cmaas.test'>
            <body>This message is end-to-end encrypted for your CMaaS device; this client
 cannot open it.</body>
            <envelope xmlns='urn:cmaas:envelope:1'>{{"v":1}}</envelope>
            <request xmlns='urn:xmpp:receipts'/>
            <markable xmlns='urn:xmpp:chat-markers:0'/>
            <encryption xmlns='urn:xmpp:eme:0' namespace='urn:cmaas:envelope:1' name='CMaaS'/>
            <store xmlns='urn:xmpp:hints'/>
          </message>""".replace("client\n cannot", "client cannot")
        )

    def test_prekeys_low_notice(self) -> None:
        prekey = StoredPrekey(1, b"\x04" + bytes(64), b"sig")
        device = DeviceKeys("alice@cmaas.test", 77, b"ik", ("p256",), prekey, None, 3)
        self.run_coro(self.gateway.notify_prekeys_low(device, DeviceLimits()))
        self.expect(f"""
          <message type='normal' from='{DOMAIN}' to='alice@cmaas.test'>
            <prekeys-low xmlns='urn:cmaas:device:1' device='77' remaining='3' capacity='100'/>
            <store xmlns='urn:xmpp:hints'/>
          </message>""")

    def test_status_notice_for_a_bound_jid(self) -> None:
        event = StatusEvent(
            7, 1, "bank", "m-1", MessageStatus.DELIVERED, 1_800_000_000_000, "42", ""
        )
        self.gateway.send_status("bank", "bot@cmaas.test", event)
        self.expect(f"""
          <message type='normal' from='bank@{DOMAIN}/cmaas' to='bot@cmaas.test'>
            <body>Message m-1: delivered on device 42</body>
            <status xmlns='urn:cmaas:status:1' event='7' message='m-1' status='delivered'
                    at='1800000000000' device='42'/>
            <store xmlns='urn:xmpp:hints'/>
          </message>""")


class TestFeedback(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.events = self.feedback.items

    def test_receipt_marker_and_bounce_become_events(self) -> None:
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r1'>"
            "<received xmlns='urn:xmpp:receipts' id='m-1'/></message>"
        )
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r2'>"
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='m-1'/></message>"
        )
        self.recv(
            f"<message type='error' from='nobody@cmaas.test' to='bank@{DOMAIN}' id='m-2'>"
            "<error type='cancel'><service-unavailable"
            " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )
        self._wait_for_feedback(3)
        assert [(e.kind, e.message_id, e.condition) for e in self.events] == [
            (FeedbackKind.DELIVERED, "m-1", ""),
            (FeedbackKind.DISPLAYED, "m-1", ""),
            (FeedbackKind.BOUNCED, "m-2", "service-unavailable"),
        ]
        assert self.events[0].app_jid == f"bank@{DOMAIN}"
        assert self.events[0].sender == USER

    def test_the_reporting_device_is_its_announced_id_or_else_its_resource(self) -> None:
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r1'>"
            "<received xmlns='urn:xmpp:receipts' id='m-1'/>"
            "<device xmlns='urn:cmaas:device:1' id='123456'/></message>"
        )
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r2'>"
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='m-1'/>"
            "<device xmlns='urn:cmaas:device:1' id='not-a-number'/></message>"
        )
        self._wait_for_feedback(2)
        assert [e.device for e in self.events] == ["123456", JID(USER).resource]

    def test_feedback_without_app_jid_or_valid_id_is_ignored(self) -> None:
        self.recv(
            f"<message type='chat' from='{USER}' to='{DOMAIN}' id='r1'>"
            "<received xmlns='urn:xmpp:receipts' id='m-1'/></message>"
        )
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r2'>"
            "<received xmlns='urn:xmpp:receipts' id='bad id with spaces'/></message>"
        )
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r3'>"
            "<received xmlns='urn:xmpp:receipts'/></message>"
        )
        # A valid receipt after them: handled in order, it proves they were handled.
        self.recv(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r4'>"
            "<received xmlns='urn:xmpp:receipts' id='m-4'/></message>"
        )
        self._wait_for_feedback(1)
        assert [e.message_id for e in self.events] == ["m-4"]
        # Nor did the gateway answer them (with an error, say) before it answers a ping.
        self.expect_only_the_answer(
            f"<iq type='get' id='p1' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>",
            f"<iq type='result' id='p1' from='{DOMAIN}' to='{USER}'/>",
        )

    def test_a_large_read_is_parsed_a_slice_per_turn_of_the_loop(self) -> None:
        """A read of many receipts leaves room between slices for other work (an OTP's
        HTTP request), and the stream's order is kept: nothing is read meanwhile."""
        transport = self.transport
        receipts = "".join(
            f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r{n}'>"
            f"<received xmlns='urn:xmpp:receipts' id='m-{n}'/></message>"
            for n in range(400)
        ).encode()
        assert len(receipts) > 2 * READ_SLICE
        turns: list[int] = []
        # Scheduled before the read: it runs after the first slice, not after the last.
        self.loop.call_soon(lambda: turns.append(parsed()))

        def parsed() -> int:
            return transport.paused_reads

        parsed_before = len(self.events)
        self.xmpp.data_received(receipts)
        assert transport.paused and transport.paused_reads == 1
        self._wait_for_feedback(parsed_before + 400)
        assert not transport.paused
        assert turns == [1]
        assert [e.message_id for e in self.events[parsed_before:]] == [f"m-{n}" for n in range(400)]

    def test_reading_stops_while_too_much_feedback_waits_to_be_recorded(self) -> None:
        """A store slower than the server: what is not yet recorded stays bounded (the
        rest waits unread at the server), and everything is recorded, in order, once
        the store catches up."""
        gate = _Gate()
        self._handlers.subscribe(gate)
        transport = self.transport
        count = 3 * FEEDBACK_HIGH_WATER
        receipts = _receipts(count)
        per_slice = -(-count * READ_SLICE // len(receipts))
        self.xmpp.data_received(receipts)
        self._settle()
        assert transport.paused
        assert self._handlers.backlogged
        held = self._handlers.in_progress
        assert FEEDBACK_HIGH_WATER <= held <= FEEDBACK_HIGH_WATER + per_slice
        assert len(self.events) == held
        # Nothing more is parsed while the store holds them.
        self.run_coro(asyncio.sleep(0.05))
        assert self._handlers.in_progress == held
        gate.open.set()
        self._wait_for_feedback(count)
        self._settle()
        assert not transport.paused
        assert not self._handlers.backlogged
        assert self._handlers.in_progress == 0
        assert [e.message_id for e in self.events] == [f"m-{n}" for n in range(count)]
        assert [f.message_id for f in gate.items] == [f"m-{n}" for n in range(count)]

    def test_a_new_stream_is_not_read_while_the_old_ones_feedback_is_recorded(self) -> None:
        gate = _Gate()
        self._handlers.subscribe(gate)
        self.xmpp.data_received(_receipts(2 * FEEDBACK_HIGH_WATER))
        self._settle()
        assert self._handlers.backlogged
        self.transport.paused = False
        self.xmpp.init_parser()  # a new stream, as after a reconnect
        assert self.transport.paused
        gate.open.set()
        self._wait_for_feedback(FEEDBACK_HIGH_WATER)
        self._settle()
        assert not self._handlers.backlogged
        assert not self.transport.paused

    @property
    def _handlers(self) -> FeedbackHandlers:
        assert isinstance(self.xmpp, GatewayComponent)
        return self.xmpp.feedback

    def _settle(self) -> None:
        """Run the loop until the feedback in progress stops changing."""
        before = -1
        while self._handlers.in_progress != before:
            before = self._handlers.in_progress
            self.run_coro(asyncio.sleep(0.02))

    def _wait_for_feedback(self, count: int, within: float = 3.0) -> None:
        deadline = time.monotonic() + within
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events"
            self.run_coro(asyncio.sleep(0.01))


class _Gate:
    """A feedback sink that records nothing until opened, as a store falling behind."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.items: list[Feedback] = []

    async def report(self, feedback: Feedback) -> None:
        await self.report_all((feedback,))

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        await self.open.wait()
        self.items.extend(feedbacks)


def _receipts(count: int) -> bytes:
    return "".join(
        f"<message type='chat' from='{USER}' to='bank@{DOMAIN}' id='r{n}'>"
        f"<received xmlns='urn:xmpp:receipts' id='m-{n}'/></message>"
        for n in range(count)
    ).encode()


class TestDeviceCommands(GatewayStanzaTest):
    def _publish(self, keyring: DeviceKeyring, sender: str = USER) -> dict[str, list[str]]:
        session = self.execute(PUBLISH, sender=sender)["command"]["sessionid"]
        reply = self.submit(
            PUBLISH, session, {"bundle": keyring.bundle().to_bytes().decode()}, sender=sender
        )
        return {**_notes(reply), **_values(reply), "command_status": [reply["command"]["status"]]}

    def test_publish_stores_the_senders_device(self) -> None:
        keyring = DeviceKeyring.generate("alice@cmaas.test", now_ms=_now(), one_time_prekeys=5)
        result = self._publish(keyring)
        assert result["command_status"] == ["completed"]
        assert result["prekeys_left"] == ["5"]
        assert result["device_id"] == [str(keyring.device_id)]
        stored = self.run_coro(self.keystore.devices.list("alice@cmaas.test"))
        assert [d.device_id for d in stored] == [keyring.device_id]

    def test_publish_for_another_jid_is_refused_and_stores_nothing(self) -> None:
        keyring = DeviceKeyring.generate("bob@cmaas.test", now_ms=_now())
        result = self._publish(keyring)
        assert result["command_status"] == ["executing"]
        assert any("not alice@cmaas.test" in note for note in result["error"])
        for owner in ("alice@cmaas.test", "bob@cmaas.test"):
            assert self.run_coro(self.keystore.devices.list(owner)) == []

    def test_foreign_domain_may_not_publish(self) -> None:
        reply = self.execute(PUBLISH, sender="mallory@elsewhere.test/x")
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "forbidden"

    def test_revoke_offers_only_own_active_devices(self) -> None:
        mine = DeviceKeyring.generate("alice@cmaas.test", now_ms=_now(), one_time_prekeys=1)
        theirs = DeviceKeyring.generate("bob@cmaas.test", now_ms=_now(), one_time_prekeys=1)
        self._publish(mine)
        self._publish(theirs, sender="bob@cmaas.test/pc")
        form = self.execute(REVOKE, sender=USER)
        options = form["command"].xml.findall(".//{jabber:x:data}option/{jabber:x:data}value")
        assert [o.text for o in options] == [str(mine.device_id)]
        # Naming someone else's device id in the submission changes nothing.
        session = form["command"]["sessionid"]
        reply = self.submit(REVOKE, session, {"device_id": str(theirs.device_id)}, sender=USER)
        assert reply["command"]["status"] == "executing"
        bob = self.run_coro(self.keystore.devices.list("bob@cmaas.test"))
        assert bob[0].revoked_at is None


def _now() -> int:
    return int(time.time() * 1000)


def _notes(reply: object) -> dict[str, list[str]]:
    from slixmpp import Iq

    assert isinstance(reply, Iq)
    notes: dict[str, list[str]] = {"error": [], "info": []}
    for kind, text in reply["command"]["notes"]:
        notes.setdefault(kind, []).append(text)
    return notes


def _values(reply: object) -> dict[str, list[str]]:
    from slixmpp import Iq

    assert isinstance(reply, Iq)
    if reply["command"].xml.find("{jabber:x:data}x") is None:
        return {}
    return form_values(reply)


# Legacy OMEMO: the stanzas written for it, and what people's clients send to app JIDs


def _parsed(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - our own output


def _children(message: ET.Element) -> list[str]:
    return [child.tag for child in message]


def test_an_envelope_only_message_names_cmaas_in_eme() -> None:
    message = _parsed(sealed_message_xml("bank@gw/cmaas", "a@x.test", "m-1", '{"v":1}', None))
    assert (message.get("type"), message.get("id"), message.get("to")) == (
        "chat",
        "m-1",
        "a@x.test",
    )
    assert _children(message) == [
        "body",
        "{urn:cmaas:envelope:1}envelope",
        "{urn:xmpp:receipts}request",
        "{urn:xmpp:chat-markers:0}markable",
        "{urn:xmpp:eme:0}encryption",
        "{urn:xmpp:hints}store",
    ]
    eme = message.find("{urn:xmpp:eme:0}encryption")
    assert eme is not None
    assert (eme.get("namespace"), eme.get("name")) == ("urn:cmaas:envelope:1", "CMaaS")


@pytest.mark.parametrize("with_envelope", [False, True])
def test_a_message_with_an_omemo_element_names_omemo_in_eme(with_envelope: bool) -> None:
    omemo = encrypted_xml(7, (9,))
    envelope = '{"a":"<&>"}' if with_envelope else None
    message = _parsed(sealed_message_xml("bank@gw/cmaas", "a@x.test", "m-1", envelope, omemo))
    assert _children(message) == [
        "body",
        *(["{urn:cmaas:envelope:1}envelope"] if with_envelope else []),
        f"{{{AXOLOTL}}}encrypted",
        "{urn:xmpp:receipts}request",
        "{urn:xmpp:chat-markers:0}markable",
        "{urn:xmpp:eme:0}encryption",
        "{urn:xmpp:hints}store",
    ]
    eme = message.find("{urn:xmpp:eme:0}encryption")
    assert eme is not None and (eme.get("namespace"), eme.get("name")) == (AXOLOTL, "OMEMO")
    written = message.find(f"{{{AXOLOTL}}}encrypted")
    assert written is not None and shape(written) == shape(omemo)
    if with_envelope:
        assert message.findtext("{urn:cmaas:envelope:1}envelope") == '{"a":"<&>"}'
    assert "CMaaS device" in (message.findtext("body") or "")


@pytest.mark.parametrize(
    "value",
    [
        "bank@gw/cmaas",
        "",
        "a'b",
        'a"b',
        "<&>",
        "&amp;",
        "line\nend\r\n",
        "tab\there",
        "\u00e9\u4e2d",
    ],
)
def test_an_attribute_reads_back_as_written(value: str) -> None:
    assert _parsed(f"<a v={xml_attribute(value)}/>").get("v") == value


def test_a_message_needs_something_sealed() -> None:
    with pytest.raises(ValueError, match="needs an envelope or an OMEMO element"):
        sealed_message_xml("bank@gw/cmaas", "a@x.test", "m-1", None, None)


def test_a_key_transport_is_the_element_and_a_store_hint() -> None:
    omemo = encrypted_xml(7, (9,), payload=False)
    message = _parsed(key_transport_xml("bank@gw/cmaas", "a@x.test", omemo))
    assert (message.get("type"), message.get("from"), message.get("to")) == (
        "chat",
        "bank@gw/cmaas",
        "a@x.test",
    )
    assert _children(message) == [f"{{{AXOLOTL}}}encrypted", "{urn:xmpp:hints}store"]


class TestOmemoInbound(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP")))
        self.omemo = AppOmemo(self.keystore, OmemoLimits(max_inbound=2))
        assert isinstance(self.xmpp, GatewayComponent)
        self.xmpp.omemo_inbound.subscribe(self.omemo.received)

    def deliver(
        self, xml: str, to: str = f"otp@{DOMAIN}", kind: str = "chat", sid: str = "x1"
    ) -> None:
        self.recv(f"<message type='{kind}' id='{sid}' from='{USER}' to='{to}'>{xml}</message>")

    def kept(self, count: int, within: float = 3.0) -> list[OmemoInbound]:
        deadline = time.monotonic() + within
        while True:
            items = self.run_coro(self.keystore.omemo.inbound_after("otp", 0, 10))
            if len(items) >= count:
                return items
            assert time.monotonic() < deadline, f"{len(items)} of {count} kept"
            self.run_coro(asyncio.sleep(0.01))

    def expect_bounce(self, sid: str, to: str, kind: str, condition: str) -> None:
        self.expect(f"""
          <message type='error' id='{sid}' from='{to}' to='{USER}'>
            <error type='{kind}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
          </message>""")

    def test_an_element_to_an_app_is_kept_with_the_senders_bare_jid(self) -> None:
        sent = encrypted_xml(7, (9,))
        self.deliver(sent)
        self.deliver(encrypted_xml(7, (9,), payload=False), to=f"otp@{DOMAIN}/cmaas", sid="x2")
        first, second = self.kept(2)
        assert (first.sender, second.sender) == ("alice@cmaas.test", "alice@cmaas.test")
        assert shape(first.xml) == shape(sent)
        assert parse_encrypted(second.xml).has_payload is False

    def test_an_unknown_or_suspended_app_is_service_unavailable(self) -> None:
        self.deliver(encrypted_xml(), to=f"nobody@{DOMAIN}")
        self.expect_bounce("x1", f"nobody@{DOMAIN}", "cancel", "service-unavailable")
        self.run_coro(self.service.update_app(UpdateAppRequest("otp", suspended=True)))
        self.deliver(encrypted_xml(), sid="x2")
        self.expect_bounce("x2", f"otp@{DOMAIN}", "cancel", "service-unavailable")
        assert self.run_coro(self.keystore.omemo.inbound_after("otp", 0, 10)) == []

    def test_past_the_apps_bound_it_is_resource_constraint(self) -> None:
        for sid in ("x1", "x2", "x3"):
            self.deliver(encrypted_xml(), sid=sid)
        self.expect_bounce("x3", f"otp@{DOMAIN}", "wait", "resource-constraint")
        assert len(self.kept(2)) == 2

    def test_a_malformed_element_is_not_acceptable(self) -> None:
        self.deliver(f"<encrypted xmlns='{AXOLOTL}'><payload>AAAA</payload></encrypted>")
        self.expect_bounce("x1", f"otp@{DOMAIN}", "modify", "not-acceptable")
        assert self.run_coro(self.keystore.omemo.inbound_after("otp", 0, 10)) == []

    def test_errors_are_neither_kept_nor_answered(self) -> None:
        self.deliver(encrypted_xml(), kind="error", sid="e1")
        self.deliver(encrypted_xml(), to=f"nobody@{DOMAIN}", kind="error", sid="e2")
        # Handled in order: had either been taken, the probe's bounce would not come first.
        self.deliver(encrypted_xml(), to=f"nobody@{DOMAIN}", sid="probe")
        self.expect_bounce("probe", f"nobody@{DOMAIN}", "cancel", "service-unavailable")
        assert self.run_coro(self.keystore.omemo.inbound_after("otp", 0, 10)) == []
