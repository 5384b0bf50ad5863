"""Hostile ad-hoc form submissions: each gets a clear answer, and nothing invalid is stored."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slixmpp import Iq

from cmaas.admin import RegisterAppRequest
from tests.unit.gateway_stanzas import ADMIN, DOMAIN, GatewayStanzaTest

from .hostile import form
from .invariants import check_database
from .tally import CASES

NS = "http://jabber.org/protocol/commands"
FIELDS = {
    "urn:cmaas:cmd:app-register": [
        "app_id",
        "display_name",
        "plan",
        "networks",
        "callback_url",
        "jids",
    ],
    "urn:cmaas:cmd:app-update": ["app_id"],
    "urn:cmaas:cmd:app-rotate": ["app_id", "grace_seconds"],
    "urn:cmaas:cmd:app-show": ["app_id"],
    "urn:cmaas:cmd:plan-set": [
        "name",
        "sustained_per_second",
        "burst",
        "daily_quota",
        "priorities",
    ],
    "urn:cmaas:cmd:directory-set": ["address", "jid"],
}
EDIT_FIELDS = ["display_name", "plan", "networks", "callback_url", "jids", "suspended"]
# A refusal must name its reason; a crash shows as internal-server-error, never allowed.
ALLOWED_ERRORS = {
    "bad-request",
    "not-allowed",
    "forbidden",
    "item-not-found",
    "resource-constraint",
}


def assert_answered(reply: Iq) -> None:
    if reply["type"] == "error":
        assert reply["error"]["condition"] in ALLOWED_ERRORS, reply
        return
    assert reply["type"] == "result", reply
    status = reply["command"]["status"]
    assert status in ("completed", "executing"), reply
    if status == "executing" and reply["command"]["notes"]:
        assert all(kind in ("error", "info") for kind, _text in reply["command"]["notes"])


class TestHostileForms(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))
        self.database = Path(self._tmp.name) / "db.sqlite3"
        self.counter = 0

    def next_id(self) -> str:
        self.counter += 1
        return f"h{self.counter}"

    @settings(max_examples=450, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(FIELDS)), st.data())
    def test_first_step(self, node: str, data: st.DataObject) -> None:
        values = data.draw(form(FIELDS[node]))
        session = self.execute(node, iq_id=self.next_id())["command"]["sessionid"]
        reply = self.submit(node, session, values, iq_id=self.next_id())
        assert_answered(reply)
        CASES["ad-hoc forms"] += 1
        self.cancel_if_open(node, session, reply)
        check_database(self.database)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(form(EDIT_FIELDS))
    def test_app_update_edit_step(self, values: dict[str, list[str]]) -> None:
        node = "urn:cmaas:cmd:app-update"
        session = self.execute(node, iq_id=self.next_id())["command"]["sessionid"]
        picked = self.submit(node, session, {"app_id": "otp"}, iq_id=self.next_id(), action="next")
        assert picked["command"]["status"] == "executing"
        reply = self.submit(node, session, values, iq_id=self.next_id())
        assert_answered(reply)
        CASES["ad-hoc forms"] += 1
        self.cancel_if_open(node, session, reply)
        check_database(self.database)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from(["cancel", "result", "form", "", "submit'/><x a='"]),
        st.sampled_from(["", "urn:cmaas:cmd:1", "urn:evil", "urn:cmaas:cmd:1 "]),
    )
    def test_malformed_data_forms(self, form_type: str, declared: str) -> None:
        node = "urn:cmaas:cmd:app-register"
        session = self.execute(node, iq_id=self.next_id())["command"]["sessionid"]
        self.recv(
            f"<iq type='set' id='{self.next_id()}' from='{ADMIN}' to='{DOMAIN}'>"
            f"<command xmlns='{NS}' node='{node}' sessionid='{session}' action='complete'>"
            f"<x xmlns='jabber:x:data' type={quoteattr(form_type)}>"
            f"<field var='FORM_TYPE'><value>{declared}</value></field>"
            "<field var='app_id'><value>z</value><value>z2</value></field>"
            "<field var='display_name'><value>Z</value></field></x></command></iq>"
        )
        reply = self.xmpp._build_stanza(self.next_stanza())
        assert isinstance(reply, Iq)
        assert_answered(reply)
        CASES["ad-hoc forms"] += 1
        self.cancel_if_open(node, session, reply)
        check_database(self.database)

    def cancel_if_open(self, node: str, session: str, reply: Iq) -> None:
        """Close what the example left open, so sessions never pile up across examples."""
        if reply["type"] == "result" and reply["command"]["status"] == "executing":
            self.recv(
                f"<iq type='set' id='{self.next_id()}' from='{ADMIN}' to='{DOMAIN}'>"
                f"<command xmlns='{NS}' node='{node}' sessionid='{session}' action='cancel'/>"
                "</iq>"
            )
            assert self.xmpp._build_stanza(self.next_stanza())["command"]["status"] == "canceled"
