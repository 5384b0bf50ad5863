"""Envelope v1: sealing to devices and opening, keyrings, bundles, padding and encodings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from cmaas.envelope import (
    AppKeyChanged,
    BadSignature,
    DeviceBundle,
    DeviceKeyring,
    Expired,
    FileContent,
    InvalidPoint,
    MalformedEncoding,
    OtpContent,
    OversizeInput,
    SealedEnvelope,
    TextContent,
    UnknownKeyId,
    UnpinnedAppKey,
    WrongDevice,
    WrongRecipient,
    b64url,
    canonical_json,
    from_b64url,
    generate_private_key,
    pad,
    padded_length,
    point_bytes,
    sign_prekey,
    unpad,
)
from cmaas.envelope.content import Content
from cmaas.envelope.encoding import check_b64url, parse_json
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.envelope.padding import MAX_PLAINTEXT

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
    make_keyring,
    open_as,
    seal_to,
    sender_bundle,
    to_tree,
)

CONTENTS: list[Content] = [
    TEXT,
    TextContent('Grüße aus Köln, 😀 and "quotes" \\ / \n new line'),
    OtpContent("493817", "Sign-in to Example Bank"),
    OtpContent("Ab12Cd34Ef56", "x"),
    FILE,
]


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("devices", [1, 2, 5])
def test_round_trip_to_every_device(devices: int) -> None:
    app_key = generate_private_key()
    keyrings = [make_keyring() for _ in range(devices)]
    # Odd-numbered devices have run out of one-time prekeys: the sender seals to the SPK.
    bundles = [
        sender_bundle(keyring, with_one_time_prekey=index % 2 == 0)
        for index, keyring in enumerate(keyrings)
    ]
    envelope = seal_to(bundles, app_key)
    wire = envelope.to_bytes()
    # to_bytes splices the signature into the signed part instead of serialising twice.
    assert wire == canonical_json(envelope.to_json())
    assert SealedEnvelope.from_bytes(wire) == envelope
    assert SealedEnvelope.from_bytes(wire).to_bytes() == wire
    assert [entry.device_id for entry in envelope.keys] == [k.device_id for k in keyrings]

    for index, (keyring, bundle) in enumerate(zip(keyrings, bundles, strict=True)):
        expected_key_id = (
            bundle.one_time_prekeys[0].key_id if index % 2 == 0 else keyring.signed_prekey.key_id
        )
        opened = open_as(keyring, wire, app_key, sender_jid=APP_JID, stanza_id=MESSAGE_ID)
        assert opened.content == TEXT
        assert opened.header == envelope.header
        assert opened.key_id == expected_key_id
        assert opened.app_key == app_public(app_key)
        assert opened.app_fingerprint == hashlib.sha256(app_public(app_key)).hexdigest()


@pytest.mark.parametrize("content", CONTENTS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("auto_delete_s", [None, 1, 300, 365 * 24 * 3600])
def test_every_content_kind(content: Content, auto_delete_s: int | None) -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    envelope = seal_to([sender_bundle(keyring)], app_key, content, auto_delete_s=auto_delete_s)
    expected_kind = {TextContent: "text", OtpContent: "otp", FileContent: "file"}[type(content)]
    assert envelope.header.kind == expected_kind
    assert envelope.header.auto_delete_s == auto_delete_s
    assert ("auto_delete_s" in to_tree(envelope)["header"]) == (auto_delete_s is not None)
    assert envelope.to_bytes() == canonical_json(envelope.to_json())
    opened = open_as(keyring, envelope.to_bytes(), app_key)
    assert opened.content == content
    assert opened.header.auto_delete_s == auto_delete_s


@pytest.mark.parametrize("devices", [1, 3])
@pytest.mark.parametrize("auto_delete_s", [None, 300])
@pytest.mark.parametrize("layout", ["canonical", "spaced and reordered", "non-ASCII JID"])
def test_parsed_signature_input_is_the_rebuilt_signed_part(
    devices: int, auto_delete_s: int | None, layout: str
) -> None:
    """What a parsed envelope's signature is checked against is the signed part rebuilt
    from its fields, however the text was laid out."""
    keyrings = [make_keyring() for _ in range(devices)]
    envelope = seal_to(
        [sender_bundle(k) for k in keyrings],
        generate_private_key(),
        TEXT,
        auto_delete_s=auto_delete_s,
    )
    tree = to_tree(envelope)
    if layout == "non-ASCII JID":
        tree["header"]["to"] = "jürgen@例え.jp"
    text = (
        json.dumps(dict(reversed(tree.items())), indent=2)
        if layout == "spaced and reordered"
        else canonical_json(tree).decode()
    )
    parsed = SealedEnvelope.from_bytes(text)
    assert parsed.signature_input() == canonical_json(parsed.signed_part())
    if layout != "non-ASCII JID":
        assert parsed.signature_input() == envelope.signature_input()
    assert parsed.to_bytes() == canonical_json(tree)


def test_payload_length_hides_the_content_length() -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    bundle = sender_bundle(keyring, with_one_time_prekey=False)
    short = seal_to([bundle], app_key, OtpContent("1234", "a"))
    longer = seal_to([bundle], app_key, TextContent("x" * 200))
    assert len(short.payload) == len(longer.payload) == 256 + 16


def test_one_time_prekey_is_consumed() -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    bundle = sender_bundle(keyring)
    opk_id = bundle.one_time_prekeys[0].key_id
    wire = seal_to([bundle], app_key).to_bytes()
    assert opk_id in keyring.one_time_prekeys
    assert open_as(keyring, wire, app_key).key_id == opk_id
    assert opk_id not in keyring.one_time_prekeys
    with pytest.raises(UnknownKeyId):
        open_as(keyring, wire, app_key)
    with pytest.raises(UnknownKeyId):
        keyring.prekey(opk_id)
    # The other one-time prekeys are untouched.
    assert len(keyring.one_time_prekeys) == 2


def test_signed_prekey_messages_open_repeatedly() -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    bundle = sender_bundle(keyring, with_one_time_prekey=False)
    assert bundle.one_time_prekeys == ()
    wire = seal_to([bundle], app_key).to_bytes()
    opks_before = set(keyring.one_time_prekeys)
    for _ in range(3):
        opened = open_as(keyring, wire, app_key)
        assert opened.key_id == keyring.signed_prekey.key_id == 1
        assert opened.content == TEXT
    assert set(keyring.one_time_prekeys) == opks_before


def test_signed_prekey_rotation_keeps_the_old_one() -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    wire = seal_to([sender_bundle(keyring, with_one_time_prekey=False)], app_key).to_bytes()
    keyring.rotate_signed_prekey(NOW_MS + 1000)
    assert keyring.signed_prekey.key_id != 1
    assert open_as(keyring, wire, app_key).key_id == 1
    # A message sealed to the new SPK opens too.
    new_wire = seal_to(
        [sender_bundle(keyring, with_one_time_prekey=False)], app_key, message_id="msg-2"
    ).to_bytes()
    assert open_as(keyring, new_wire, app_key).key_id == keyring.signed_prekey.key_id
    # Once no message sealed to it can still live, the old SPK is forgotten.
    keyring.rotate_signed_prekey(NOW_MS + 1000 + MAX_LIFETIME_MS)
    assert 1 not in keyring.retired_signed_prekeys
    with pytest.raises(UnknownKeyId):
        keyring.prekey(1)


def test_keyring_json_round_trip_still_opens() -> None:
    app_key = generate_private_key()
    keyring = make_keyring()
    keyring.mark_published({2})
    opk_wire = seal_to([sender_bundle(keyring)], app_key).to_bytes()
    old_spk_wire = seal_to(
        [sender_bundle(keyring, with_one_time_prekey=False)], app_key, message_id="m-old"
    ).to_bytes()
    keyring.rotate_signed_prekey(NOW_MS)
    spk_wire = seal_to(
        [sender_bundle(keyring, with_one_time_prekey=False)], app_key, message_id="m-new"
    ).to_bytes()

    key_file = json.dumps(keyring.to_json())
    restored = DeviceKeyring.from_json(json.loads(key_file))
    assert restored.to_json() == keyring.to_json()
    assert restored.fingerprint == keyring.fingerprint
    assert restored.one_time_prekeys[2].published
    assert restored.unpublished_count() == keyring.unpublished_count()
    assert restored.bundle().to_bytes() == keyring.bundle().to_bytes()

    assert open_as(restored, opk_wire, app_key).content == TEXT
    assert open_as(restored, old_spk_wire, app_key).key_id == 1
    assert open_as(restored, spk_wire, app_key).key_id == restored.signed_prekey.key_id
    with pytest.raises(UnknownKeyId):
        open_as(restored, opk_wire, app_key)


# --- who may open ------------------------------------------------------------------------


@pytest.fixture
def sealed() -> tuple[DeviceKeyring, bytes, bytes]:
    """A keyring, an SPK-sealed envelope to it, and the app's public key."""
    app_key = generate_private_key()
    keyring = make_keyring()
    wire = seal_to([sender_bundle(keyring, with_one_time_prekey=False)], app_key).to_bytes()
    return keyring, wire, app_public(app_key)


