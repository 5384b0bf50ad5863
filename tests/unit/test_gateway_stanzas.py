"""Golden stanzas: what the gateway component writes for disco, presence and ad-hoc commands."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3

from slixmpp import JID, Iq
from slixmpp.test import mocksocket
from slixmpp.xmlstream import ET

from cmaas.admin import RegisterAppRequest, UpdateAppRequest
from cmaas.admin.views import SHOWN_ONCE
from cmaas.component.adhoc.command import (
    Access,
    Command,
    CommandContext,
    Completed,
    FormStep,
    NextForm,
    Step,
)
from cmaas.component.adhoc.engine import MAX_SESSION_ID_LENGTH, SessionLimits
from cmaas.component.adhoc.forms import FieldSpec, FormSpec, Submission
from cmaas.component.gateway import GatewayComponent
from cmaas.envelope import DeviceKeyring, fingerprint

from .gateway_stanzas import ADMIN, DOMAIN, USER, GatewayStanzaTest, form_values

NS = "http://jabber.org/protocol/commands"
NO_APP = "No app is registered yet: run &apos;Register an app&apos; first."
REGISTER = "urn:cmaas:cmd:app-register"
ADMIN_NODES = [
    "urn:cmaas:cmd:app-register",
    "urn:cmaas:cmd:app-update",
    "urn:cmaas:cmd:app-rotate",
    "urn:cmaas:cmd:app-list",
    "urn:cmaas:cmd:app-show",
    "urn:cmaas:cmd:plan-set",
    "urn:cmaas:cmd:directory-set",
]
DEVICE_NODES = [
    "urn:cmaas:cmd:device-publish",
    "urn:cmaas:cmd:device-list",
    "urn:cmaas:cmd:device-revoke",
]


def register_form(refusal: str = "", app_id: str = "", name: str = "", net: str = "") -> str:
    """The golden app-register form, with the refusal and values of a form shown again."""

    def value(text: str) -> str:
        return f"<value>{text}</value>" if text else ""

    return f"""
      <x xmlns='jabber:x:data' type='form'>
        <title>Register an app</title>
        <instructions>{refusal}Create an app account. Its credentials are shown once, at the end.</instructions>
        <field var='FORM_TYPE' type='hidden'><value>urn:cmaas:cmd:1</value></field>
        <field var='app_id' type='text-single' label='App id'>
          <desc>Becomes the app's JID localpart: lowercase letters, digits, - _ .</desc>
          <required/>{value(app_id)}
        </field>
        <field var='display_name' type='text-single' label='Display name'>
          <desc>Shown to recipients next to every message</desc><required/>{value(name)}
        </field>
        <field var='plan' type='list-single' label='Rate plan'>
          <required/>
          <option label='default (10/s, burst 50)'><value>default</value></option>
          <value>default</value>
        </field>
        <field var='networks' type='text-multi' label='Allowed IP addresses or CIDRs'>
          <desc>One address or CIDR per value, IPv4 or IPv6. The HTTP API refuses other addresses; leave empty for an XMPP-only app.</desc>{value(net)}
        </field>
        <field var='callback_url' type='text-single' label='Callback URL'>
          <desc>https:// URL that receives signed status webhooks; may be empty</desc>
        </field>
        <field var='jids' type='jid-multi' label='Bound XMPP accounts'>
          <desc>Bare JIDs (bots) allowed to submit for this app over XMPP, one per value</desc>
        </field>
      </x>"""


class TestDisco(GatewayStanzaTest):
    def test_domain_info(self) -> None:
        self.recv(
            f"<iq type='get' id='d1' from='{USER}' to='{DOMAIN}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        self.expect(f"""
          <iq type='result' id='d1' from='{DOMAIN}' to='{USER}'>
            <query xmlns='http://jabber.org/protocol/disco#info'>
              <identity category='component' type='generic' name='CMaaS gateway'/>
              <feature var='http://jabber.org/protocol/disco#info'/>
              <feature var='http://jabber.org/protocol/disco#items'/>
              <feature var='http://jabber.org/protocol/commands'/>
              <feature var='urn:xmpp:ping'/>
              <feature var='jabber:x:data'/>
            </query>
          </iq>""")

    def test_admin_sees_every_admin_command(self) -> None:
        self.recv(
            f"<iq type='get' id='d2' from='{ADMIN}' to='{DOMAIN}'>"
            f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/></iq>"
        )
        xml = self.next_stanza()
        items = xml.findall(".//{http://jabber.org/protocol/disco#items}item")
        # Admins are users of a served domain too.
        assert [i.get("node") for i in items] == ADMIN_NODES + DEVICE_NODES
        assert all(i.get("jid") == DOMAIN and i.get("name") for i in items)

    def test_user_sees_only_device_commands(self) -> None:
        self.recv(
            f"<iq type='get' id='d3' from='{USER}' to='{DOMAIN}'>"
            f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/></iq>"
        )
        self.expect(f"""
          <iq type='result' id='d3' from='{DOMAIN}' to='{USER}'>
            <query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'>
              <item jid='{DOMAIN}' node='urn:cmaas:cmd:device-publish'
                    name="Publish this device's keys"/>
              <item jid='{DOMAIN}' node='urn:cmaas:cmd:device-list' name='List my devices'/>
              <item jid='{DOMAIN}' node='urn:cmaas:cmd:device-revoke'
                    name='Revoke one of my devices'/>
            </query>
          </iq>""")

    def test_foreign_domain_sees_no_command(self) -> None:
        self.recv(
            f"<iq type='get' id='d4' from='mallory@elsewhere.test/x' to='{DOMAIN}'>"
            f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/></iq>"
        )
        self.expect(f"""
          <iq type='result' id='d4' from='{DOMAIN}' to='mallory@elsewhere.test/x'>
            <query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>
          </iq>""")

    def test_app_jid_info_and_unknown_app(self) -> None:
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))
        self.recv(
            f"<iq type='get' id='d4' from='{USER}' to='otp@{DOMAIN}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        self.expect(f"""
          <iq type='result' id='d4' from='otp@{DOMAIN}' to='{USER}'>
            <query xmlns='http://jabber.org/protocol/disco#info'>
              <identity category='client' type='bot' name='OTP Service'/>
              <feature var='http://jabber.org/protocol/disco#info'/>
              <feature var='urn:xmpp:receipts'/>
              <feature var='urn:xmpp:chat-markers:0'/>
            </query>
          </iq>""")
        self.recv(
            f"<iq type='get' id='d5' from='{USER}' to='nope@{DOMAIN}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        xml = self.next_stanza()
        assert xml.get("type") == "error" and xml.get("from") == f"nope@{DOMAIN}"
        assert xml.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None

    def test_ping(self) -> None:
        self.recv(
            f"<iq type='get' id='p1' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        self.expect(f"<iq type='result' id='p1' from='{DOMAIN}' to='{USER}'/>")


class TestPresence(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))

    def test_probe_of_active_app(self) -> None:
        self.recv(f"<presence type='probe' from='alice@cmaas.test' to='otp@{DOMAIN}'/>")
        self.expect(f"<presence from='otp@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_probe_of_suspended_app(self) -> None:
        self.run_coro(self.service.update_app(UpdateAppRequest("otp", suspended=True)))
        self.recv(f"<presence type='probe' from='alice@cmaas.test' to='otp@{DOMAIN}'/>")
        self.expect(f"<presence type='unavailable' from='otp@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_probe_of_unknown_app(self) -> None:
        self.recv(f"<presence type='probe' from='alice@cmaas.test' to='nope@{DOMAIN}'/>")
        self.expect(f"<presence type='unsubscribed' from='nope@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_subscription_is_approved(self) -> None:
        self.recv(f"<presence type='subscribe' from='alice@cmaas.test' to='otp@{DOMAIN}'/>")
        self.expect(f"<presence type='subscribed' from='otp@{DOMAIN}' to='alice@cmaas.test'/>")
        self.expect(f"<presence from='otp@{DOMAIN}' to='alice@cmaas.test'/>")
        self.expect(f"<presence type='subscribe' from='otp@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_subscription_to_unknown_app_is_refused(self) -> None:
        self.recv(f"<presence type='subscribe' from='alice@cmaas.test' to='nope@{DOMAIN}'/>")
        self.expect(f"<presence type='unsubscribed' from='nope@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_unsubscribe(self) -> None:
        self.recv(f"<presence type='unsubscribe' from='alice@cmaas.test/x' to='otp@{DOMAIN}'/>")
        self.expect(f"<presence type='unsubscribed' from='otp@{DOMAIN}' to='alice@cmaas.test'/>")
        self.expect(f"<presence type='unsubscribe' from='otp@{DOMAIN}' to='alice@cmaas.test'/>")

    def test_ordinary_presence_gets_no_answer(self) -> None:
        self.recv(f"<presence from='alice@cmaas.test/x' to='otp@{DOMAIN}'/>")
        self.expect_only_the_answer(
            f"<presence type='probe' from='alice@cmaas.test' to='otp@{DOMAIN}'/>",
            f"<presence from='otp@{DOMAIN}' to='alice@cmaas.test'/>",
        )


class TestAppRegisterCommand(GatewayStanzaTest):
    def test_form_is_golden(self) -> None:
        reply = self.execute(REGISTER)
        session = reply["command"]["sessionid"]
        assert len(session) >= 24
        self.check(
            reply,
            f"""
          <iq type='result' id='e1' from='{DOMAIN}' to='{ADMIN}'>
            <command xmlns='{NS}' node='{REGISTER}' sessionid='{session}' status='executing'>
              <actions execute='complete'><complete/></actions>
              {register_form()}
            </command>
          </iq>""",
            method="exact",
            use_values=False,
        )

    def test_submit_registers_and_shows_credentials_once(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        reply = self.submit(
            REGISTER,
            session,
            {
                "app_id": "parichay-otp",
                "display_name": "Parichay",
                "plan": "default",
                "networks": ["203.0.113.0/24", "2001:db8::/32"],
                "jids": ["bot@cmaas.test"],
            },
        )
        assert reply["type"] == "result"
        assert reply["command"]["status"] == "completed"
        assert reply["command"]["notes"][0][0] == "info"
        assert "shown only this once" in reply["command"]["notes"][0][1]
        values = form_values(reply)
        app = self.run_coro(self.keystore.get_app("parichay-otp"))
        assert values["client_id"] == [app.client_id]
        assert values["app_jid"] == [f"parichay-otp@{DOMAIN}"]
        auth = self.run_coro(self.keystore.authenticate(app.client_id, values["client_secret"][0]))
        assert auth.app.app_id == "parichay-otp"
        assert [str(n) for n in app.networks] == ["2001:db8::/32", "203.0.113.0/24"]
        assert app.jids == ("bot@cmaas.test",)
        # The session is over: the same id cannot be replayed.
        again = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"}, iq_id="s2")
        assert again["type"] == "error"
        assert again["error"]["condition"] == "bad-request"
        assert again.xml.find(f".//{{{NS}}}bad-sessionid") is not None

    def test_bad_values_show_the_form_again_with_notes(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        reply = self.submit(
            REGISTER,
            session,
            {
                "app_id": "Bad Id",
                "display_name": "P",
                "networks": ["10.0.0.0/33"],
            },
        )
        assert reply["command"]["status"] == "executing"
        notes = dict((text.split(":")[0], kind) for kind, text in reply["command"]["notes"])
        assert notes == {"App id": "error", "Allowed IP addresses or CIDRs": "error"}
        assert form_values(reply)["app_id"] == ["Bad Id"]
        assert self.run_coro(self.keystore.list_apps()) == []
        # Corrected values complete the same session.
        fixed = self.submit(
            REGISTER,
            session,
            {"app_id": "good", "display_name": "P", "networks": ["10.0.0.0/8"]},
            iq_id="s2",
        )
        assert fixed["command"]["status"] == "completed"

    def test_refused_form_carries_the_refusal_and_keeps_the_values(self) -> None:
        # Clients that show no XEP-0050 note (Profanity) show the instructions; the
        # values typed come back as the fields' values, ready to correct.
        session = self.execute(REGISTER)["command"]["sessionid"]
        reply = self.submit(
            REGISTER, session, {"app_id": "good", "display_name": "P", "networks": ["10.0.0.0/33"]}
        )
        problem = (
            "Allowed IP addresses or CIDRs: '10.0.0.0/33' is not an IP address or CIDR block"
            " such as 203.0.113.0/24"
        )
        self.check(
            reply,
            f"""
          <iq type='result' id='s1' from='{DOMAIN}' to='{ADMIN}'>
            <command xmlns='{NS}' node='{REGISTER}' sessionid='{session}' status='executing'>
              <actions execute='complete'><complete/></actions>
              <note type='error'>{problem}</note>
              {register_form(f"Refused: {problem}&#10;", app_id="good", name="P", net="10.0.0.0/33")}
            </command>
          </iq>""",
            method="exact",
            use_values=False,
        )

    def test_credentials_follow_the_shown_once_warning_in_the_form(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        reply = self.submit(REGISTER, session, {"app_id": "otp", "display_name": "OTP"})
        form = reply["command"].xml.find("{jabber:x:data}x")
        assert form is not None
        fields = [
            (f.get("type"), f.get("var"), f.findtext("{jabber:x:data}value"))
            for f in form.findall("{jabber:x:data}field")
        ]
        assert fields[:3] == [
            ("hidden", "FORM_TYPE", "urn:cmaas:cmd:1"),
            ("fixed", None, SHOWN_ONCE),
            ("text-single", "client_id", self.run_coro(self.keystore.get_app("otp")).client_id),
        ]
        assert fields[3][1] == "client_secret"
        assert reply["command"]["notes"] == [("info", SHOWN_ONCE)]

    def test_app_commands_without_any_app_say_so_in_a_form(self) -> None:
        for index, node in enumerate(
            ["urn:cmaas:cmd:app-show", "urn:cmaas:cmd:app-update", "urn:cmaas:cmd:app-rotate"]
        ):
            reply = self.execute(node, iq_id=f"e{index}")
            name = next(c.name for c in self.engine.commands.values() if c.node == node)
            self.check(
                reply,
                f"""
              <iq type='result' id='e{index}' from='{DOMAIN}' to='{ADMIN}'>
                <command xmlns='{NS}' node='{node}' sessionid='{reply["command"]["sessionid"]}'
                         status='completed'>
                  <note type='info'>{NO_APP}</note>
                  <x xmlns='jabber:x:data' type='result'>
                    <title>{name}</title>
                    <field type='fixed'><value>{NO_APP}</value></field>
                  </x>
                </command>
              </iq>""",
                method="exact",
                use_values=False,
            )
        assert self.run_coro(self.engine.session_count()) == 0

    def test_oversize_field_is_refused_with_a_note(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        reply = self.submit(REGISTER, session, {"app_id": "a" * 5000, "display_name": "P"})
        assert reply["command"]["status"] == "executing"
        kind, text = reply["command"]["notes"][0]
        assert kind == "error" and "longer than 4096" in text
        assert self.run_coro(self.keystore.list_apps()) == []

    def test_non_admin_is_refused(self) -> None:
        for node in ADMIN_NODES:
            reply = self.execute(node, sender=USER)
            assert reply["type"] == "error", node
            assert reply["error"]["condition"] == "forbidden"
            assert reply["from"] == DOMAIN

    def test_session_cannot_be_continued_by_another_jid(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        for intruder in (USER, "admin@cmaas.test/other-device"):
            reply = self.submit(
                REGISTER, session, {"app_id": "x", "display_name": "X"}, sender=intruder
            )
            assert reply["type"] == "error"
            assert reply["error"]["condition"] == "forbidden"
        assert self.run_coro(self.keystore.list_apps()) == []
        # The owner can still finish it.
        reply = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"}, iq_id="s3")
        assert reply["command"]["status"] == "completed"

    def test_session_times_out(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        self.monotonic.now += 301
        reply = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"})
        assert reply["error"]["condition"] == "not-allowed"
        assert reply.xml.find(f".//{{{NS}}}session-expired") is not None
        assert self.run_coro(self.engine.session_count()) == 0

    def test_cancel(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        self.recv(
            f"<iq type='set' id='c1' from='{ADMIN}' to='{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{REGISTER}' sessionid='{session}'"
            " action='cancel'/></iq>"
        )
        self.expect(f"""
          <iq type='result' id='c1' from='{DOMAIN}' to='{ADMIN}'>
            <command xmlns='{NS}' node='{REGISTER}' sessionid='{session}' status='canceled'/>
          </iq>""")
        assert self.run_coro(self.engine.session_count()) == 0

    def test_unknown_node_and_prev(self) -> None:
        reply = self.execute("urn:cmaas:cmd:nope")
        assert reply["error"]["condition"] == "item-not-found"
        session = self.execute(REGISTER, iq_id="e2")["command"]["sessionid"]
        reply = self.submit(REGISTER, session, {}, action="prev")
        assert reply["error"]["condition"] == "bad-request"
        assert reply.xml.find(f".//{{{NS}}}bad-action") is not None

    def test_commands_are_served_on_the_domain_only(self) -> None:
        reply = self.command_reply(
            f"<iq type='set' id='a1' from='{ADMIN}' to='otp@{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{REGISTER}' action='execute'/></iq>"
        )
        assert reply["error"]["condition"] == "item-not-found"
        assert reply["from"] == f"otp@{DOMAIN}"

    def test_admin_of_another_component_is_not_an_admin(self) -> None:
        reply = self.execute(REGISTER, sender="cmaas.test")
        assert reply["error"]["condition"] == "forbidden"


PUBLISH = "urn:cmaas:cmd:device-publish"


class TestSessionExhaustion(GatewayStanzaTest):
    """The engine's default limits, against the attack that filled the session table."""

    def test_many_accounts_leave_room_for_admins_and_devices(self) -> None:
        # 125 accounts x 8 sessions filled the single 1,000-slot table.
        opened = 0
        for account in range(125):
            for attempt in range(8):
                reply = self.execute(
                    PUBLISH, sender=f"u{account}@cmaas.test/r", iq_id=f"f{account}-{attempt}"
                )
                if reply["type"] == "result":
                    opened += 1
                else:
                    assert reply["error"]["condition"] == "resource-constraint"
        assert opened == 125 * 4  # CMAAS_ADHOC_SESSIONS_PER_ACCOUNT
        assert self.execute(REGISTER, iq_id="admin")["command"]["status"] == "executing"
        fresh = self.execute(PUBLISH, sender="newcomer@cmaas.test/phone", iq_id="newcomer")
        assert fresh["command"]["status"] == "executing"


