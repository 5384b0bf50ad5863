"""The ad-hoc and stanza front doors, tried as an attacker would: foreign and look-alike
JIDs, sessions taken over, unlisted nodes, actions out of order, and per-sender state."""

from __future__ import annotations

import gc
import types

import pytest
from slixmpp import Iq

from cmaas.admin import RegisterAppRequest
from tests.unit.gateway_stanzas import ADMIN, DOMAIN, USER, GatewayStanzaTest

from .tally import CASES

NS = "http://jabber.org/protocol/commands"
REGISTER = "urn:cmaas:cmd:app-register"
PUBLISH = "urn:cmaas:cmd:device-publish"
APP_LIST = "urn:cmaas:cmd:app-list"

# Forms the server would stamp for the admin's own account (stringprep: case, width,
# characters mapped to nothing): the same account, so the same rights.
ADMIN_EQUIVALENTS = [
    "ADMIN@CMAAS.TEST/Gajim",
    "\uff21\uff24\uff2d\uff29\uff2e@cmaas.test/x",
    "admin\u200b@cmaas.test/x",
    "admin@\uff43\uff4d\uff41\uff41\uff53.test/x",
    "admin@cmaas.test",
    "admin@cmaas.test./x",  # a final dot is no part of the domain (RFC 7622)
]
NOT_ADMINS = [
    "admin@cmaas.test.evil/x",
    "admin@sub.cmaas.test/x",
    "admin@gateway.cmaas.test/x",
    "admin@evil.example/x",
    "adminx@cmaas.test/x",
    "xadmin@cmaas.test/x",
    "cmaas.test",
    "cmaas.test/admin",
    DOMAIN,
    USER,
]
NOT_USERS = [
    "alice@evil.example/x",
    "alice@sub.cmaas.test/x",
    "alice@cmaas.test.evil/x",
    "otp@gateway.cmaas.test/x",
    "cmaas.test",
    DOMAIN,
]


def condition(reply: Iq) -> str:
    assert reply["type"] == "error", reply
    return str(reply["error"]["condition"])


def has(reply: Iq, extension: str) -> bool:
    return reply.xml.find(f".//{{{NS}}}{extension}") is not None


class TestWhoMayRunWhat(GatewayStanzaTest):
    def test_admin_commands_follow_the_account_not_its_spelling(self) -> None:
        for n, sender in enumerate(ADMIN_EQUIVALENTS):
            reply = self.execute(REGISTER, sender=sender, iq_id=f"eq{n}")
            assert reply["command"]["status"] == "executing", sender
            self.cancel(REGISTER, reply, sender)
            CASES["xmpp front doors"] += 1
        for n, sender in enumerate(NOT_ADMINS):
            for node in (REGISTER, APP_LIST):
                reply = self.execute(node, sender=sender, iq_id=f"no{n}{node}")
                assert condition(reply) == "forbidden", (sender, node)
                CASES["xmpp front doors"] += 1

    def test_device_commands_only_for_the_served_domains(self) -> None:
        for n, sender in enumerate(NOT_USERS):
            reply = self.execute(PUBLISH, sender=sender, iq_id=f"u{n}")
            assert condition(reply) == "forbidden", sender
            CASES["xmpp front doors"] += 1
        reply = self.execute(PUBLISH, sender="ALICE@CMAAS.TEST/x", iq_id="ok")
        assert reply["command"]["status"] == "executing"

    def test_unlisted_nodes_and_addresses(self) -> None:
        for n, node in enumerate(
            ["", "urn:cmaas:cmd:", NS, f"{REGISTER} ", REGISTER.upper(), "urn:cmaas:cmd:../x"]
        ):
            assert condition(self.execute(node, iq_id=f"n{n}")) == "item-not-found", node
            CASES["xmpp front doors"] += 1
        for n, to in enumerate([f"otp@{DOMAIN}", f"{DOMAIN}/commands", f"admin@{DOMAIN}/x"]):
            reply = self.command_reply(
                f"<iq type='set' id='t{n}' from='{ADMIN}' to='{to}'>"
                f"<command xmlns='{NS}' node='{REGISTER}' action='execute'/></iq>"
            )
            assert condition(reply) == "item-not-found", to
            CASES["xmpp front doors"] += 1

    def cancel(self, node: str, reply: Iq, sender: str) -> None:
        self.recv(
            f"<iq type='set' id='cx' from='{sender}' to='{DOMAIN}'><command xmlns='{NS}'"
            f" node='{node}' sessionid='{reply['command']['sessionid']}' action='cancel'/></iq>"
        )
        assert self.xmpp._build_stanza(self.next_stanza())["command"]["status"] == "canceled"