def test_pinning(sealed: tuple[DeviceKeyring, bytes, bytes]) -> None:
    keyring, wire, app_key = sealed
    assert keyring.open(wire, now_ms=NOW_MS, pinned_app_key=app_key).app_key == app_key
    assert keyring.open(wire, now_ms=NOW_MS, pinned_app_key=app_key, require_pinned=True)
    # First use: nothing pinned, the caller pins what it returns.
    assert keyring.open(wire, now_ms=NOW_MS, pinned_app_key=None).app_key == app_key
    other = app_public(generate_private_key())
    with pytest.raises(AppKeyChanged):
        keyring.open(wire, now_ms=NOW_MS, pinned_app_key=other)
    with pytest.raises(UnpinnedAppKey):
        keyring.open(wire, now_ms=NOW_MS, pinned_app_key=None, require_pinned=True)


def test_expiry_boundary(sealed: tuple[DeviceKeyring, bytes, bytes]) -> None:
    keyring, wire, app_key = sealed
    assert keyring.open(wire, now_ms=EXPIRES_MS - 1, pinned_app_key=app_key)
    with pytest.raises(Expired):
        keyring.open(wire, now_ms=EXPIRES_MS, pinned_app_key=app_key)
    with pytest.raises(Expired):
        keyring.open(wire, now_ms=EXPIRES_MS + 10**9, pinned_app_key=app_key)


