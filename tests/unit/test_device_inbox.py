"""The device inbox: what each received message leads to, with envelopes sealed for real
and the key file, pins and seen messages in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cmaas.device.files import FileUnavailable
from cmaas.device.inbox import Accepted, Duplicate, FetchFile, Inbox, Outcome, Refused
from cmaas.device.keyfile import KeyFile
from cmaas.device.pins import PinStore
from cmaas.device.seen import SeenMessages
from cmaas.envelope import (
    AppKeyChanged,
    BadSignature,
    Content,
    DeviceKeyring,
    EnvelopeError,
    Expired,
    ForeignApp,
    MalformedEncoding,
    PrivateKey,
    TamperedHeader,
    TamperedPayload,
    UnknownKeyId,
    WrongDevice,
    WrongRecipient,
    fingerprint,
)

from .envelope_fixtures import (
    APP_JID,
    EXPIRES_MS,
    FILE,
    MESSAGE_ID,
    NOW_MS,
    OTHER_JID,
    TEXT,
    USER_JID,
    app_public,
    dump,
    flip_b64,
    make_keyring,
    other_key,
    resign,
    seal_to,
    sender_bundle,
    to_tree,
)

GATEWAY = "apps.cmaas.test"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "device"


@pytest.fixture
def inbox(state: Path) -> Inbox:
    return inbox_on(make_keyring(), state)


@pytest.fixture
def app_key() -> PrivateKey:
    return other_key()


def inbox_on(keyring: DeviceKeyring, state: Path, *, seen: str = "seen.json") -> Inbox:
    keyfile = KeyFile(state / "keyring.json")
    if not keyfile.exists():
        keyfile.create(keyring, None)
    return Inbox(
        keyring,
        pins=PinStore(state / "pins.json"),
        seen=SeenMessages(state / seen),
        gateway=GATEWAY,
        save_keyring=lambda: keyfile.save(keyring, None),
    )


def on_disk(state: Path) -> DeviceKeyring:
    return KeyFile(state / "keyring.json").load()


def sealed(
    inbox: Inbox,
    app_key: PrivateKey,
    content: Content = TEXT,
    *,
    message_id: str = MESSAGE_ID,
    app_jid: str = APP_JID,
    keyring: DeviceKeyring | None = None,
    auto_delete_s: int | None = None,
) -> str:
    """An envelope as the gateway delivers it, sealed to ``keyring`` (the inbox's own)."""
    to = inbox.keyring if keyring is None else keyring
    envelope = seal_to(
        [sender_bundle(to)],
        app_key,
        content,
        message_id=message_id,
        app_jid=app_jid,
        recipient_jid=to.jid,
        auto_delete_s=auto_delete_s,
    )
    return envelope.to_bytes().decode()


def receive(
    inbox: Inbox,
    envelope: str,
    *,
    sender: str = APP_JID,
    message_id: str = MESSAGE_ID,
    now_ms: int = NOW_MS,
) -> Outcome:
    return inbox.receive(envelope, sender=sender, message_id=message_id, now_ms=now_ms)


def accepted(outcome: Outcome) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def refused(outcome: Outcome, error: type[EnvelopeError]) -> Refused:
    assert isinstance(outcome, Refused), outcome
    assert type(outcome.refusal.error) is error, outcome.refusal.error
    return outcome


def first_opk(keyring: DeviceKeyring) -> int:
    return sender_bundle(keyring).one_time_prekeys[0].key_id


# --- accepted ------------------------------------------------------------------


def test_first_message_is_accepted_pins_the_key_and_is_recorded_as_shown(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    used = first_opk(inbox.keyring)

    message = accepted(receive(inbox, sealed(inbox, app_key))).message

    assert (message.message_id, message.app_jid, message.content) == (MESSAGE_ID, APP_JID, TEXT)
    assert message.app_fingerprint == fingerprint(app_public(app_key))
    assert message.newly_pinned
    assert (message.delete_at_ms, message.saved_file) == (None, None)
    # Until the client asks the gateway, the only name the inbox has is the JID.
    assert message.app_name == APP_JID
    assert PinStore(state / "pins.json").get(APP_JID) == app_public(app_key)
    assert not SeenMessages(state / "seen.json").is_new(APP_JID, MESSAGE_ID)
    assert used not in on_disk(state).one_time_prekeys


def test_a_pinned_app_is_not_first_contact_again(inbox: Inbox, app_key: PrivateKey) -> None:
    accepted(receive(inbox, sealed(inbox, app_key)))

    later = receive(inbox, sealed(inbox, app_key, message_id="msg-2"), message_id="msg-2")

    assert not accepted(later).message.newly_pinned
    assert [(jid, pin.first_seen_ms) for jid, pin in inbox.pins.items()] == [(APP_JID, NOW_MS)]


def test_auto_delete_time_is_recorded_until_the_message_is_deleted(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    envelope = sealed(inbox, app_key, auto_delete_s=30)
    delete_at = NOW_MS + 30_000

    assert accepted(receive(inbox, envelope)).message.delete_at_ms == delete_at
    assert SeenMessages(state / "seen.json").due(delete_at) == [(APP_JID, MESSAGE_ID)]

    inbox.deleted(APP_JID, MESSAGE_ID)

    assert SeenMessages(state / "seen.json").due(delete_at) == []
    assert receive(inbox, envelope) == Duplicate(MESSAGE_ID, APP_JID)


# --- duplicate -----------------------------------------------------------------


def test_a_resent_message_is_a_duplicate_and_is_not_opened_again(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    envelope = sealed(inbox, app_key)
    accepted(receive(inbox, envelope))
    keys_after_first = on_disk(state).to_json()

    assert receive(inbox, envelope) == Duplicate(MESSAGE_ID, APP_JID)
    # Not even parsed: the seen record alone decides.
    assert receive(inbox, "not an envelope") == Duplicate(MESSAGE_ID, APP_JID)
    assert on_disk(state).to_json() == keys_after_first


def test_without_the_seen_record_a_resend_fails_on_its_used_prekey(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    envelope = sealed(inbox, app_key)
    accepted(receive(inbox, envelope))

    forgetful = inbox_on(inbox.keyring, state, seen="other-seen.json")

    refused(receive(forgetful, envelope), UnknownKeyId)


# --- refused, with nothing changed ----------------------------------------------

Case = Callable[[Inbox, PrivateKey], tuple[str, dict[str, Any]]]


def _flip_payload(inbox: Inbox, app_key: PrivateKey) -> tuple[str, dict[str, Any]]:
    tree = to_tree(sealed(inbox, app_key).encode())
    tree["payload"] = flip_b64(tree["payload"])
    return dump(tree).decode(), {}


def _flip_payload_and_resign(inbox: Inbox, app_key: PrivateKey) -> tuple[str, dict[str, Any]]:
    tree = to_tree(sealed(inbox, app_key).encode())
    tree["payload"] = flip_b64(tree["payload"])
    return resign(tree, app_key).decode(), {}


REFUSALS: dict[str, tuple[Case, type[EnvelopeError]]] = {
    "another account": (
        lambda inbox, key: (sealed(inbox, key, keyring=make_keyring(OTHER_JID)), {}),
        WrongRecipient,
    ),
    "another device of this account": (
        lambda inbox, key: (sealed(inbox, key, keyring=make_keyring(USER_JID)), {}),
        WrongDevice,
    ),
    "expired": (lambda inbox, key: (sealed(inbox, key), {"now_ms": EXPIRES_MS}), Expired),
    "payload bit flipped": (_flip_payload, BadSignature),
    "payload bit flipped and signed again": (_flip_payload_and_resign, TamperedPayload),
    "sent by another app JID": (
        lambda inbox, key: (sealed(inbox, key), {"sender": f"bank@{GATEWAY}"}),
        TamperedHeader,
    ),
    "stanza id differs": (
        lambda inbox, key: (sealed(inbox, key), {"message_id": "msg-other"}),
        TamperedHeader,
    ),
    "app outside the gateway's domain": (
        lambda inbox, key: (
            sealed(inbox, key, app_jid="otp@accounts.example"),
            {"sender": "otp@accounts.example"},
        ),
        ForeignApp,
    ),
    "not an envelope": (lambda inbox, key: ('{"v": 1}', {}), MalformedEncoding),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_message_changes_nothing(
    inbox: Inbox, app_key: PrivateKey, state: Path, case: tuple[Case, type[EnvelopeError]]
) -> None:
    build, error = case
    envelope, stanza = build(inbox, app_key)
    keys_before = inbox.keyring.to_json()

    outcome = refused(receive(inbox, envelope, **stanza), error)

    assert outcome.refusal.message_id == stanza.get("message_id", MESSAGE_ID)
    assert outcome.refusal.sender == stanza.get("sender", APP_JID)
    assert outcome.offered_key is None
    assert inbox.keyring.to_json() == keys_before == on_disk(state).to_json()
    assert PinStore(state / "pins.json").items() == []
    assert len(SeenMessages(state / "seen.json")) == 0


# --- app key changed -----------------------------------------------------------


def test_a_changed_app_key_is_refused_and_offered_until_the_user_accepts_it(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    accepted(receive(inbox, sealed(inbox, app_key)))
    new_key = other_key()
    envelope = sealed(inbox, new_key, message_id="msg-2")

    outcome = refused(receive(inbox, envelope, message_id="msg-2"), AppKeyChanged)

    assert outcome.offered_key == app_public(new_key)
    pins = PinStore(state / "pins.json")
    assert pins.get(APP_JID) == app_public(app_key)
    [(offered_by, offer)] = pins.offers()
    assert (offered_by, offer.public_key) == (APP_JID, app_public(new_key))
    assert inbox.seen.is_new(APP_JID, "msg-2")

    pins.accept(APP_JID, offer.fingerprint, NOW_MS)

    again = accepted(receive(inbox, envelope, message_id="msg-2")).message
    assert again.app_fingerprint == offer.fingerprint
    assert not again.newly_pinned


def test_a_changed_app_key_whose_signature_fails_is_not_offered(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    accepted(receive(inbox, sealed(inbox, app_key)))
    tree = to_tree(sealed(inbox, other_key(), message_id="msg-2").encode())
    tree["signature"] = flip_b64(tree["signature"], index=-1)

    # The pinned key is compared before the signature is checked.
    outcome = refused(receive(inbox, dump(tree).decode(), message_id="msg-2"), AppKeyChanged)

    assert outcome.offered_key is None
    assert PinStore(state / "pins.json").offers() == []


# --- file messages -------------------------------------------------------------


def test_a_file_message_waits_for_its_file_before_anything_is_trusted(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    used = first_opk(inbox.keyring)

    fetch = receive(inbox, sealed(inbox, app_key, FILE))

    assert isinstance(fetch, FetchFile)
    assert (fetch.message_id, fetch.app_jid, fetch.content) == (MESSAGE_ID, APP_JID, FILE)
    assert used not in on_disk(state).one_time_prekeys
    assert inbox.pins.get(APP_JID) is None
    assert inbox.seen.is_new(APP_JID, MESSAGE_ID)

    saved = state / "files" / f"{MESSAGE_ID}-{FILE.name}"
    message = inbox.file_fetched(fetch, saved, now_ms=NOW_MS + 5).message

    assert (message.saved_file, message.content, message.newly_pinned) == (saved, FILE, True)
    assert [(jid, pin.first_seen_ms) for jid, pin in inbox.pins.items()] == [(APP_JID, NOW_MS + 5)]
    assert not SeenMessages(state / "seen.json").is_new(APP_JID, MESSAGE_ID)


def test_a_file_that_cannot_be_fetched_refuses_its_message(
    inbox: Inbox, app_key: PrivateKey, state: Path
) -> None:
    fetch = receive(inbox, sealed(inbox, app_key, FILE))
    assert isinstance(fetch, FetchFile)
    error = FileUnavailable(f"{FILE.url}: HTTP 404")

    outcome = inbox.file_failed(fetch, error)

    assert (outcome.refusal.message_id, outcome.refusal.sender) == (MESSAGE_ID, APP_JID)
    assert outcome.refusal.error is error
    assert PinStore(state / "pins.json").items() == []
    assert SeenMessages(state / "seen.json").is_new(APP_JID, MESSAGE_ID)
