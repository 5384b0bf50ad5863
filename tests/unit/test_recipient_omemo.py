"""Recipients' legacy OMEMO devices in the key lookup: the PEP queries the gateway sends
as an app's JID (golden stanzas), each kind of answer, the cache, the wire form, and the
lookup's answer when only one suite has devices."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from cmaas.admin import AdminService, RegisterAppRequest
from cmaas.component.gateway import GatewayComponent
from cmaas.component.pep import PepClient
from cmaas.delivery.errors import NotFound
from cmaas.delivery.events import EventHub
from cmaas.delivery.recipient_omemo import (
    OmemoLookupLimits,
    PepUnreadable,
    RecipientOmemoLookup,
)
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import SubmissionService
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import SqliteKeystore
from cmaas.wire import KeyLookup, RecipientOmemo, UnreadableReason, WireError

from .conftest import FakeClock
from .gateway_stanzas import DOMAIN, GatewayStanzaTest

T = TypeVar("T")
PUBSUB = "http://jabber.org/protocol/pubsub"
AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = f"{AXOLOTL}.devicelist"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BOB = "bob@cmaas.test"
APP_JID = f"otp@{DOMAIN}/cmaas"
LIST_XML = f'<list xmlns="{AXOLOTL}"><device id="7" /><device id="9" /></list>'


# Golden stanzas: the queries and each kind of answer


class TestPepQueries(GatewayStanzaTest):
    @property
    def pep(self) -> PepClient:
        assert isinstance(self.xmpp, GatewayComponent)
        return self.xmpp.pep

    def start(self, node: str, payload: str) -> asyncio.Task[str | None]:
        return self.loop.create_task(self.pep.pep_item("otp", BOB, node, payload))

    def finish(self, task: asyncio.Task[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(task, 5))

    def expect_query(self, node: str) -> str:
        sent = self.expect(f"""
          <iq type='get' id='1' from='{APP_JID}' to='{BOB}'>
            <pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>
          </iq>""")
        return sent.get("id", "")

    def exchange(self, node: str, payload: str, answer: str) -> asyncio.Task[str | None]:
        """Start a query for ``node``, check the stanza sent, answer it with ``answer``
        (the reply's ``type`` and children, ``{node}`` replaced), and return the query."""
        task = self.start(node, payload)
        iq_id = self.expect_query(node)
        kind, children = answer.split(":", 1)
        self.recv(
            f"<iq type='{kind}' id='{iq_id}' from='{BOB}' to='{APP_JID}'>"
            f"{children.replace('{node}', node)}</iq>"
        )
        return task

    def items(self, node: str, payload: str, items: str) -> str | None:
        return self.finish(
            self.exchange(
                node,
                payload,
                f"result:<pubsub xmlns='{PUBSUB}'><items node='{{node}}'>{items}</items></pubsub>",
            )
        )

    def refused(self, answer: str) -> PepUnreadable:
        task = self.exchange(DEVICELIST, "list", answer)
        with pytest.raises(PepUnreadable) as refused:
            self.finish(task)
        return refused.value

    def refuse(self, condition: str, kind: str = "cancel") -> PepUnreadable:
        return self.refused(f"error:<error type='{kind}'><{condition} xmlns='{STANZAS}'/></error>")

    def test_the_device_list_query_and_a_list(self) -> None:
        found = self.items(DEVICELIST, "list", f"<item id='current'>{LIST_XML}</item>")
        assert found == LIST_XML

    def test_a_bundle_query_and_a_bundle(self) -> None:
        bundle = f'<bundle xmlns="{AXOLOTL}"><identityKey>BQ==</identityKey></bundle>'
        found = self.items(f"{AXOLOTL}.bundles:7", "bundle", f"<item id='5f2a'>{bundle}</item>")
        assert found == bundle

    def test_an_empty_node_is_no_item(self) -> None:
        assert self.items(DEVICELIST, "list", "") is None

    def test_forbidden(self) -> None:
        refused = self.refuse("forbidden", "auth")
        assert (refused.reason, refused.condition) == (UnreadableReason.FORBIDDEN, "forbidden")

    def test_not_authorized_is_a_refusal_too(self) -> None:
        assert self.refuse("not-authorized", "auth").reason is UnreadableReason.FORBIDDEN

    def test_item_not_found(self) -> None:
        assert self.refuse("item-not-found").reason is UnreadableReason.ITEM_NOT_FOUND

    def test_another_error_names_its_condition(self) -> None:
        refused = self.refuse("service-unavailable")
        assert (refused.reason, refused.condition) == (
            UnreadableReason.ERROR,
            "service-unavailable",
        )

    def test_timeout(self) -> None:
        self.pep.timeout_s = 0.05
        task = self.start(DEVICELIST, "list")
        self.expect_query(DEVICELIST)
        with pytest.raises(PepUnreadable) as refused:
            self.finish(task)
        assert refused.value.reason is UnreadableReason.TIMEOUT

    def test_an_item_of_something_else_is_malformed(self) -> None:
        refused = self.refused(
            f"result:<pubsub xmlns='{PUBSUB}'><items node='{{node}}'>"
            "<item id='current'><list xmlns='urn:example'/></item></items></pubsub>"
        )
        assert refused.reason is UnreadableReason.MALFORMED

    def test_an_answer_for_another_node_is_malformed(self) -> None:
        refused = self.refused(
            f"result:<pubsub xmlns='{PUBSUB}'><items node='urn:other'>"
            f"<item id='current'>{LIST_XML}</item></items></pubsub>"
        )
        assert refused.reason is UnreadableReason.MALFORMED


# The lookup's logic and cache, over a scripted PEP


class ScriptedPep:
    """Answers from ``items`` (node to XML text, None, or the error to raise); counts
    the queries."""

    def __init__(self, items: dict[str, str | PepUnreadable | None]) -> None:
        self.items = items
        self.asked: list[tuple[str, str, str]] = []

    async def pep_item(self, app_id: str, owner: str, node: str, payload: str) -> str | None:
        self.asked.append((app_id, owner, node))
        answer = self.items.get(node, PepUnreadable(UnreadableReason.ITEM_NOT_FOUND, "x"))
        if isinstance(answer, PepUnreadable):
            raise answer
        return answer


def bundle_xml(device_id: int) -> str:
    return f'<bundle xmlns="{AXOLOTL}"><identityKey>{device_id}</identityKey></bundle>'


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_the_list_and_the_readable_bundles_in_list_order() -> None:
    pep = ScriptedPep(
        {DEVICELIST: LIST_XML, f"{AXOLOTL}.bundles:9": bundle_xml(9)}  # 7 has no bundle
    )
    found = run(RecipientOmemoLookup(pep).lookup("otp", BOB))
    assert found.device_list == LIST_XML and found.unreadable is None
    assert [(b.device_id, b.xml) for b in found.bundles] == [(9, bundle_xml(9))]


def test_only_the_first_devices_up_to_the_bound_are_fetched() -> None:
    ids = "".join(f'<device id="{i}" />' for i in range(1, 6))
    pep = ScriptedPep(
        {
            DEVICELIST: f'<list xmlns="{AXOLOTL}">{ids}</list>',
            **{f"{AXOLOTL}.bundles:{i}": bundle_xml(i) for i in range(1, 6)},
        }
    )
    found = run(RecipientOmemoLookup(pep, OmemoLookupLimits(max_devices=3)).lookup("otp", BOB))
    assert [b.device_id for b in found.bundles] == [1, 2, 3]
    assert [node for _, _, node in pep.asked][1:] == [f"{AXOLOTL}.bundles:{i}" for i in (1, 2, 3)]


def test_an_unreadable_list_says_why_for_people() -> None:
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden")})
    found = run(RecipientOmemoLookup(pep).lookup("otp", BOB))
    assert found.unreadable is not None and found.bundles == ()
    assert found.unreadable.reason is UnreadableReason.FORBIDDEN
    assert "must accept the app as a contact first" in found.unreadable.detail


def test_a_list_that_is_not_one_is_malformed() -> None:
    pep = ScriptedPep({DEVICELIST: "<list xmlns='urn:other'/>"})
    found = run(RecipientOmemoLookup(pep).lookup("otp", BOB))
    assert found.unreadable is not None
    assert found.unreadable.reason is UnreadableReason.MALFORMED


def test_an_answer_is_reused_until_its_ttl_then_read_again() -> None:
    clock = FakeClock(100.0)
    pep = ScriptedPep({DEVICELIST: None})
    lookup = RecipientOmemoLookup(pep, OmemoLookupLimits(ttl_s=60), clock=clock)

    async def twice() -> None:
        assert await lookup.lookup("otp", BOB) == RecipientOmemo()
        clock.now += 59
        await lookup.lookup("otp", BOB)
        assert len(pep.asked) == 1
        # Another app's JID may be shown another answer: asked on its own.
        await lookup.lookup("bank", BOB)
        assert len(pep.asked) == 2
        clock.now += 2
        await lookup.lookup("otp", BOB)
        assert len(pep.asked) == 3

    run(twice())


def test_a_failure_is_kept_for_its_shorter_ttl() -> None:
    clock = FakeClock(100.0)
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.TIMEOUT, "10 s")})
    lookup = RecipientOmemoLookup(
        pep, OmemoLookupLimits(ttl_s=300, unreadable_ttl_s=30), clock=clock
    )

    async def retried() -> None:
        await lookup.lookup("otp", BOB)
        clock.now += 29
        await lookup.lookup("otp", BOB)
        assert len(pep.asked) == 1
        pep.items[DEVICELIST] = None
        clock.now += 2
        assert (await lookup.lookup("otp", BOB)).unreadable is None
        assert len(pep.asked) == 2

    run(retried())