def test_wrong_recipient(sealed: tuple[DeviceKeyring, bytes, bytes]) -> None:
    _, wire, app_key = sealed
    stranger = make_keyring(OTHER_JID)
    with pytest.raises(WrongRecipient) as caught:
        stranger.open(wire, now_ms=NOW_MS, pinned_app_key=app_key)
    assert type(caught.value) is WrongRecipient


def test_wrong_device(sealed: tuple[DeviceKeyring, bytes, bytes]) -> None:
    _, wire, app_key = sealed
    new_device = make_keyring(USER_JID)
    with pytest.raises(WrongDevice) as caught:
        new_device.open(wire, now_ms=NOW_MS, pinned_app_key=app_key)
    assert isinstance(caught.value, WrongRecipient)
    assert issubclass(WrongDevice, WrongRecipient)


def test_seal_refuses_bundles_of_another_account() -> None:
    app_key = generate_private_key()
    mine, theirs = make_keyring(), make_keyring(OTHER_JID)
    with pytest.raises(WrongRecipient):
        seal_to([sender_bundle(mine), sender_bundle(theirs)], app_key)
    with pytest.raises(WrongRecipient):
        seal_to([], app_key)
    with pytest.raises(MalformedEncoding):
        seal_to([sender_bundle(mine), sender_bundle(mine)], app_key)


# --- padding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "padded"),
    [
        (0, 256),
        (1, 256),
        (255, 256),
        (256, 272),
        (300, 304),
        (511, 512),
        (512, 544),
        (1000, 1024),
        (1500, 1536),
        (4095, 4096),
        (4096, 4352),
        (40_000, 40_960),
        (65_534, 65_536),
        (65_535, 65_536),
    ],
)
def test_padded_length_table(length: int, padded: int) -> None:
    assert padded_length(length) == padded


def test_padded_length_bounds() -> None:
    previous = 0
    for length in range(MAX_PLAINTEXT + 1):
        padded = padded_length(length)
        assert padded > length
        assert padded >= previous
        assert padded - max(length + 1, 256) <= max(length + 1, 256) // 16
        previous = padded


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"x", b"\x80", b"\x00", b"a\x80\x00", b"\x00" * 255, bytes(range(256)) * 3],
)
def test_pad_round_trip(plaintext: bytes) -> None:
    padded = pad(plaintext)
    assert len(padded) == padded_length(len(plaintext))
    assert unpad(padded) == plaintext


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        bytes(256),
        b"x" * 256,
        pad(b"x")[:-1],
        pad(b"x") + bytes(16),
        b"x\x81" + bytes(254),
        pad(b"x" * 300)[:256],
    ],
    ids=["empty", "zeros", "no-marker", "short", "long", "bad-marker", "truncated"],
)
def test_unpad_refuses_bad_padding(padded: bytes) -> None:
    with pytest.raises(MalformedEncoding):
        unpad(padded)


