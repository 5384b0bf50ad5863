"""The lean path for receipts and markers: it hands on exactly what slixmpp's stanza
objects and handlers hand on, refuses what they refuse with the same outcome, and
leaves every other stanza to them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from slixmpp import Message
from slixmpp.test import mocksocket
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.component.feedback import LEAN_COMPANIONS
from cmaas.delivery.tracker import Feedback, FeedbackKind

from .gateway_stanzas import DOMAIN, USER, GatewayStanzaTest

APP = f"bank@{DOMAIN}"
RECEIPT = "<received xmlns='urn:xmpp:receipts' id='m-1'/>"
MARKER = "<displayed xmlns='urn:xmpp:chat-markers:0' id='m-1'/>"
DEVICE = "<device xmlns='urn:cmaas:device:1' id='123456'/>"
BARRIER_NS = "urn:cmaas:test:barrier"


def message(children: str, *, to: str = APP, sender: str = USER, extra: str = "") -> str:
    return f"<message type='chat' from='{sender}' to='{to}' id='r1'{extra}>{children}</message>"


# (name, stanza, whether the lean path takes it)
CASES: list[tuple[str, str, bool]] = [
    ("receipt with device", message(RECEIPT + DEVICE), True),
    ("marker with device", message(MARKER + DEVICE), True),
    ("receipt, device first", message(DEVICE + RECEIPT), True),
    ("receipt without device", message(RECEIPT), True),
    ("receipt, no type", message(RECEIPT + DEVICE).replace("type='chat' ", ""), True),
    ("receipt, type groupchat", message(RECEIPT + DEVICE).replace("'chat'", "'groupchat'"), True),
    (
        "receipt in jabber:client",
        message(RECEIPT + DEVICE).replace("<message ", "<message xmlns='jabber:client' "),
        True,
    ),
    (
        "receipt with hints, ids and delay",
        message(
            RECEIPT
            + DEVICE
            + "<store xmlns='urn:xmpp:hints'/><no-copy xmlns='urn:xmpp:hints'/>"
            + "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>"
            + f"<stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='{APP}'/>"
            + "<delay xmlns='urn:xmpp:delay' stamp='2026-12-06T00:00:00Z'/>"
        ),
        True,
    ),
    (
        "device id not a number",
        message(RECEIPT + "<device xmlns='urn:cmaas:device:1' id='x1'/>"),
        True,
    ),
    (
        "device id of 11 digits",
        message(RECEIPT + "<device xmlns='urn:cmaas:device:1' id='12345678901'/>"),
        True,
    ),
    (
        "device id of other digits",
        message(RECEIPT + "<device xmlns='urn:cmaas:device:1' id='١٢٣'/>"),
        True,
    ),
    ("device id empty", message(RECEIPT + "<device xmlns='urn:cmaas:device:1'/>"), True),
    (
        "two devices: the first counts",
        message(RECEIPT + DEVICE + "<device xmlns='urn:cmaas:device:1' id='7'/>"),
        True,
    ),
    ("sender's bare JID", message(RECEIPT + DEVICE, sender="alice@cmaas.test"), True),
    ("sender of another domain", message(RECEIPT, sender="mallory@evil.example/x"), True),
    ("sender's long resource", message(RECEIPT, sender="alice@cmaas.test/" + "r" * 900), True),
    ("to the domain", message(RECEIPT + DEVICE, to=DOMAIN), True),
    ("to an app JID's resource", message(RECEIPT + DEVICE, to=APP + "/cmaas"), True),
    ("id with spaces", message("<received xmlns='urn:xmpp:receipts' id='bad id'/>"), True),
    ("no id", message("<received xmlns='urn:xmpp:receipts'/>"), True),
    ("id too long", message(f"<received xmlns='urn:xmpp:receipts' id='{'m' * 5000}'/>"), True),
    ("marker without id", message("<displayed xmlns='urn:xmpp:chat-markers:0'/>"), True),
    ("invalid to, no id", message("<received xmlns='urn:xmpp:receipts'/>", to="a@@b"), False),
    ("invalid to", message(RECEIPT, to="bank@" + DOMAIN + "/" + "r" * 1100), False),
    ("invalid from", message(RECEIPT + DEVICE, sender="@cmaas.test"), False),
    ("invalid from, ignored anyway", message(RECEIPT, to=DOMAIN, sender="@cmaas.test"), True),
    ("type error", message(RECEIPT + DEVICE).replace("'chat'", "'error'"), False),
    (
        "bounce of a receipt",
        message(
            RECEIPT + "<error type='cancel'><service-unavailable"
            " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        ).replace("'chat'", "'error'"),
        False,
    ),
    ("receipt with a body", message("<body>hi</body>" + RECEIPT + DEVICE), False),
    ("receipt and marker", message(RECEIPT + MARKER + DEVICE), False),
    (
        "two receipts",
        message(RECEIPT + "<received xmlns='urn:xmpp:receipts' id='m-2'/>" + DEVICE),
        False,
    ),
    ("receipt with a request", message(RECEIPT + "<request xmlns='urn:xmpp:receipts'/>"), False),
    (
        "receipt with a child",
        message("<received xmlns='urn:xmpp:receipts' id='m-1'><x/></received>" + DEVICE),
        False,
    ),
    (
        "device with a child",
        message(RECEIPT + "<device xmlns='urn:cmaas:device:1' id='1'><x/></device>"),
        False,
    ),
    ("receipt with a form", message(RECEIPT + "<x xmlns='jabber:x:data' type='form'/>"), False),
    (
        "receipt with an OMEMO element",
        message(RECEIPT + "<encrypted xmlns='eu.siacs.conversations.axolotl'/>"),
        False,
    ),
    (
        "receipt with prekeys-low",
        message(RECEIPT + "<prekeys-low xmlns='urn:cmaas:device:1'/>"),
        False,
    ),
    (
        "deeper than the limit",
        message(RECEIPT + "<x xmlns='urn:other'>" + "<y>" * 40 + "</y>" * 40 + "</x>"),
        False,
    ),
    (
        "receipt in the wrong namespace",
        message("<received xmlns='urn:xmpp:receipt' id='m-1'/>"),
        False,
    ),
]


class FailingSink:
    """A sink whose store is down."""

    async def report(self, feedback: Feedback) -> None:
        raise RuntimeError("the store is down")

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        raise RuntimeError("the store is down")


class BatchSink:
    """A sink that keeps each call's feedback apart."""

    def __init__(self) -> None:
        self.batches: list[list[Feedback]] = []

    async def report(self, feedback: Feedback) -> None:
        pass  # the usual path's, one at a time: not what this sink looks at

    async def report_all(self, feedbacks: Sequence[Feedback]) -> None:
        self.batches.append(list(feedbacks))