class TestSessionsAreTheirOwners(GatewayStanzaTest):
    def test_no_one_else_continues_a_session(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        intruders = [
            "admin@cmaas.test/other",  # another resource of the same account
            "admin@cmaas.test/GAJIM",  # resources are case-sensitive
            "admin@cmaas.test",  # the bare JID
            "ops@cmaas.test/gajim",  # another account with the same resource
            USER,
        ]
        for n, intruder in enumerate(intruders):
            for action in ("complete", "next", "cancel", "prev"):
                reply = self.submit(
                    REGISTER,
                    session,
                    {"app_id": "x", "display_name": "X"},
                    sender=intruder,
                    iq_id=f"i{n}{action}",
                    action=action,
                )
                assert condition(reply) == "forbidden", (intruder, action)
                CASES["xmpp front doors"] += 1
        # The same JID spelled otherwise is the owner; the session survived every try.
        reply = self.submit(
            REGISTER, session, {"app_id": "x", "display_name": "X"}, sender="ADMIN@cmaas.test/gajim"
        )
        assert reply["command"]["status"] == "completed"

    def test_actions_out_of_order(self) -> None:
        for n, action in enumerate(["complete", "next", "prev", "cancel", "EXECUTE", "x"]):
            reply = self.command_reply(
                f"<iq type='set' id='o{n}' from='{ADMIN}' to='{DOMAIN}'>"
                f"<command xmlns='{NS}' node='{REGISTER}' action='{action}'/></iq>"
            )
            assert has(reply, "bad-action"), action
            CASES["xmpp front doors"] += 1
        session = self.execute(REGISTER, iq_id="e2")["command"]["sessionid"]
        assert has(self.submit(REGISTER, session, {}, iq_id="p", action="prev"), "bad-action")
        other = self.submit(APP_LIST, session, {}, iq_id="w")
        assert has(other, "bad-sessionid")  # another node's session id
        done = self.submit(REGISTER, session, {"app_id": "x", "display_name": "X"}, iq_id="d")
        assert done["command"]["status"] == "completed"
        for n, action in enumerate(["execute", "next", "prev", "complete", "cancel"]):
            reply = self.submit(REGISTER, session, {}, iq_id=f"f{n}", action=action)
            assert has(reply, "bad-sessionid"), action  # finished is finished
            CASES["xmpp front doors"] += 1
        assert has(self.submit(REGISTER, "made-up", {}, iq_id="m"), "bad-sessionid")

    def test_a_step_runs_once_when_sent_twice_at_once(self) -> None:
        session = self.execute(REGISTER)["command"]["sessionid"]
        for iq_id in ("d1", "d2"):
            self.recv(
                f"<iq type='set' id='{iq_id}' from='{ADMIN}' to='{DOMAIN}'><command xmlns='{NS}'"
                f" node='{REGISTER}' sessionid='{session}' action='complete'>"
                "<x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE'><value>urn:cmaas:cmd:1</value></field>"
                "<field var='app_id'><value>twice</value></field>"
                "<field var='display_name'><value>T</value></field></x></command></iq>"
            )
        answers: dict[str, Iq] = {}
        for _ in range(2):
            reply = self.xmpp._build_stanza(self.next_stanza())
            assert isinstance(reply, Iq)
            answers[reply["id"]] = reply
        assert answers["d1"]["command"]["status"] == "completed"
        assert has(answers["d2"], "bad-sessionid")
        assert [app.app_id for app in self.run_coro(self.keystore.list_apps())] == ["twice"]


# Code and modules are shared by everything; the walk looks at objects' state only.
_NOT_STATE = (
    type,
    str,
    bytes,
    int,
    float,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
)


def _large_containers(root: object, at_least: int, skip: set[int]) -> list[str]:
    """Every dict, list or set reachable from ``root`` holding ``at_least`` items."""
    found: list[str] = []
    pending, seen = [root], set(skip)
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, _NOT_STATE):
            continue
        seen.add(id(item))
        if isinstance(item, dict | list | set) and len(item) >= at_least:
            found.append(f"{type(item).__name__} of {len(item)}: {list(item)[:3]!r}")
        pending.extend(gc.get_referents(item))
    return found


class TestNoStatePerSender(GatewayStanzaTest):
    @pytest.mark.filterwarnings("ignore::ResourceWarning")
    def test_a_crowd_of_senders_leaves_nothing_behind(self) -> None:
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))
        crowd = 300
        for n in range(crowd):
            user, app = f"u{n}@cmaas.test/r{n}", f"otp@{DOMAIN}"
            for stanza in (
                f"<presence from='{user}' to='{app}'/>",
                f"<presence type='unavailable' from='{user}' to='{DOMAIN}'/>",
                f"<presence type='probe' from='{user}' to='x{n}@{DOMAIN}'/>",
                f"<presence type='subscribe' from='{user}' to='{app}'/>",
                f"<iq type='get' id='a{n}' from='{user}' to='{DOMAIN}'>"
                f"<query xmlns='http://jabber.org/protocol/disco#info' node='n{n}'/></iq>",
                f"<iq type='get' id='b{n}' from='{user}' to='x{n}@{DOMAIN}'>"
                f"<query xmlns='http://jabber.org/protocol/disco#items' node='n{n}'/></iq>",
                f"<iq type='get' id='c{n}' from='{user}' to='{DOMAIN}'>"
                f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/></iq>",
                f"<iq type='set' id='d{n}' from='{user}' to='{DOMAIN}'><command xmlns='{NS}'"
                " node='urn:cmaas:cmd:device-list' action='execute'/></iq>",
                f"<iq type='result' id='e{n}' from='{user}' to='{DOMAIN}'/>",
                f"<message id='f{n}' from='{user}' to='{app}'><body>hi</body></message>",
            ):
                self.recv(stanza)
                CASES["xmpp front doors"] += 1
        self.recv(
            f"<iq type='get' id='alive' from='{USER}' to='{DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        while self.next_stanza(timeout=10).get("id") != "alive":
            pass
        grown = _large_containers(self.xmpp, crowd, {id(self.feedback.items)})
        assert grown == []