def test_pad_refuses_oversize() -> None:
    assert len(pad(bytes(MAX_PLAINTEXT))) == 65_536
    with pytest.raises(OversizeInput):
        pad(bytes(MAX_PLAINTEXT + 1))


# --- canonical JSON and base64url --------------------------------------------------------


def test_canonical_json_rules() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "x"], "A": {"z": 0, "y": -1}}) == (
        b'{"A":{"y":-1,"z":0},"a":[true,null,"x"],"b":1}'
    )
    # Sorted by code point, not locale; UTF-8, not \u escapes; JSON's own escapes only.
    assert canonical_json({"é": 1, "z": 2, "Z": 3}) == '{"Z":3,"z":2,"é":1}'.encode()
    assert canonical_json("Köln 😀") == '"Köln 😀"'.encode()
    assert canonical_json('a"b\\c/d\n\x1f') == b'"a\\"b\\\\c/d\\n\\u001f"'
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    assert canonical_json(-(2**53 - 1)) == b"-9007199254740991"
    assert canonical_json([]) == b"[]"
    assert canonical_json({}) == b"{}"


@pytest.mark.parametrize(
    "value",
    [1.5, 1.0, {"a": 0.0}, [float("nan")], 2**53, -(2**53), {"n": 2**64}, "\ud800", {1: "a"}],
    ids=repr,
)
def test_canonical_json_refuses_unportable_values(value: object) -> None:
    with pytest.raises(MalformedEncoding):
        canonical_json(value)


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":1}', '{"a":1.0}', '{"a":1e3}', "[NaN]", "[Infinity]", "[-Infinity]", "{", ""],
)
def test_strict_json_parsing(text: str) -> None:
    with pytest.raises(MalformedEncoding):
        parse_json(text, max_bytes=100, what="test")


def test_json_size_limit_is_checked_first() -> None:
    with pytest.raises(OversizeInput):
        parse_json(b"{" * 101, max_bytes=100, what="test")


@pytest.mark.parametrize("size", range(0, 40))
def test_b64url_round_trip(size: int) -> None:
    data = os.urandom(size)
    text = b64url(data)
    assert "=" not in text
    assert from_b64url(text, what="x", size=size) == data
    assert check_b64url(text, what="x", size=size) == text


@pytest.mark.parametrize(
    "text",
    [
        "AAA=",
        "AA==",
        "ab+c",
        "ab/c",
        "A",
        "AB",  # b"\x00" is "AA": non-zero trailing bits
        "AAB",  # b"\x00\x00" is "AAA"
        "AAAA\n",
        " AAAA",
        "\uff21" * 4,
        "AA.A",
        "AA\x00A",
        "AA\u00e9A",
    ],
)
def test_b64url_refuses_non_canonical(text: str) -> None:
    with pytest.raises(MalformedEncoding):
        from_b64url(text, what="x")
    with pytest.raises(MalformedEncoding):
        check_b64url(text, what="x")


def test_b64url_sizes_and_types() -> None:
    with pytest.raises(MalformedEncoding):
        from_b64url(b64url(bytes(31)), what="x", size=32)
    with pytest.raises(MalformedEncoding):
        from_b64url(b64url(bytes(33)), what="x", size=32)
    with pytest.raises(MalformedEncoding):
        from_b64url(b"AAAA", what="x")
    with pytest.raises(MalformedEncoding):
        from_b64url(None, what="x")
    assert from_b64url(b64url(bytes(65)), what="x", max_size=65) == bytes(65)
    with pytest.raises(OversizeInput):
        from_b64url(b64url(bytes(66)), what="x", max_size=65)
    for size in (31, 33):
        with pytest.raises(MalformedEncoding, match=f"must be 32 bytes, not {size}"):
            check_b64url(b64url(bytes(size)), what="x", size=32)
    with pytest.raises(OversizeInput):
        check_b64url(b64url(bytes(66)), what="x", max_size=65)


# --- bundles -----------------------------------------------------------------------------