class TestLeanFeedback(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.taken: list[bool] = []
        self.lean = True
        take = self.gateway.feedback.take

        def observed_take(xml: ET.Element) -> bool:
            took = take(xml) if self.lean else False
            if xml.find(f"{{{BARRIER_NS}}}barrier") is None:
                self.taken.append(took)
            return took

        self.gateway.feedback.take = observed_take  # type: ignore[method-assign]
        self.barriers = 0

        async def barrier(_message: Message) -> None:
            self.barriers += 1

        self.xmpp.register_handler(
            CoroutineCallback(
                "test barrier",
                MatchXPath(f"{{{self.xmpp.default_ns}}}message/{{{BARRIER_NS}}}barrier"),
                barrier,  # type: ignore[arg-type]
            )
        )

    def outcome(self, stanza: str, *, lean: bool) -> tuple[list[Feedback], list[str]]:
        """What the gateway hands on and writes for ``stanza``, on the lean path if it
        takes it (``lean``) or always on the usual one."""
        self.lean = lean
        self.feedback.items.clear()
        self.recv(stanza)
        # Handled after every task the stanza started: both paths hand on in a task
        # of their own, and the sinks here never wait.
        expected = self.barriers + 1
        self.recv(f"<message from='{USER}' to='{APP}'><barrier xmlns='{BARRIER_NS}'/></message>")
        while self.barriers < expected:
            self.run_coro(asyncio.sleep(0))
        self.run_coro(asyncio.sleep(0))
        self.wait_for_send_queue()
        assert isinstance(self.xmpp.socket, mocksocket.TestSocket)
        written = []
        while (sent := self.xmpp.socket.next_sent()) is not None:
            written.append(str(sent))
        return list(self.feedback.items), written

    def test_the_lean_path_hands_on_and_refuses_exactly_as_the_handlers_do(self) -> None:
        for name, stanza, lean in CASES:
            with self.subTest(name):
                self.taken.clear()
                expected = self.outcome(stanza, lean=False)
                assert self.taken[0] is False
                self.taken.clear()
                assert self.outcome(stanza, lean=True) == expected
                assert self.taken[0] is lean

    def test_the_lean_path_hands_on_what_it_reads(self) -> None:
        feedback, written = self.outcome(message(RECEIPT + DEVICE), lean=True)
        assert feedback == [Feedback(FeedbackKind.DELIVERED, APP, USER, "m-1", "", "123456")]
        assert written == []
        feedback, _ = self.outcome(message(MARKER), lean=True)
        assert feedback == [Feedback(FeedbackKind.DISPLAYED, APP, USER, "m-1", "", "phone")]
        assert self.taken == [True, True]

    def test_a_failing_sink_is_answered_alike_on_both_paths(self) -> None:
        self.gateway.feedback.subscribe(FailingSink())
        stanza = message(RECEIPT + DEVICE)
        usual = self.outcome(stanza, lean=False)
        assert len(usual[0]) == 1
        assert len(usual[1]) == 1 and "undefined-condition" in usual[1][0]
        assert self.outcome(stanza, lean=True) == usual
        assert self.taken == [False, True]

    def test_one_read_is_handed_on_at_once_in_the_streams_order(self) -> None:
        batches = BatchSink()
        self.gateway.feedback.subscribe(batches)
        bounce = (
            f"<message type='error' from='alice@cmaas.test' to='{APP}' id='m-2'>"
            "<error type='cancel'><service-unavailable"
            " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )
        read = "".join(
            (
                message(RECEIPT + DEVICE),
                message(MARKER + DEVICE),
                bounce,  # the usual way, between them
                message("<received xmlns='urn:xmpp:receipts' id='m-3'/>"),
                message("<body>x</body>" + MARKER.replace("m-1", "m-4")),
                message(MARKER.replace("m-1", "m-5")),
            )
        )
        feedback, written = self.outcome(read, lean=True)
        assert written == []
        assert self.taken == [True, True, False, True, False, True]
        assert [(f.kind, f.message_id) for f in feedback] == [
            (FeedbackKind.DELIVERED, "m-1"),
            (FeedbackKind.DISPLAYED, "m-1"),
            (FeedbackKind.BOUNCED, "m-2"),
            (FeedbackKind.DELIVERED, "m-3"),
            (FeedbackKind.DISPLAYED, "m-4"),
            (FeedbackKind.DISPLAYED, "m-5"),
        ]
        # What the lean path took before each stanza that went the usual way: one call.
        assert [[f.message_id for f in batch] for batch in batches.batches] == [
            ["m-1", "m-1"],
            ["m-3"],
            ["m-5"],
        ]

    def test_other_stanzas_take_the_usual_way(self) -> None:
        for stanza in (
            f"<iq type='get' id='p1' from='{USER}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>",
            f"<presence from='{USER}' to='{APP}'/>",
            message("<body>hello</body>"),
            message("<encrypted xmlns='eu.siacs.conversations.axolotl'/>"),
            message(""),
        ):
            self.recv(stanza)
        assert self.taken == [False] * 5
        self.expect(f"<iq type='result' id='p1' from='{DOMAIN}' to='{USER}'/>")

    def test_what_the_lean_path_takes_no_other_handler_would_match(self) -> None:
        """Every element a lean receipt or marker may carry, against every handler and
        filter the gateway has: were a handler added that matches one, this fails."""
        # slixmpp keeps them in name-mangled attributes of XMLStream.
        stream: Any = self.gateway
        handlers: list[Any] = stream._XMLStream__handlers
        filters: dict[str, list[Callable[..., object]]] = stream._XMLStream__filters
        assert filters["in"] == [self.gateway._refuse_deep]
        companions = "".join(
            f"<{tag.split('}')[1]} xmlns='{tag[1:].split('}')[0]}'/>" for tag in LEAN_COMPANIONS
        )
        for report, handler in ((RECEIPT, "cmaas receipt"), (MARKER, "cmaas marker")):
            xml = ET.fromstring(
                message(report + companions).replace(
                    "<message ", f"<message xmlns='{self.xmpp.default_ns}' "
                )
            )
            assert self.gateway.feedback.take(xml)
            stanza = self.xmpp._build_stanza(xml)
            matched = [h.name for h in handlers if h.match(stanza)]
            assert matched == [handler]
