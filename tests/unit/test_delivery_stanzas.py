"""Golden stanzas for sealed messages and device commands; feedback becomes events."""

from __future__ import annotations

import asyncio
import time

from slixmpp import JID

from cmaas.component.gateway import GatewayComponent
from cmaas.delivery.tracker import FeedbackKind
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

from .gateway_stanzas import DOMAIN, USER, GatewayStanzaTest, form_values

PUBLISH = "urn:cmaas:cmd:device-publish"
REVOKE = "urn:cmaas:cmd:device-revoke"


class TestOutbound(GatewayStanzaTest):
    @property
    def gateway(self) -> GatewayComponent:
        assert isinstance(self.xmpp, GatewayComponent)
        return self.xmpp

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
        event = StatusEvent(7, "bank", "m-1", MessageStatus.DELIVERED, 1_800_000_000_000, "42", "")
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

    def _wait_for_feedback(self, count: int, within: float = 3.0) -> None:
        deadline = time.monotonic() + within
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events"
            self.run_coro(asyncio.sleep(0.01))


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