def test_bundle_round_trip() -> None:
    keyring = make_keyring()
    bundle = keyring.bundle()
    parsed = DeviceBundle.from_bytes(bundle.to_bytes(), expected_jid=USER_JID)
    assert parsed == bundle
    assert parsed.fingerprint == keyring.fingerprint
    assert [p.key_id for p in parsed.one_time_prekeys] == [2, 3, 4]
    keyring.mark_published({2, 3})
    assert [p.key_id for p in keyring.bundle().one_time_prekeys] == [4]
    assert len(keyring.bundle(unpublished_only=False).one_time_prekeys) == 3


def test_bundle_refuses_a_prekey_signed_by_another_identity() -> None:
    keyring = make_keyring()
    tree = to_tree(keyring.bundle())
    stranger = generate_private_key()
    opk = keyring.one_time_prekeys[3].private.public_key()
    forged = sign_prekey(stranger, USER_JID, keyring.device_id, "opk", 3, opk)
    tree["one_time_prekeys"][1] = forged.to_json()
    with pytest.raises(BadSignature):
        DeviceBundle.from_bytes(dump(tree))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jid", OTHER_JID),
        ("device_id", 12345),
        ("identity_key", None),  # another valid point
    ],
)
def test_bundle_moved_elsewhere_fails_its_signatures(field: str, value: object) -> None:
    keyring = make_keyring()
    tree = to_tree(keyring.bundle())
    if value is None:
        value = b64url(point_bytes(generate_private_key().public_key()))
    tree[field] = value
    with pytest.raises(BadSignature):
        DeviceBundle.from_bytes(dump(tree))


def test_bundle_roles_are_signed() -> None:
    keyring = make_keyring(one_time_prekeys=1)
    tree = to_tree(keyring.bundle())
    tree["signed_prekey"], tree["one_time_prekeys"][0] = (
        tree["one_time_prekeys"][0],
        tree["signed_prekey"],
    )
    with pytest.raises(BadSignature):
        DeviceBundle.from_bytes(dump(tree))


def test_bundle_refuses_duplicate_key_ids() -> None:
    keyring = make_keyring()
    spk_id = keyring.signed_prekey.key_id
    opk = keyring.one_time_prekeys[2].private.public_key()
    # Even with a valid signature, a one-time prekey may not reuse the SPK's id.
    clash = sign_prekey(keyring.identity, USER_JID, keyring.device_id, "opk", spk_id, opk)
    tree = to_tree(keyring.bundle())
    tree["one_time_prekeys"][0] = clash.to_json()
    with pytest.raises(MalformedEncoding):
        DeviceBundle.from_bytes(dump(tree))
    tree = to_tree(keyring.bundle())
    tree["one_time_prekeys"].append(tree["one_time_prekeys"][0])
    with pytest.raises(MalformedEncoding):
        DeviceBundle.from_bytes(dump(tree))


def test_bundle_expected_jid() -> None:
    wire = make_keyring().bundle().to_bytes()
    assert DeviceBundle.from_bytes(wire, expected_jid=USER_JID).jid == USER_JID
    with pytest.raises(MalformedEncoding) as caught:
        DeviceBundle.from_bytes(wire, expected_jid=OTHER_JID)
    assert type(caught.value) is MalformedEncoding


def test_bundle_form() -> None:
    keyring = make_keyring()
    edits: list[Callable[[Any], object]] = [
        lambda t: t.update(extra=1),
        lambda t: t.update(suites=["x25519"]),
        lambda t: t.update(suites=["p256", "p256"]),
        lambda t: t.update(suites=[]),
        lambda t: t.update(v=2),
        lambda t: t.update(device_id=0),
        lambda t: t["signed_prekey"].update(key_id=0),
        lambda t: t.pop("one_time_prekeys"),
    ]
    for edit in edits:
        tree = to_tree(keyring.bundle())
        edit(tree)
        with pytest.raises(MalformedEncoding):
            DeviceBundle.from_bytes(dump(tree))
    tree = to_tree(keyring.bundle())
    point = bytearray(point_bytes(keyring.identity.public_key()))
    point[-1] ^= 1
    tree["identity_key"] = b64url(bytes(point))
    with pytest.raises(InvalidPoint):
        DeviceBundle.from_bytes(dump(tree))
    tree = to_tree(keyring.bundle())
    tree["one_time_prekeys"] *= 40
    with pytest.raises(OversizeInput):
        DeviceBundle.from_bytes(dump(tree))


