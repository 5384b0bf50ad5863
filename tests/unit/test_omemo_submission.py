"""Admitting messages that carry a legacy-OMEMO element, on a real SQLite keystore: the
element must be a message sealed by one of the app's published OMEMO devices; without
an envelope its expiry comes from ``expires_at``; with one, a recipient with no CMaaS
device is no failure; what is sealed goes when the message finishes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cmaas.delivery.errors import InvalidRequest, MessageIdConflict, UnknownOmemoDevice
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.submission import SubmissionService
from cmaas.envelope import fingerprint, generate_private_key, point_bytes, seal
from cmaas.keystore import (
    App,
    MessageRecord,
    OutboxEntry,
    SealedPayload,
    SqliteKeystore,
)
from cmaas.lifecycle import MessageStatus, Priority, StatusChange
from tests.omemo_elements import encrypted_xml

from .conftest import OMEMO_APP_DEVICE, FakeClock
from .envelope_fixtures import TEXT, make_keyring, sender_bundle

DOMAIN = "gateway.cmaas.test"
BOB = "bob@cmaas.test"
DAY_S = 86_400


class Queued:
    """What the service hands to the dispatcher, and in how many calls."""

    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []
        self.calls = 0

    def __call__(self, entries: Sequence[OutboxEntry]) -> None:
        self.calls += 1
        self.entries.extend(entries)


@pytest.fixture
def app(omemo_app: App) -> App:
    return omemo_app


@pytest.fixture
def queued() -> Queued:
    return Queued()


@pytest.fixture
def service(keystore: SqliteKeystore, clock: FakeClock, queued: Queued) -> SubmissionService:
    return SubmissionService(
        keystore,
        RecipientResolver(keystore, frozenset({"cmaas.test"})),
        queued,
        lambda: dict.fromkeys(Priority, 0),
        component_domain=DOMAIN,
        clock=clock,
    )


def omemo_only(clock: FakeClock, message_id: str = "m1", **fields: object) -> dict[str, object]:
    return {
        "message_id": message_id,
        "to": BOB,
        "priority": "high",
        "expires_at": int(clock.now) + 600,
        "omemo": encrypted_xml(OMEMO_APP_DEVICE, (11,)),
        **fields,
    }


async def submit_one(service: SubmissionService, app: App, item: object) -> object:
    (outcome,) = await service.submit(app, [item])
    return outcome


async def test_an_omemo_only_message_is_stored_with_its_expiry_and_queued(
    service: SubmissionService,
    app: App,
    keystore: SqliteKeystore,
    clock: FakeClock,
    queued: Queued,
) -> None:
    item = omemo_only(clock)
    record = await submit_one(service, app, item)
    assert isinstance(record, MessageRecord), record
    assert (record.status, record.recipient_jid) == (MessageStatus.ACCEPTED, BOB)
    assert record.expires_ms == (int(clock.now) + 600) * 1000
    assert [e.seq for e in queued.entries] == [record.seq]
    assert await keystore.messages.sealed([record.seq]) == {
        record.seq: SealedPayload(queued.entries[0], None, str(item["omemo"]).encode())
    }
    # A retry with the same element is the same message; another element is a conflict.
    again = await submit_one(service, app, item)
    assert isinstance(again, MessageRecord) and again.duplicate and again.seq == record.seq
    other = await submit_one(
        service, app, {**item, "omemo": encrypted_xml(OMEMO_APP_DEVICE, (11,))}
    )
    assert isinstance(other, MessageIdConflict), other


async def test_finishing_the_message_drops_what_is_sealed(
    service: SubmissionService, app: App, keystore: SqliteKeystore, clock: FakeClock
) -> None:
    record = await submit_one(service, app, omemo_only(clock))
    assert isinstance(record, MessageRecord)
    await keystore.messages.mark_dispatched([record.seq], int(clock.now * 1000))
    await keystore.messages.record(
        [StatusChange("otp", "m1", MessageStatus.DELIVERED, 1, "gajim.x1", reporter=BOB)]
    )
    stored, _ = await keystore.messages.get("otp", "m1")
    assert stored.status is MessageStatus.DELIVERED
    assert await keystore.messages.sealed([record.seq]) == {}


async def test_an_element_sealed_by_an_unpublished_device_is_refused(
    service: SubmissionService, app: App, clock: FakeClock
) -> None:
    refused = await submit_one(service, app, omemo_only(clock, omemo=encrypted_xml(8, (11,))))
    assert isinstance(refused, UnknownOmemoDevice), refused
    assert refused.code == "unknown_omemo_device" and "device 8" in refused.detail


async def test_a_key_transport_is_not_a_message(
    service: SubmissionService, app: App, clock: FakeClock
) -> None:
    transport = encrypted_xml(OMEMO_APP_DEVICE, (11,), payload=False)
    refused = await submit_one(service, app, omemo_only(clock, omemo=transport))
    assert isinstance(refused, InvalidRequest) and "needs a <payload/>" in refused.detail


async def test_a_malformed_element_is_refused_under_its_field(
    service: SubmissionService, app: App, clock: FakeClock
) -> None:
    refused = await submit_one(service, app, omemo_only(clock, omemo="<encrypted/>"))
    assert isinstance(refused, InvalidRequest) and refused.detail.startswith("omemo: ")


@pytest.mark.parametrize(
    ("offset_s", "why"),
    [(0, "has passed"), (-60, "has passed"), (30 * DAY_S + 3600, "more than 30 days")],
)
async def test_expires_at_must_be_ahead_and_within_30_days(
    service: SubmissionService, app: App, clock: FakeClock, offset_s: int, why: str
) -> None:
    expires_at = int(clock.now) + offset_s
    refused = await submit_one(service, app, omemo_only(clock, expires_at=expires_at))
    assert isinstance(refused, InvalidRequest) and why in refused.detail, refused
    accepted = await submit_one(
        service, app, omemo_only(clock, "m-30d", expires_at=int(clock.now) + 30 * DAY_S)
    )
    assert isinstance(accepted, MessageRecord), accepted


async def test_with_omemo_a_recipient_without_cmaas_devices_is_no_failure(
    service: SubmissionService, app: App, keystore: SqliteKeystore, clock: FakeClock
) -> None:
    app_key = generate_private_key()
    public = app_key.public_key()
    await keystore.add_signing_key("otp", fingerprint(public), point_bytes(public))
    never_published = sender_bundle(make_keyring(BOB))

    def sealed_envelope(message_id: str) -> str:
        now_ms = int(clock.now * 1000)
        return (
            seal(
                TEXT,
                message_id=message_id,
                app_jid=f"otp@{DOMAIN}",
                recipient_jid=BOB,
                bundles=[never_published],
                app_key=app_key,
                created_ms=now_ms,
                expires_ms=now_ms + 3_600_000,
            )
            .to_bytes()
            .decode()
        )

    plain = {"message_id": "plain", "to": BOB, "envelope": sealed_envelope("plain")}
    failed = await submit_one(service, app, plain)
    assert isinstance(failed, MessageRecord) and failed.status is MessageStatus.FAILED
    assert failed.detail.startswith("no device")

    both = {
        "message_id": "both",
        "to": BOB,
        "envelope": sealed_envelope("both"),
        "omemo": encrypted_xml(OMEMO_APP_DEVICE, (11,)),
    }
    record = await submit_one(service, app, both)
    assert isinstance(record, MessageRecord), record
    assert (record.status, record.detail) == (MessageStatus.ACCEPTED, "")
    # The envelope's expiry rules; expires_at was not needed.
    assert record.expires_ms == int(clock.now * 1000) + 3_600_000
    sealed = (await keystore.messages.sealed([record.seq]))[record.seq]
    assert sealed.envelope == str(both["envelope"]).encode()
    assert sealed.omemo == str(both["omemo"]).encode()