class TestSessionLimits(GatewayStanzaTest):
    session_limits = SessionLimits(
        per_account=2,
        per_class={Access.ADMIN: 1, Access.USER: 3, Access.APP: 1},
        lifetime_s=900,
    )

    def refused(self, reply: Iq) -> bool:
        return bool(
            reply["type"] == "error" and reply["error"]["condition"] == "resource-constraint"
        )

    def test_per_account_across_resources(self) -> None:
        for n in range(2):
            assert not self.refused(self.execute(PUBLISH, sender=USER, iq_id=f"a{n}"))
        assert self.refused(self.execute(PUBLISH, sender=USER, iq_id="a2"))
        assert self.refused(self.execute(PUBLISH, sender="alice@cmaas.test/laptop", iq_id="a3"))
        assert not self.refused(self.execute(PUBLISH, sender="bob@cmaas.test/x", iq_id="b"))

    def test_a_full_class_crowds_out_no_other(self) -> None:
        for n, sender in enumerate([USER, USER, "bob@cmaas.test/x"]):
            assert not self.refused(self.execute(PUBLISH, sender=sender, iq_id=f"u{n}"))
        carol = "carol@cmaas.test/x"
        assert self.refused(self.execute(PUBLISH, sender=carol, iq_id="c1"))
        # A one-step command needs no session, so a full table does not stop it.
        listed = self.execute("urn:cmaas:cmd:device-list", sender=carol, iq_id="c2")
        assert listed["command"]["status"] == "completed"
        session = self.execute(REGISTER, iq_id="adm1")["command"]["sessionid"]
        assert self.refused(self.execute(REGISTER, iq_id="adm2"))  # the admins' own cap
        self.recv(
            f"<iq type='set' id='adm3' from='{ADMIN}' to='{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{REGISTER}' sessionid='{session}' action='cancel'/></iq>"
        )
        assert self.xmpp._build_stanza(self.next_stanza())["command"]["status"] == "canceled"
        assert not self.refused(self.execute(REGISTER, iq_id="adm4"))

    def test_a_step_without_a_form_does_not_keep_a_session_alive(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        self.monotonic.now += 250
        shown = self.command_reply(
            f"<iq type='set' id='n1' from='{ADMIN}' to='{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{REGISTER}' sessionid='{session}'"
            " action='execute'/></iq>"
        )
        assert shown["command"]["status"] == "executing"
        self.monotonic.now += 60  # 310 s after the last submitted form
        reply = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"})
        assert reply.xml.find(f".//{{{NS}}}session-expired") is not None

    def test_a_session_ends_after_its_lifetime_however_busy(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        for n in range(4):
            self.monotonic.now += 200
            again = self.submit(REGISTER, session, {"app_id": "!!"}, iq_id=f"b{n}")
            assert again["command"]["status"] == "executing"  # a refused form, kept open
        self.monotonic.now += 101  # 901 s after it opened, 101 s after the last form
        reply = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"})
        assert reply.xml.find(f".//{{{NS}}}session-expired") is not None
        assert self.run_coro(self.engine.session_count()) == 0

    def test_an_offline_resource_loses_its_sessions(self) -> None:
        laptop = "alice@cmaas.test/laptop"
        on_phone = self.execute(PUBLISH, sender=USER, iq_id="p")["command"]["sessionid"]
        on_laptop = self.execute(PUBLISH, sender=laptop, iq_id="l")["command"]["sessionid"]
        self.recv(f"<presence type='unavailable' from='{USER}' to='{DOMAIN}'/>")
        gone = self.submit(PUBLISH, on_phone, {"bundle": "{}"}, sender=USER, iq_id="p2")
        assert gone.xml.find(f".//{{{NS}}}bad-sessionid") is not None
        kept = self.submit(
            PUBLISH, on_laptop, {"bundle": "{}"}, sender=laptop, iq_id="l2", action="next"
        )
        assert kept["command"]["status"] == "executing"  # the form again, with a note
        self.recv(f"<presence type='unavailable' from='alice@cmaas.test' to='otp@{DOMAIN}'/>")
        gone = self.submit(PUBLISH, on_laptop, {"bundle": "{}"}, sender=laptop, iq_id="l3")
        assert gone.xml.find(f".//{{{NS}}}bad-sessionid") is not None
        assert self.run_coro(self.engine.session_count()) == 0


class TestPresenceKeepsNoState(GatewayStanzaTest):
    def test_presence_senders_leave_no_roster_behind(self) -> None:
        before = len(list(self.xmpp.roster))
        for n in range(50):
            for kind in ("", " type='unavailable'", " type='subscribed'", " type='unsubscribed'"):
                self.recv(f"<presence{kind} from='u{n}@cmaas.test/r' to='otp@{DOMAIN}'/>")
        self.expect_only_the_answer(
            f"<iq type='get' id='ping' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>",
            f"<iq type='result' id='ping' from='{DOMAIN}' to='{USER}'/>",
        )
        assert len(list(self.xmpp.roster)) == before


def nested(depth: int) -> str:
    return "<x xmlns='urn:example:deep'>" * depth + "</x>" * depth


class TestDeepStanzas(GatewayStanzaTest):
    def test_a_deeply_nested_command_gets_a_clean_error(self) -> None:
        self.recv(
            f"<iq type='set' id='deep' from='{ADMIN}' to='{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{REGISTER}' action='execute'>{nested(30_000)}"
            "</command></iq>"
        )
        reply = self.xmpp._build_stanza(self.next_stanza())
        assert (reply["type"], reply["id"], reply["from"], reply["to"]) == (
            "error",
            "deep",
            DOMAIN,
            ADMIN,
        )
        assert reply["error"]["condition"] == "not-acceptable"
        assert self.run_coro(self.engine.session_count()) == 0

    def test_a_deep_message_is_dropped_and_the_gateway_answers_on(self) -> None:
        self.recv(f"<message from='{USER}' to='otp@{DOMAIN}'>{nested(30_000)}</message>")
        self.recv(
            f"<iq type='get' id='p1' from='{USER}' to='{DOMAIN}'>"
            f"<ping xmlns='urn:xmpp:ping'/>{nested(40)}</iq>"
        )
        self.expect(
            f"<iq type='error' id='p1' from='{DOMAIN}' to='{USER}'><error type='modify'>"
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>elements nested deeper than 32"
            "</text></error></iq>"
        )
        self.expect_only_the_answer(
            f"<iq type='get' id='p2' from='{USER}' to='{DOMAIN}'>"
            f"<ping xmlns='urn:xmpp:ping'/>{nested(30)}</iq>",
            f"<iq type='result' id='p2' from='{DOMAIN}' to='{USER}'/>",
        )


class TestBarrierPings(GatewayStanzaTest):
    """The dispatcher's barrier: a ping from the domain to the IM server, ended by the
    server's answer, read off the stream, and by nothing else."""

    SERVER = "cmaas.test"

    def start_barrier(self) -> tuple[asyncio.Task[None], ET.Element]:
        barrier = self.loop.create_task(self.gateway.barrier())
        ping = self.next_stanza()
        assert (ping.get("type"), ping.get("from"), ping.get("to")) == ("get", DOMAIN, self.SERVER)
        assert [child.tag for child in ping] == ["{urn:xmpp:ping}ping"]
        return barrier, ping

    def answered_after(self, barrier: asyncio.Task[None], stanzas: list[str]) -> bool:
        """Whether ``barrier`` was over once the gateway had handled ``stanzas`` (proved
        by its answer to a probe after them, not by waiting)."""
        for stanza in stanzas:
            self.recv(stanza)
        self.expect_only_the_answer(
            f"<iq type='get' id='probe' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>",
            f"<iq type='result' id='probe' from='{DOMAIN}' to='{USER}'/>",
        )
        return barrier.done()

    def test_the_server_s_result_ends_it(self) -> None:
        barrier, ping = self.start_barrier()
        result = f"<iq type='result' id='{ping.get('id')}' from='{self.SERVER}' to='{DOMAIN}'/>"
        assert self.answered_after(barrier, [result])
        self.run_coro(barrier)
        assert (self.gateway.pings_answered, self.gateway.pings_unanswered) == (1, 0)

    def test_each_ping_has_an_id_of_its_own(self) -> None:
        first, first_ping = self.start_barrier()
        second, second_ping = self.start_barrier()
        first_id, second_id = first_ping.get("id", ""), second_ping.get("id", "")
        assert first_id != second_id
        assert first_id.rsplit("-", 1)[0] == second_id.rsplit("-", 1)[0]
        results = [
            f"<iq type='result' id='{ping_id}' from='{self.SERVER}' to='{DOMAIN}'/>"
            for ping_id in (second_id, first_id)
        ]
        assert self.answered_after(first, results) and second.done()
        self.run_coro(asyncio.gather(first, second))
        assert self.gateway.pings_answered == 2

    def test_the_server_s_error_ends_it_too(self) -> None:
        barrier, ping = self.start_barrier()
        error = (
            f"<iq type='error' id='{ping.get('id')}' from='{self.SERVER}' to='{DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/><error type='cancel'>"
            "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
        assert self.answered_after(barrier, [error])
        self.run_coro(barrier)
        assert self.gateway.pings_answered == 1

    def test_nothing_else_ends_it(self) -> None:
        barrier, ping = self.start_barrier()
        ping_id = ping.get("id")
        # A request with the ping's id is a request: answered as one, ending nothing.
        self.recv(f"<iq type='set' id='{ping_id}' from='{self.SERVER}' to='{DOMAIN}'/>")
        refusal = self.next_stanza()
        assert (refusal.get("type"), refusal.get("id")) == ("error", ping_id)
        others = [
            f"<iq type='result' id='{ping_id}' from='{USER}' to='{DOMAIN}'/>",
            f"<iq type='result' id='{ping_id}' from='evil.example' to='{DOMAIN}'/>",
            f"<iq type='result' id='{ping_id}x' from='{self.SERVER}' to='{DOMAIN}'/>",
            f"<message type='chat' id='{ping_id}' from='{self.SERVER}' to='{DOMAIN}'/>",
        ]
        assert not self.answered_after(barrier, others)
        result = f"<iq type='result' id='{ping_id}' from='{self.SERVER}' to='{DOMAIN}'/>"
        assert self.answered_after(barrier, [result])
        self.run_coro(barrier)


class TestLinkXml(GatewayStanzaTest):
    """What the IM server's side of the component link may not send."""

    def written(self) -> bytes:
        self.wait_for_send_queue()
        assert isinstance(self.xmpp.socket, mocksocket.TestSocket)
        return self.xmpp.socket.next_sent() or b""

    def test_a_dtd_before_the_stream_is_refused(self) -> None:
        self.xmpp.init_parser()  # a new stream, as after a reconnect
        header = self.xmpp.stream_header
        self.xmpp.data_received("<?xml version='1.0'?><!DOCT")
        self.xmpp.data_received(f"YPE stream:stream [<!ENTITY a 'AAAA'>]>{header}")
        self.xmpp.data_received(
            f"<iq type='get' id='p&a;' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        sent = self.written()
        assert b"<restricted-xml" in sent, sent
        assert self.written() == b"</stream:stream>"
        assert self.written() == b""  # neither the handshake nor the ping's answer

    def test_a_dtd_inside_the_stream_is_refused(self) -> None:
        self.xmpp.data_received("<!DOCTYPE x [<!ENTITY a 'b'>]>")
        assert b"<restricted-xml" in self.written()

    def test_an_undeclared_entity_closes_the_stream(self) -> None:
        self.xmpp.data_received(
            f"<message from='{USER}' to='{DOMAIN}'><body>&xxe;</body></message>"
        )
        assert b"<not-well-formed" in self.written()


class TestAcknowledgements(GatewayStanzaTest):
    """Reads are acknowledged at once only while told: an IM server with Nagle's
    algorithm on then sends an OTP's receipt without waiting for a delayed ACK."""

    def setUp(self) -> None:
        super().setUp()
        listener = socket.create_server(("127.0.0.1", 0))
        self.link = socket.create_connection(listener.getsockname())
        self.far_end, _ = listener.accept()
        listener.close()
        # The kernel's delayed acknowledgements, as on a link carrying a drain.
        self.link.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        self.transport.extra["socket"] = self.link

    def tearDown(self) -> None:
        self.link.close()
        self.far_end.close()
        super().tearDown()

    def acknowledges_at_once(self) -> bool:
        return bool(self.link.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))

    def receipt(self) -> str:
        return f"<message from='{USER}' to='app@{DOMAIN}'><received xmlns='urn:xmpp:receipts' id='m1'/></message>"

    def test_reads_keep_the_kernels_timing_unless_told(self) -> None:
        self.xmpp.data_received(self.receipt())
        assert not self.acknowledges_at_once()

    def test_reads_are_acknowledged_at_once_while_urgent(self) -> None:
        urgent = [True]
        assert isinstance(self.xmpp, GatewayComponent)
        self.xmpp.acknowledge_at_once_while(lambda: urgent[0])
        self.xmpp.data_received(self.receipt())
        assert self.acknowledges_at_once()
        urgent[0] = False
        self.link.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        self.xmpp.data_received(self.receipt())
        assert not self.acknowledges_at_once()


class TestOtherAdminCommands(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))

    def two_steps(self, node: str, first: dict[str, object], second: dict[str, object]) -> Iq:
        reply = self.execute(node)
        session = reply["command"]["sessionid"]
        assert reply["command"]["actions"] == {"next"}
        picked = self.submit(node, session, first, action="next")
        assert picked["command"]["status"] == "executing"
        assert picked["command"]["actions"] == {"complete"}
        return self.submit(node, session, second, iq_id="s2")

    def test_app_update_prefills_and_saves(self) -> None:
        reply = self.execute("urn:cmaas:cmd:app-update")
        session = reply["command"]["sessionid"]
        picked = self.submit("urn:cmaas:cmd:app-update", session, {"app_id": "otp"}, action="next")
        current = form_values(picked)
        assert current["display_name"] == ["OTP Service"]
        assert current["suspended"] == ["0"]
        done = self.submit(
            "urn:cmaas:cmd:app-update",
            session,
            {
                "display_name": "OTP",
                "plan": "default",
                "networks": ["192.0.2.0/24"],
                "callback_url": "",
                "jids": [],
                "suspended": "1",
            },
            iq_id="s2",
        )
        assert done["command"]["status"] == "completed"
        app = self.run_coro(self.keystore.get_app("otp"))
        assert (app.display_name, [str(n) for n in app.networks], app.suspended) == (
            "OTP",
            ["192.0.2.0/24"],
            True,
        )

    def test_app_update_unknown_plan_changes_nothing(self) -> None:
        reply = self.two_steps(
            "urn:cmaas:cmd:app-update",
            {"app_id": "otp"},
            {"display_name": "OTP", "plan": "gold", "suspended": "0"},
        )
        assert reply["command"]["status"] == "executing"
        assert "no plan named 'gold'" in reply["command"]["notes"][0][1]
        assert self.run_coro(self.keystore.get_app("otp")).plan == "default"

    def test_app_show_and_list(self) -> None:
        session = self.execute("urn:cmaas:cmd:app-show")["command"]["sessionid"]
        shown = self.submit("urn:cmaas:cmd:app-show", session, {"app_id": "otp"})
        values = form_values(shown)
        assert values["display_name"] == ["OTP Service"]
        assert values["submitted_today"] == ["0"]
        listed = self.execute("urn:cmaas:cmd:app-list", iq_id="e2")
        assert listed["command"]["status"] == "completed"
        items = listed.xml.findall(".//{jabber:x:data}item")
        assert len(items) == 1

    def test_app_list_rows_are_fixed_fields_too(self) -> None:
        # A client that shows no reported table (Profanity) shows the fixed fields.
        self.run_coro(
            self.service.register_app(
                RegisterAppRequest("alerts", "Alerts", networks=["192.0.2.0/24"])
            )
        )
        reply = self.execute("urn:cmaas:cmd:app-list")
        session = reply["command"]["sessionid"]
        self.check(
            reply,
            f"""
          <iq type='result' id='e1' from='{DOMAIN}' to='{ADMIN}'>
            <command xmlns='{NS}' node='urn:cmaas:cmd:app-list' sessionid='{session}'
                     status='completed'>
              <note type='info'>2 app(s)</note>
              <x xmlns='jabber:x:data' type='result'>
                <title>Apps</title>
                <field type='fixed'><value>2 app(s)</value></field>
                <field type='fixed'><value>App id: alerts; Display name: Alerts; Plan: default; Status: active; Allowed networks: 192.0.2.0/24</value></field>
                <field type='fixed'><value>App id: otp; Display name: OTP Service; Plan: default; Status: active</value></field>
                <reported>
                  <field var='app_id' type='text-single' label='App id'/>
                  <field var='display_name' type='text-single' label='Display name'/>
                  <field var='plan' type='text-single' label='Plan'/>
                  <field var='status' type='text-single' label='Status'/>
                  <field var='networks' type='text-single' label='Allowed networks'/>
                  <field var='jids' type='text-single' label='Bound JIDs'/>
                </reported>
                <item>
                  <field var='app_id'><value>alerts</value></field>
                  <field var='display_name'><value>Alerts</value></field>
                  <field var='plan'><value>default</value></field>
                  <field var='status'><value>active</value></field>
                  <field var='networks'><value>192.0.2.0/24</value></field>
                  <field var='jids'><value></value></field>
                </item>
                <item>
                  <field var='app_id'><value>otp</value></field>
                  <field var='display_name'><value>OTP Service</value></field>
                  <field var='plan'><value>default</value></field>
                  <field var='status'><value>active</value></field>
                  <field var='networks'><value></value></field>
                  <field var='jids'><value></value></field>
                </item>
              </x>
            </command>
          </iq>""",
            method="exact",
            use_values=False,
        )

    def test_app_picker_labels_every_app_and_has_a_default(self) -> None:
        self.run_coro(self.service.register_app(RegisterAppRequest("alerts", "Alerts")))
        reply = self.execute("urn:cmaas:cmd:app-show")
        session = reply["command"]["sessionid"]
        self.check(
            reply,
            f"""
          <iq type='result' id='e1' from='{DOMAIN}' to='{ADMIN}'>
            <command xmlns='{NS}' node='urn:cmaas:cmd:app-show' sessionid='{session}'
                     status='executing'>
              <actions execute='complete'><complete/></actions>
              <x xmlns='jabber:x:data' type='form'>
                <title>Show an app</title>
                <instructions>Choose the app to show.</instructions>
                <field var='FORM_TYPE' type='hidden'><value>urn:cmaas:cmd:1</value></field>
                <field var='app_id' type='list-single' label='App'>
                  <required/>
                  <option label='Alerts (alerts)'><value>alerts</value></option>
                  <option label='OTP Service (otp)'><value>otp</value></option>
                  <value>alerts</value>
                </field>
              </x>
            </command>
          </iq>""",
            method="exact",
            use_values=False,
        )

    def test_app_rotate(self) -> None:
        old = self.run_coro(self.keystore.get_app("otp"))
        session = self.execute("urn:cmaas:cmd:app-rotate")["command"]["sessionid"]
        done = self.submit(
            "urn:cmaas:cmd:app-rotate", session, {"app_id": "otp", "grace_seconds": "0"}
        )
        secret = form_values(done)["client_secret"][0]
        auth = self.run_coro(self.keystore.authenticate(old.client_id, secret))
        assert auth.app.app_id == "otp"

    def test_plan_set_and_directory_set(self) -> None:
        session = self.execute("urn:cmaas:cmd:plan-set")["command"]["sessionid"]
        done = self.submit(
            "urn:cmaas:cmd:plan-set",
            session,
            {
                "name": "gold",
                "sustained_per_second": "20",
                "burst": "40",
                "daily_quota": "1000",
                "priorities": ["high", "normal"],
            },
        )
        assert done["command"]["status"] == "completed"
        assert self.run_coro(self.keystore.get_plan("gold")).daily_quota == 1000
        session = self.execute("urn:cmaas:cmd:directory-set", iq_id="e2")["command"]["sessionid"]
        bad = self.submit(
            "urn:cmaas:cmd:directory-set",
            session,
            {"address": "98765", "jid": "alice@cmaas.test"},
            iq_id="s2",
        )
        assert bad["command"]["status"] == "executing"
        good = self.submit(
            "urn:cmaas:cmd:directory-set",
            session,
            {"address": "+919876543210", "jid": "alice@cmaas.test"},
            iq_id="s3",
        )
        assert good["command"]["notes"] == [("info", "Bound.")]
        assert self.run_coro(self.keystore.resolve_address("+919876543210")) == "alice@cmaas.test"


UPDATE = "urn:cmaas:cmd:app-update"


class _WaywardCommand(Command):
    """Goes on to a form that no instance could show again: a closure's."""

    node = "urn:cmaas:test:wayward"
    name = "Wayward"
    access = Access.ADMIN
    form = FormSpec("Wayward", "Submit anything.", (FieldSpec("anything", "Anything"),))

    async def start(self, context: CommandContext) -> Step:
        return FormStep(self.form, self.submit, final=False)

    async def submit(self, context: CommandContext, form: Submission) -> NextForm:
        async def closure(context: CommandContext) -> Step:
            return Completed()

        return NextForm(closure)


class TestSessionsAcrossInstances(GatewayStanzaTest):
    """Each step may reach another gateway instance: nothing but the keystore carries a
    session from one step to the next."""

    def setUp(self) -> None:
        super().setUp()
        for app_id in ("otp", "shop"):
            self.run_coro(self.service.register_app(RegisterAppRequest(app_id, app_id.upper())))

    def test_app_update_with_every_step_on_another_instance(self) -> None:
        session = self.execute(UPDATE)["command"]["sessionid"]
        self.switch_instance()
        picked = self.submit(UPDATE, session, {"app_id": "shop"}, action="next")
        assert form_values(picked)["display_name"] == ["SHOP"]
        # All that carries the session to the next instance: its step and state.
        with contextlib.closing(sqlite3.connect(self.database_path)) as raw:
            stored = raw.execute("SELECT owner, node, step, state FROM adhoc_sessions").fetchall()
        assert stored == [(ADMIN, UPDATE, "editing", '{"app_id":"shop"}')]
        self.switch_instance()
        # A refusal shows the edit form again, its plans and the values submitted.
        refused = self.submit(UPDATE, session, {"display_name": "Shop", "plan": "gold"}, iq_id="s2")
        assert refused["command"]["status"] == "executing"
        assert "no plan named 'gold'" in refused["command"]["notes"][0][1]
        assert form_values(refused)["display_name"] == ["Shop"]
        plan = refused["command"]["form"].get_fields()["plan"]
        assert [option["value"] for option in plan["options"]] == ["default"]
        self.switch_instance()
        done = self.submit(UPDATE, session, {"display_name": "Shop", "plan": "default"}, iq_id="s3")
        assert done["command"]["status"] == "completed"
        assert self.run_coro(self.keystore.get_app("shop")).display_name == "Shop"
        assert self.run_coro(self.keystore.get_app("otp")).display_name == "OTP"
        assert self.run_coro(self.engine.session_count()) == 0

    def test_another_jid_is_refused_on_another_instance(self) -> None:
        session = self.execute(UPDATE)["command"]["sessionid"]
        self.switch_instance()
        for intruder in (USER, "admin@cmaas.test/other-device"):
            reply = self.submit(UPDATE, session, {"app_id": "otp"}, sender=intruder, action="next")
            assert reply["error"]["condition"] == "forbidden"
        picked = self.submit(UPDATE, session, {"app_id": "otp"}, iq_id="s2", action="next")
        assert form_values(picked)["display_name"] == ["OTP"]

    def test_an_unknown_app_is_refused_at_the_pick(self) -> None:
        session = self.execute(UPDATE)["command"]["sessionid"]
        again = self.submit(UPDATE, session, {"app_id": "nope"}, action="next")
        assert again["command"]["actions"] == {"next"}  # the pick again, not the edit form
        assert "no app named 'nope'" in again["command"]["notes"][0][1]

    def test_a_session_id_too_long_to_be_ours_is_unknown(self) -> None:
        too_long = "x" * (MAX_SESSION_ID_LENGTH + 1)
        reply = self.submit(UPDATE, too_long, {"app_id": "otp"}, action="next")
        assert reply.xml.find(f".//{{{NS}}}bad-sessionid") is not None

    def test_a_form_shown_by_a_closure_is_refused(self) -> None:
        self.switch_instance([_WaywardCommand()])
        session = self.execute(_WaywardCommand.node)["command"]["sessionid"]
        reply = self.submit(_WaywardCommand.node, session, {"anything": "x"}, action="next")
        assert reply["error"]["condition"] == "internal-server-error"
        assert self.run_coro(self.engine.session_count()) == 0


class TestOutgoingFrom(GatewayStanzaTest):
    def test_a_stanza_without_from_is_stamped(self) -> None:
        self.xmpp.send_message(mto=JID("alice@cmaas.test"), mbody="hi")
        xml = self.next_stanza()
        assert xml.get("from") == DOMAIN


class TestDeviceCommands(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        for label in ("phone", ""):
            ring = DeviceKeyring.generate("alice@cmaas.test", now_ms=1_700_000_000_000)
            bundle = ring.bundle().to_bytes().decode()
            self.run_coro(self.directory.publish("alice@cmaas.test", bundle, label))
        self.records = list(self.run_coro(self.directory.devices("alice@cmaas.test")))

    def test_revoke_offers_each_device_by_name_and_id_with_a_default(self) -> None:
        reply = self.execute("urn:cmaas:cmd:device-revoke", sender=USER)
        session = reply["command"]["sessionid"]
        options = "".join(
            f"<option label='{r.label or 'Unnamed device'} ({r.device_id}), key"
            f" {_key_start(r.identity_key)}'><value>{r.device_id}</value></option>"
            for r in self.records
        )
        self.check(
            reply,
            f"""
          <iq type='result' id='e1' from='{DOMAIN}' to='{USER}'>
            <command xmlns='{NS}' node='urn:cmaas:cmd:device-revoke' sessionid='{session}'
                     status='executing'>
              <actions execute='complete'><complete/></actions>
              <x xmlns='jabber:x:data' type='form'>
                <title>Revoke a device</title>
                <instructions>A revoked device gets no key for any new message. This cannot be undone; a device set up again gets a new id.</instructions>
                <field var='FORM_TYPE' type='hidden'><value>urn:cmaas:cmd:1</value></field>
                <field var='device_id' type='list-single' label='Device'>
                  <required/>{options}<value>{self.records[0].device_id}</value>
                </field>
              </x>
            </command>
          </iq>""",
            method="exact",
            use_values=False,
        )

    def test_revoke_refusal_is_in_the_instructions(self) -> None:
        session = self.execute("urn:cmaas:cmd:device-revoke", sender=USER)["command"]["sessionid"]
        reply = self.submit(
            "urn:cmaas:cmd:device-revoke", session, {"device_id": "12x"}, sender=USER
        )
        form = reply["command"].xml.find("{jabber:x:data}x")
        assert form is not None
        assert form.findtext("{jabber:x:data}instructions", "").startswith(
            "Refused: Device: choose a device from the list\nA revoked device"
        )
        target = self.records[1].device_id
        done = self.submit(
            "urn:cmaas:cmd:device-revoke",
            session,
            {"device_id": str(target)},
            sender=USER,
            iq_id="s2",
        )
        assert done["command"]["status"] == "completed"
        fixed = done["command"].xml.find("{jabber:x:data}x/{jabber:x:data}field[@type='fixed']")
        assert fixed is not None
        assert fixed.findtext("{jabber:x:data}value") == f"Device {target} revoked"

    def test_device_list_rows_are_fixed_fields_too(self) -> None:
        reply = self.execute("urn:cmaas:cmd:device-list", sender=USER)
        form = reply["command"].xml.find("{jabber:x:data}x")
        assert form is not None
        fixed = [
            f.findtext("{jabber:x:data}value")
            for f in form.findall("{jabber:x:data}field[@type='fixed']")
        ]
        assert fixed == ["2 active device(s)"] + [
            f"Device id: {r.device_id}; "
            + (f"Name: {r.label}; " if r.label else "")
            + f"Identity key fingerprint: {_fingerprint(r.identity_key)}; Signed prekey id:"
            f" {r.signed_prekey.key_id}; One-time prekeys in the pool: {r.prekeys_left};"
            " Status: active"
            for r in self.records
        ]
        assert len(form.findall("{jabber:x:data}item")) == 2


def _fingerprint(identity_key: bytes) -> str:
    digest = fingerprint(identity_key)
    return " ".join(digest[i : i + 8] for i in range(0, 64, 8))


def _key_start(identity_key: bytes) -> str:
    return _fingerprint(identity_key)[:17]