def test_the_cache_drops_the_least_recently_used_past_its_bound() -> None:
    pep = ScriptedPep({DEVICELIST: None})
    lookup = RecipientOmemoLookup(pep, OmemoLookupLimits(max_entries=2))

    async def bounded() -> None:
        for jid in ("a@x.test", "b@x.test", "a@x.test", "c@x.test"):
            await lookup.lookup("otp", jid)
        assert len(lookup) == 2 and len(pep.asked) == 3
        await lookup.lookup("otp", "a@x.test")  # kept: used more recently than b
        assert len(pep.asked) == 3
        await lookup.lookup("otp", "b@x.test")  # dropped: asked again
        assert len(pep.asked) == 4

    run(bounded())


class Asker:
    """The component as the lookup sees it: records the contact requests it would send."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def ask_subscription(self, app_id: str, jid: str) -> None:
        self.asked.append((app_id, jid))


async def asked_lookup(lookup: RecipientOmemoLookup, app_id: str) -> RecipientOmemo:
    """A lookup for a recipient with no CMaaS device, as ``Messaging.lookup`` makes it."""
    return lookup.ask_if_refused(app_id, BOB, await lookup.lookup(app_id, BOB))


def test_a_refused_list_asks_the_person_once_a_day_per_app() -> None:
    clock = FakeClock(100.0)
    asker = Asker()
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden")})
    limits = OmemoLookupLimits(unreadable_ttl_s=30, ask_again_s=3600)
    lookup = RecipientOmemoLookup(pep, limits, asker=asker, clock=clock)

    async def asked() -> None:
        found = await asked_lookup(lookup, "otp")
        assert asker.asked == [("otp", BOB)]
        assert found.unreadable is not None
        assert "the app has asked them to, as a contact request" in found.unreadable.detail
        clock.now += 31  # the failure is read again, but the person is not asked again
        again = await asked_lookup(lookup, "otp")
        assert len(pep.asked) == 2 and asker.asked == [("otp", BOB)]
        assert again.unreadable is not None and "has asked them" in again.unreadable.detail
        await asked_lookup(lookup, "bank")  # another app asks for itself
        assert asker.asked == [("otp", BOB), ("bank", BOB)]
        clock.now += 3600
        await asked_lookup(lookup, "otp")
        assert asker.asked == [("otp", BOB), ("bank", BOB), ("otp", BOB)]

    run(asked())


def test_other_failures_ask_nobody() -> None:
    asker = Asker()
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.TIMEOUT, "10 s")})
    found = run(asked_lookup(RecipientOmemoLookup(pep, asker=asker), "otp"))
    assert found.unreadable is not None and "asked" not in found.unreadable.detail
    assert asker.asked == []


def test_forget_reads_the_person_again_at_once() -> None:
    clock = FakeClock(100.0)
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden")})
    lookup = RecipientOmemoLookup(pep, asker=Asker(), clock=clock)

    async def accepted() -> None:
        assert (await lookup.lookup("otp", BOB)).unreadable is not None
        # They accepted the app as a contact: the list and device 9's bundle show.
        pep.items[DEVICELIST] = LIST_XML
        pep.items[f"{AXOLOTL}.bundles:9"] = bundle_xml(9)
        assert (await lookup.lookup("otp", BOB)).unreadable is not None  # still cached
        lookup.forget("otp", BOB)
        found = await lookup.lookup("otp", BOB)
        assert found.unreadable is None and found.device_list == LIST_XML
        assert len(pep.asked) == 2 + 2  # the list twice, then bundles 7 and 9

    run(accepted())


# The wire form


def test_an_answer_without_omemo_still_reads() -> None:
    assert KeyLookup.from_json({"jid": BOB, "devices": []}) == KeyLookup(BOB, ())
    assert "omemo" not in KeyLookup(BOB, ()).to_json()


def test_an_unknown_reason_or_a_device_twice_is_refused() -> None:
    with pytest.raises(WireError, match="reason"):
        RecipientOmemo.from_json({"bundles": [], "unreadable": {"reason": "nope", "detail": ""}})
    twice = [{"device_id": 3, "xml": "<bundle/>"}, {"device_id": 3, "xml": "<bundle/>"}]
    with pytest.raises(WireError, match="twice"):
        RecipientOmemo.from_json({"device_list": None, "bundles": twice})
    with pytest.raises(WireError, match="device_id"):
        RecipientOmemo.from_json({"bundles": [{"device_id": 0, "xml": "<bundle/>"}]})


# Messaging.lookup with both suites


@pytest.fixture
async def messaging_parts(
    keystore: SqliteKeystore, service: AdminService
) -> tuple[SqliteKeystore, KeyDirectory, RecipientResolver, SubmissionService, EventHub]:
    await service.register_app(RegisterAppRequest("otp", "OTP"))
    directory = KeyDirectory(keystore)
    resolver = RecipientResolver(keystore, frozenset({"cmaas.test"}))
    submissions = SubmissionService(
        keystore, resolver, lambda entries: None, dict, component_domain=DOMAIN
    )
    return keystore, directory, resolver, submissions, EventHub(keystore)


def messaging(parts: tuple[Any, ...], pep: ScriptedPep) -> Messaging:
    return Messaging(*parts, component_domain=DOMAIN, recipient_omemo=RecipientOmemoLookup(pep))


async def test_omemo_devices_alone_are_a_recipient(messaging_parts: tuple[Any, ...]) -> None:
    pep = ScriptedPep({DEVICELIST: LIST_XML, f"{AXOLOTL}.bundles:7": bundle_xml(7)})
    app = await messaging_parts[0].get_app("otp")
    found = await messaging(messaging_parts, pep).lookup(app, BOB)
    assert found.devices == () and found.omemo is not None
    assert [b.device_id for b in found.omemo.bundles] == [7]


async def test_no_device_in_either_suite_is_not_found_with_the_reason(
    messaging_parts: tuple[Any, ...],
) -> None:
    pep = ScriptedPep({DEVICELIST: PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden")})
    app = await messaging_parts[0].get_app("otp")
    with pytest.raises(NotFound) as missing:
        await messaging(messaging_parts, pep).lookup(app, BOB)
    assert "no device" in missing.value.detail
    assert "forbidden" in missing.value.detail and "contact first" in missing.value.detail


def test_a_list_whose_bundles_are_all_refused_is_unreadable_and_asks() -> None:
    asker = Asker()
    pep = ScriptedPep(
        {
            DEVICELIST: LIST_XML,
            f"{AXOLOTL}.bundles:7": PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden"),
            f"{AXOLOTL}.bundles:9": PepUnreadable(UnreadableReason.FORBIDDEN, "forbidden"),
        }
    )
    found = run(asked_lookup(RecipientOmemoLookup(pep, asker=asker), "otp"))
    assert found.device_list == LIST_XML and found.bundles == ()
    assert found.unreadable is not None
    assert found.unreadable.reason is UnreadableReason.FORBIDDEN
    assert "OMEMO bundles" in found.unreadable.detail
    assert "has asked them" in found.unreadable.detail
    assert asker.asked == [("otp", BOB)]
