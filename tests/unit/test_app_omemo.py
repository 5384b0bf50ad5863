"""An app's legacy-OMEMO relay on a real SQLite keystore: what people's clients send to
the app's JID (kept, bounded, read with a long poll) and the key transports the app's
client service sends."""

from __future__ import annotations

import asyncio
import time

import pytest

from cmaas.delivery.errors import InvalidRequest, Unavailable, UnknownOmemoDevice
from cmaas.delivery.omemo import AppOmemo, OmemoLimits
from cmaas.keystore import App, SqliteKeystore
from cmaas.wire import WireError
from tests.omemo_elements import encrypted_xml

from .conftest import OMEMO_APP_DEVICE, FakeClock

BOB = "bob@example.org"


class ComponentLink:
    """The component as key transports see it: writes them while ``up``."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.sent: list[tuple[str, str, str]] = []

    def send_key_transport(self, app_id: str, recipient: str, omemo_xml: str) -> bool:
        if self.up:
            self.sent.append((app_id, recipient, omemo_xml))
        return self.up


@pytest.fixture
def app(omemo_app: App) -> App:
    return omemo_app


async def test_a_malformed_element_is_refused_and_not_kept(
    keystore: SqliteKeystore, app: App
) -> None:
    omemo = AppOmemo(keystore, OmemoLimits())
    for malformed in ("<encrypted/>", "not xml", encrypted_xml(sid=0)):
        with pytest.raises(WireError):
            await omemo.received("otp", BOB, malformed)
    assert (await omemo.inbound(app, 0, 0)).items == ()


async def test_elements_are_kept_up_to_the_bound_with_the_time_received(
    keystore: SqliteKeystore, app: App, clock: FakeClock
) -> None:
    omemo = AppOmemo(keystore, OmemoLimits(max_inbound=2), clock=clock)
    reply, transport = encrypted_xml(), encrypted_xml(payload=False)
    assert await omemo.received("otp", BOB, reply)
    assert await omemo.received("otp", BOB, transport)
    assert not await omemo.received("otp", BOB, encrypted_xml())
    page = await omemo.inbound(app, 0, 0)
    assert [(i.sender, i.xml, i.received_ms) for i in page.items] == [
        (BOB, reply, int(clock.now * 1000)),
        (BOB, transport, int(clock.now * 1000)),
    ]
    assert page.next_after == page.items[-1].seq
    later = await omemo.inbound(app, page.next_after, 0)
    assert (later.items, later.next_after) == ((), page.next_after)


async def test_the_retention_purges_old_elements(
    keystore: SqliteKeystore, app: App, clock: FakeClock
) -> None:
    omemo = AppOmemo(keystore, OmemoLimits(inbound_retention_s=60), clock=clock)
    await omemo.received("otp", BOB, encrypted_xml())
    clock.now += 30
    await omemo.received("otp", BOB, encrypted_xml())
    clock.now += 31
    assert await omemo.purge_inbound() == 1
    assert len((await omemo.inbound(app, 0, 0)).items) == 1


async def test_a_waiting_reader_wakes_on_an_arrival(keystore: SqliteKeystore, app: App) -> None:
    omemo = AppOmemo(keystore, OmemoLimits())
    started = time.monotonic()
    waiting = asyncio.create_task(omemo.inbound(app, 0, 30))
    await asyncio.sleep(0)  # let it take its event and queue its first read
    # Reads run in order on the keystore's reader: once this one is done, so is the
    # waiter's, and it found nothing.
    assert await keystore.omemo.inbound_after("otp", 0, 10) == []
    assert not waiting.done()
    sent = encrypted_xml()
    assert await omemo.received("otp", BOB, sent)
    page = await asyncio.wait_for(waiting, 5)
    assert [i.xml for i in page.items] == [sent]
    assert time.monotonic() - started < 5


async def test_a_wait_without_arrivals_ends_empty_at_its_timeout(
    keystore: SqliteKeystore, app: App
) -> None:
    omemo = AppOmemo(keystore, OmemoLimits())
    page = await asyncio.wait_for(omemo.inbound(app, 41, 0.05), 5)
    assert (page.items, page.next_after) == ((), 41)


async def test_a_key_transport_is_sent_from_the_apps_jid(
    keystore: SqliteKeystore, app: App
) -> None:
    link = ComponentLink()
    transport = encrypted_xml(OMEMO_APP_DEVICE, (11,), payload=False)
    await AppOmemo(keystore, OmemoLimits(), link).send_key_transport(
        app, {"to": BOB, "xml": transport}
    )
    assert link.sent == [("otp", BOB, transport)]


@pytest.mark.parametrize(
    ("xml", "refusal", "why"),
    [
        (encrypted_xml(OMEMO_APP_DEVICE, (11,)), InvalidRequest, "carries no <payload/>"),
        (encrypted_xml(8, (11,), payload=False), UnknownOmemoDevice, "device 8"),
        ("<encrypted", InvalidRequest, "not well-formed"),
    ],
)
async def test_a_key_transport_that_is_not_the_apps_is_refused(
    keystore: SqliteKeystore, app: App, xml: str, refusal: type[Exception], why: str
) -> None:
    link = ComponentLink()
    with pytest.raises(refusal, match=why):
        await AppOmemo(keystore, OmemoLimits(), link).send_key_transport(
            app, {"to": BOB, "xml": xml}
        )
    assert link.sent == []


@pytest.mark.parametrize("link", [None, ComponentLink(up=False)], ids=["no-sender", "link-down"])
async def test_a_key_transport_without_a_link_is_unavailable(
    keystore: SqliteKeystore, app: App, link: ComponentLink | None
) -> None:
    transport = encrypted_xml(OMEMO_APP_DEVICE, (11,), payload=False)
    with pytest.raises(Unavailable, match="not connected"):
        await AppOmemo(keystore, OmemoLimits(), link).send_key_transport(
            app, {"to": BOB, "xml": transport}
        )
