"""Hostile inbound stanzas, from users and from the server: every iq gets exactly one
answer from the address it was sent to, nothing crashes, and the gateway stays alive."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slixmpp import JID
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream import ET

from cmaas.admin import RegisterAppRequest
from tests.unit.gateway_stanzas import DOMAIN, GatewayStanzaTest

from .hostile import jids, targets, text
from .tally import CASES

COMMANDS = "http://jabber.org/protocol/commands"


def _attr(value: str) -> str:
    return quoteattr(value)


payloads = st.one_of(
    st.just(""),
    st.just("<ping xmlns='urn:xmpp:ping'/>"),
    text.map(lambda n: f"<query xmlns='http://jabber.org/protocol/disco#info' node={_attr(n)}/>"),
    text.map(lambda n: f"<query xmlns='http://jabber.org/protocol/disco#items' node={_attr(n)}/>"),
    st.builds(
        lambda node, action, sid: (
            f"<command xmlns='{COMMANDS}' node={_attr(node)} action={_attr(action)}"
            f" sessionid={_attr(sid)}/>"
        ),
        st.one_of(st.sampled_from(["urn:cmaas:cmd:app-list", "urn:cmaas:cmd:app-register"]), text),
        st.sampled_from(["execute", "next", "complete", "prev", "cancel", "", "EXECUTE", "x"]),
        st.one_of(st.just(""), text),
    ),
    st.just(f"<command xmlns='{COMMANDS}' node='urn:cmaas:cmd:app-list'><x/><y/></command>"),
    st.just("<query xmlns='jabber:iq:version'/>"),
    st.just("<vCard xmlns='vcard-temp'/>"),
    st.just("<unknown xmlns='urn:example:nope'><deep>" * 40 + "</deep></unknown>" * 40),
    text.map(lambda t: f"<body>{escape(t)}</body>"),
    st.just("<received xmlns='urn:xmpp:receipts' id='m1'/>"),
    st.just("<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>"),
    st.just(
        "<error type='cancel'><service-unavailable"
        " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
    ),
)

stanzas = st.builds(
    lambda kind, stype, sender, to, payload: (kind, stype, sender, to, payload),
    st.sampled_from(["iq", "message", "presence"]),
    st.sampled_from(
        [
            "get",
            "set",
            "result",
            "error",
            "chat",
            "normal",
            "headline",
            "probe",
            "subscribe",
            "unsubscribe",
            "subscribed",
            "unavailable",
            "",
            "bogus",
        ]
    ),
    jids,
    targets,
    payloads,
)


class TestHostileStanzas(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))
        self.counter = 0

    def written_until(self, marker: str) -> list[ET.Element]:
        """Everything written up to the answer to ``marker``."""
        sent: list[ET.Element] = []
        while not any(o.get("id") == marker for o in sent):
            sent.append(self.next_stanza(timeout=3))
        return sent

    @settings(max_examples=450, deadline=None, suppress_health_check=list(HealthCheck))
    @given(stanzas)
    def test_inbound_stanza(self, stanza: tuple[str, str, str, str, str]) -> None:
        kind, stype, sender, to, payload = stanza
        self.counter += 1
        stanza_id = f"z{self.counter}"
        type_attr = f" type={_attr(stype)}" if stype else ""
        self.recv(
            f"<{kind} id='{stanza_id}'{type_attr} from={_attr(sender)} to={_attr(to)}>"
            f"{payload}</{kind}>"
        )
        # A request is answered exactly once, unless slixmpp cannot parse its addresses
        # (the library drops it; a server never forwards such a stanza), or it carries an
        # <error/> child, which slixmpp reads as an error response (type='error').
        is_request = kind == "iq" and stype in ("get", "set") and "<error" not in payload
        expected = 1 if is_request and _parsable(sender) and _parsable(to) else 0
        written = [self.next_stanza(timeout=3) for _ in range(expected)]
        # A ping behind it proves the gateway is still alive and answering.
        marker = f"alive{self.counter}"
        self.recv(
            f"<iq type='get' id='{marker}' from='alice@cmaas.test/p' to='{DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        written += self.written_until(marker)
        assert [o.get("type") for o in written if o.get("id") == marker] == ["result"]
        for out in written:
            assert out.get("from"), ET.tostring(out)
            assert out.get("from", "").split("@")[-1].split("/")[0] == DOMAIN, ET.tostring(out)
        answers = [o for o in written if o.tag.endswith("iq") and o.get("id") == stanza_id]
        assert len(answers) == expected, (sender, to, payload[:200], written)
        for answer in answers:
            assert answer.get("type") in ("result", "error")
            error = answer.find("{jabber:component:accept}error")
            if error is not None:
                conditions = [c.tag for c in error]
                assert not any("internal-server-error" in c for c in conditions), conditions
        CASES["inbound stanzas"] += 1


def _parsable(jid: str) -> bool:
    try:
        JID(jid)
    except InvalidJID:
        return False
    return True