def test_sender_bundle_keeps_one_prekey() -> None:
    keyring = make_keyring()
    bundle = sender_bundle(keyring)
    assert [p.key_id for p in bundle.one_time_prekeys] == [2]
    prekey, public = bundle.recipient_prekey()
    assert prekey.key_id == 2
    assert point_bytes(public) == prekey.public_key
    fallback = dataclasses.replace(bundle, one_time_prekeys=())
    assert fallback.recipient_prekey()[0] == bundle.signed_prekey


# --- what sealing computes once and remembers ----------------------------------------


def test_a_bundle_without_its_one_time_prekey_seals_to_its_signed_prekey() -> None:
    keyring = make_keyring()
    bundle = sender_bundle(keyring)
    one_time, _ = bundle.recipient_prekey()
    # The client service caches a lookup this way; the parsed prekey must not carry over.
    reusable = dataclasses.replace(bundle, one_time_prekeys=())
    assert one_time.key_id == bundle.one_time_prekeys[0].key_id
    assert reusable.recipient_prekey()[0] == keyring.bundle().signed_prekey
    app_key = generate_private_key()
    envelope = seal_to([reusable], app_key)
    assert envelope.keys[0].key_id == keyring.signed_prekey.key_id
    assert open_as(keyring, envelope.to_bytes(), app_key).content == TEXT


def test_each_app_key_signs_with_its_own_point() -> None:
    keyring = make_keyring()
    bundle = sender_bundle(keyring, with_one_time_prekey=False)
    first, second = generate_private_key(), generate_private_key()
    for app_key in (first, second, first):
        envelope = seal_to([bundle], app_key)
        assert envelope.app_key == app_public(app_key)
        assert open_as(keyring, envelope.to_bytes(), app_key).content == TEXT


def test_a_changed_header_is_serialised_again() -> None:
    envelope = seal_to([sender_bundle(make_keyring())], generate_private_key())
    before = envelope.header.canonical()
    changed = dataclasses.replace(envelope.header, auto_delete_s=60)
    assert changed.canonical() == canonical_json(changed.to_json()) != before
    assert envelope.header.canonical() == before == canonical_json(envelope.header.to_json())


@pytest.mark.parametrize(
    "jids",
    [
        ("bank@gateway.example.org", "alice@example.org"),
        ('bänk"\\q@gateway.example.org', "ålice\u2028@exämple.org"),
    ],
)
def test_the_signed_part_is_its_canonical_json(jids: tuple[str, str]) -> None:
    app_jid, user_jid = jids
    keyrings = [make_keyring(user_jid) for _ in range(3)]
    envelope = seal_to(
        [sender_bundle(keyring) for keyring in keyrings],
        generate_private_key(),
        app_jid=app_jid,
        recipient_jid=user_jid,
        auto_delete_s=5,
    )
    assert envelope.signature_input() == canonical_json(envelope.signed_part())
    assert envelope.to_bytes() == canonical_json(envelope.to_json())


@pytest.mark.parametrize("device_id", [True, 0, 2**31, 2**53])
def test_a_key_entry_without_a_portable_id_has_no_signed_part(device_id: int) -> None:
    envelope = seal_to([sender_bundle(make_keyring())], generate_private_key())
    entry = dataclasses.replace(envelope.keys[0], device_id=device_id)
    with pytest.raises(MalformedEncoding):
        dataclasses.replace(envelope, keys=(entry,)).signature_input()


def test_content_over_the_plaintext_limit_is_refused_before_sealing() -> None:
    with pytest.raises(OversizeInput):
        seal_to(
            [sender_bundle(make_keyring())],
            generate_private_key(),
            TextContent("x" * 16_000 + "\u0800" * 20_000),
        )


# --- regressions: bugs found by these tests and fixed ------------------------------


@pytest.mark.parametrize(
    "parse", [SealedEnvelope.from_bytes, DeviceBundle.from_bytes], ids=["envelope", "bundle"]
)
def test_huge_integer_literal_is_malformed(parse: Callable[[bytes | str], object]) -> None:
    with pytest.raises(MalformedEncoding):
        parse(b'{"v":' + b"9" * 4301 + b"}")


@pytest.mark.parametrize(
    "parse", [SealedEnvelope.from_bytes, DeviceBundle.from_bytes], ids=["envelope", "bundle"]
)
def test_str_with_lone_surrogate_is_malformed(parse: Callable[[bytes | str], object]) -> None:
    with pytest.raises(MalformedEncoding):
        parse('{"v":1,"x":"\ud800"}')
