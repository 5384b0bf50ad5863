"""Tampered envelopes: every change is refused with the error class that names it, and a
refused envelope consumes nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cmaas.envelope import (
    AppKeyChanged,
    BadSignature,
    DeviceKeyring,
    EnvelopeError,
    ForeignApp,
    InvalidPoint,
    MalformedEncoding,
    OversizeInput,
    PrivateKey,
    SealedEnvelope,
    TamperedHeader,
    TamperedKeyEntry,
    TamperedPayload,
    UnknownKeyId,
    UnpinnedAppKey,
    b64url,
    fingerprint,
    from_b64url,
    generate_private_key,
    pad,
    point_bytes,
    sign,
    sign_envelope,
)
from cmaas.envelope import errors as envelope_errors
from cmaas.envelope.keys import CURVE_ORDER, MAX_SIGNATURE_SIZE
from cmaas.envelope.payload import seal_payload
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES

from .envelope_fixtures import (
    APP_JID,
    EXPIRES_MS,
    MESSAGE_ID,
    NOW_MS,
    TEXT,
    dump,
    flip_b64,
    make_keyring,
    open_as,
    resign,
    seal_to,
    sender_bundle,
    to_tree,
)

CONTENT_KEY = bytes(range(100, 132))
NONCE = bytes(range(12))


@dataclass
class Scene:
    app_key: PrivateKey
    device: DeviceKeyring
    other_device: DeviceKeyring
    envelope: SealedEnvelope

    @property
    def wire(self) -> bytes:
        return self.envelope.to_bytes()

    def tree(self) -> Any:
        return to_tree(self.envelope)

    def entry_index(self, keyring: DeviceKeyring) -> int:
        return [e.device_id for e in self.envelope.keys].index(keyring.device_id)


@pytest.fixture
def scene() -> Scene:
    """An envelope to two devices of one account, each sealed to a one-time prekey, with
    every optional header field set."""
    app_key = generate_private_key()
    device, other_device = make_keyring(), make_keyring()
    envelope = seal_to(
        [sender_bundle(device), sender_bundle(other_device)],
        app_key,
        auto_delete_s=600,
        content_key=CONTENT_KEY,
        nonce=NONCE,
    )
    return Scene(app_key, device, other_device, envelope)


def refused(
    scene: Scene,
    data: bytes | str | SealedEnvelope,
    error: type[EnvelopeError],
    *,
    keyring: DeviceKeyring | None = None,
    pinned: PrivateKey | bool | None = True,
    **kwargs: Any,
) -> EnvelopeError:
    """Open ``data`` on a device and check it fails with exactly ``error``, consuming no
    one-time prekey."""
    keyring = keyring or scene.device
    pinned_key = scene.app_key if pinned is True else None if pinned is False else pinned
    assert not isinstance(pinned_key, bool)
    before = set(keyring.one_time_prekeys)
    with pytest.raises(EnvelopeError) as caught:
        open_as(keyring, data, pinned_key, **kwargs)
    assert type(caught.value) is error, repr(caught.value)
    assert set(keyring.one_time_prekeys) == before, "a refused envelope consumed a prekey"
    return caught.value


def test_every_error_is_an_envelope_error() -> None:
    for name in envelope_errors.__all__:
        assert issubclass(getattr(envelope_errors, name), EnvelopeError), name


def test_the_untampered_envelope_opens(scene: Scene) -> None:
    for keyring in (scene.device, scene.other_device):
        opened = open_as(
            keyring, scene.wire, scene.app_key, sender_jid=APP_JID, stanza_id=MESSAGE_ID
        )
        assert opened.content == TEXT
        assert opened.key_id == 2
        assert 2 not in keyring.one_time_prekeys


# --- changes after signing: the app signature fails -----------------------------------------

HEADER_EDITS: dict[str, object] = {
    "message_id": "msg-2",
    "app": "evil@apps.cmaas.test",
    "to": "bob@cmaas.test",
    "created_ms": NOW_MS - 1,
    "expires_ms": EXPIRES_MS + 1,
    "kind": "otp",
    "priority": "high",
    "auto_delete_s": 601,
}


def test_header_edits_cover_every_field(scene: Scene) -> None:
    assert set(scene.tree()["header"]) == {*HEADER_EDITS, "v"}


@pytest.mark.parametrize(("field", "value"), HEADER_EDITS.items(), ids=list(HEADER_EDITS))
def test_header_field_changed(scene: Scene, field: str, value: object) -> None:
    tree = scene.tree()
    tree["header"][field] = value
    refused(scene, dump(tree), BadSignature)
    refused(scene, dump(tree), BadSignature, pinned=False)


def test_header_field_removed(scene: Scene) -> None:
    tree = scene.tree()
    del tree["header"]["auto_delete_s"]
    refused(scene, dump(tree), BadSignature)


def test_header_version_changed(scene: Scene) -> None:
    # No other version exists, so the change is caught as malformed before the signature.
    tree = scene.tree()
    tree["header"]["v"] = 2
    refused(scene, dump(tree), MalformedEncoding)


@pytest.mark.parametrize("index", [0, 100, -17, -1], ids=["first", "middle", "tag-first", "last"])
def test_payload_byte_flipped(scene: Scene, index: int) -> None:
    tree = scene.tree()
    tree["payload"] = flip_b64(tree["payload"], index)
    refused(scene, dump(tree), BadSignature)


def test_nonce_flipped(scene: Scene) -> None:
    tree = scene.tree()
    tree["nonce"] = flip_b64(tree["nonce"], 5)
    refused(scene, dump(tree), BadSignature)


@pytest.mark.parametrize(
    "index", [0, 1, 64, 65, 96, -1], ids=["enc0", "enc1", "enc-last", "ct", "tag", "last"]
)
def test_key_entry_sealed_byte_flipped(scene: Scene, index: int) -> None:
    tree = scene.tree()
    entry = tree["keys"][scene.entry_index(scene.device)]
    entry["sealed"] = flip_b64(entry["sealed"], index, 0x80)
    refused(scene, dump(tree), BadSignature)


@pytest.mark.parametrize(("field", "value"), [("key_id", 3), ("key_id", 1), ("device_id", 7)])
def test_key_entry_field_changed(scene: Scene, field: str, value: int) -> None:
    tree = scene.tree()
    tree["keys"][scene.entry_index(scene.device)][field] = value
    refused(scene, dump(tree), BadSignature)


def test_key_entries_swapped_between_devices(scene: Scene) -> None:
    tree = scene.tree()
    first, second = tree["keys"]
    first["device_id"], second["device_id"] = second["device_id"], first["device_id"]
    refused(scene, dump(tree), BadSignature)
    refused(scene, dump(tree), BadSignature, keyring=scene.other_device)
    tree = scene.tree()
    tree["keys"].reverse()
    refused(scene, dump(tree), BadSignature)


def test_key_entry_of_another_device_removed(scene: Scene) -> None:
    tree = scene.tree()
    del tree["keys"][scene.entry_index(scene.other_device)]
    refused(scene, dump(tree), BadSignature)


def test_signature_over_other_data(scene: Scene) -> None:
    tree = scene.tree()
    tree["signature"] = b64url(sign(scene.app_key, b"something else entirely"))
    refused(scene, dump(tree), BadSignature)
    # The app's genuine signature on another of its envelopes.
    other = seal_to([sender_bundle(scene.device)], scene.app_key, message_id="msg-9")
    tree["signature"] = b64url(other.signature)
    refused(scene, dump(tree), BadSignature)


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x30\x00", b"\x00" * 8, b"\x30\x06\x02\x01\x01\x02\x01\x01"],
    ids=["empty", "empty-seq", "zeros", "r=s=1"],
)
def test_malformed_signature(scene: Scene, signature: bytes) -> None:
    tree = scene.tree()
    tree["signature"] = b64url(signature)
    refused(scene, dump(tree), BadSignature)


def test_signature_in_non_strict_der(scene: Scene) -> None:
    r, s = decode_dss_signature(scene.envelope.signature)
    der = encode_dss_signature(r, s)
    # Long-form length of the outer sequence: BER, not DER.
    ber = bytes([0x30, 0x81, der[1]]) + der[2:]
    for signature in (ber, der + b"\x00"):
        tree = scene.tree()
        tree["signature"] = b64url(signature)
        # Over 72 bytes (when the DER form already has 72), the field is refused unread.
        expected = OversizeInput if len(signature) > MAX_SIGNATURE_SIZE else BadSignature
        refused(scene, dump(tree), expected)


def test_malleated_signature_changes_nothing_signed(scene: Scene) -> None:
    """ECDSA's (r, n - s) is a second valid signature. Whether it is accepted or not, it
    must never change what the device reads."""
    r, s = decode_dss_signature(scene.envelope.signature)
    tree = scene.tree()
    tree["signature"] = b64url(encode_dss_signature(r, CURVE_ORDER - s))
    try:
        opened = open_as(scene.device, dump(tree), scene.app_key)
    except BadSignature:
        return
    assert opened.header == scene.envelope.header
    assert opened.content == TEXT


def test_attacker_resigns_with_own_key(scene: Scene) -> None:
    attacker = generate_private_key()
    forged = sign_envelope(scene.envelope, attacker).to_bytes()
    refused(scene, forged, AppKeyChanged)
    refused(scene, forged, UnpinnedAppKey, pinned=False, require_pinned=True)
    # Trust on first use: with nothing pinned the signature verifies and the opened
    # message names the key, so that the caller pins it (and later refuses the real app).
    opened = open_as(scene.device, forged, None, sender_jid=APP_JID)
    assert opened.app_fingerprint == fingerprint(point_bytes(attacker.public_key()))
    refused(scene, scene.wire, AppKeyChanged, keyring=scene.other_device, pinned=attacker)


def test_sign_envelope_with_another_key_verifies(scene: Scene) -> None:
    new_key = generate_private_key()
    resigned = sign_envelope(scene.envelope, new_key)
    assert resigned.app_key == point_bytes(new_key.public_key())
    open_as(scene.device, resigned.to_bytes(), new_key)


def test_attacker_key_in_place_of_the_app_key(scene: Scene) -> None:
    attacker = point_bytes(generate_private_key().public_key())
    tree = scene.tree()
    tree["app_key"] = {"public_key": b64url(attacker), "fingerprint": fingerprint(attacker)}
    refused(scene, dump(tree), AppKeyChanged)
    refused(scene, dump(tree), BadSignature, pinned=False)


# --- a validly signed envelope that a buggy or malicious app altered ------------------------


def test_signed_payload_altered(scene: Scene) -> None:
    tree = scene.tree()
    tree["payload"] = flip_b64(tree["payload"], 3)
    refused(scene, resign(tree, scene.app_key), TamperedPayload)


def test_signed_nonce_altered(scene: Scene) -> None:
    tree = scene.tree()
    tree["nonce"] = flip_b64(tree["nonce"], 0)
    refused(scene, resign(tree, scene.app_key), TamperedPayload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_ms", NOW_MS - 1),
        ("expires_ms", EXPIRES_MS + 1),
        ("kind", "otp"),
        ("priority", "bulk"),
        ("auto_delete_s", 1),
    ],
)
def test_signed_header_altered_fails_the_payload(scene: Scene, field: str, value: object) -> None:
    # The header is the payload's associated data.
    tree = scene.tree()
    tree["header"][field] = value
    refused(scene, resign(tree, scene.app_key), TamperedPayload)


def test_signed_message_id_altered_fails_the_key_entry(scene: Scene) -> None:
    # The message id is bound into every key entry's HPKE info.
    tree = scene.tree()
    tree["header"]["message_id"] = "msg-2"
    refused(scene, resign(tree, scene.app_key), TamperedKeyEntry)


@pytest.mark.parametrize("index", [0, 64, 65, -1])
def test_signed_key_entry_altered(scene: Scene, index: int) -> None:
    tree = scene.tree()
    entry = tree["keys"][scene.entry_index(scene.device)]
    entry["sealed"] = flip_b64(entry["sealed"], index, 0x02)
    refused(scene, resign(tree, scene.app_key), TamperedKeyEntry)


def test_signed_key_entry_names_another_prekey(scene: Scene) -> None:
    tree = scene.tree()
    tree["keys"][scene.entry_index(scene.device)]["key_id"] = 1  # the SPK
    refused(scene, resign(tree, scene.app_key), TamperedKeyEntry)
    tree["keys"][scene.entry_index(scene.device)]["key_id"] = 3  # another OPK
    refused(scene, resign(tree, scene.app_key), TamperedKeyEntry)


@pytest.mark.parametrize("key_id", [5, 999_999, 2**31 - 1])
def test_signed_key_entry_names_an_unknown_prekey(scene: Scene, key_id: int) -> None:
    tree = scene.tree()
    tree["keys"][scene.entry_index(scene.device)]["key_id"] = key_id
    refused(scene, resign(tree, scene.app_key), UnknownKeyId)


def test_signed_key_entries_swapped_between_devices(scene: Scene) -> None:
    tree = scene.tree()
    first, second = tree["keys"]
    first["sealed"], second["sealed"] = second["sealed"], first["sealed"]
    wire = resign(tree, scene.app_key)
    refused(scene, wire, TamperedKeyEntry)
    refused(scene, wire, TamperedKeyEntry, keyring=scene.other_device)


def _signed_with_plaintext(scene: Scene, padded: bytes, kind: str = "text") -> bytes:
    """The scene's envelope with its payload replaced by ``padded``, validly encrypted under
    the content key and header, and signed by the app."""
    tree = scene.tree()
    tree["header"]["kind"] = kind
    header = SealedEnvelope.from_bytes(dump(tree)).header
    tree["payload"] = b64url(seal_payload(CONTENT_KEY, NONCE, padded, header.canonical()))
    return resign(tree, scene.app_key)


def test_signed_content_of_another_kind(scene: Scene) -> None:
    content = b'{"code":"1234","kind":"otp","purpose":"x"}'
    assert open_as(scene.other_device, _signed_with_plaintext(scene, pad(content), "otp"), None)
    refused(scene, _signed_with_plaintext(scene, pad(content)), MalformedEncoding)


@pytest.mark.parametrize(
    "padded",
    [
        b"{}",
        pad(b"not json"),
        pad(b'{"kind":"text"}'),
        pad(b'{"kind":"text","text":""}'),
        pad(b'{"kind":"text","text":"a","extra":1}'),
        pad(b'{"kind":"text","text":"a","text":"b"}'),
        pad(b'{"kind":"text","text":"a"}') + bytes(16),
        pad(b'{"kind":"text","text":"\xff"}'),
    ],
    ids=["unpadded", "not-json", "no-text", "empty-text", "extra", "duplicate", "long-pad", "utf8"],
)
def test_signed_bad_plaintext(scene: Scene, padded: bytes) -> None:
    refused(scene, _signed_with_plaintext(scene, padded), MalformedEncoding)


def test_signed_content_with_lone_surrogate(scene: Scene) -> None:
    wire = _signed_with_plaintext(scene, pad(b'{"kind":"text","text":"\\ud800"}'))
    try:
        opened = open_as(scene.device, wire, scene.app_key)
    except MalformedEncoding:
        return
    raise AssertionError(f"opened {opened.content!r}")


# --- how it arrived ---------------------------------------------------------------------------


def test_sender_is_not_the_signed_app(scene: Scene) -> None:
    refused(scene, scene.wire, TamperedHeader, sender_jid="evil@apps.cmaas.test")


def test_stanza_id_is_not_the_message_id(scene: Scene) -> None:
    refused(scene, scene.wire, TamperedHeader, stanza_id="msg-2")
    refused(scene, scene.wire, TamperedHeader, sender_jid=APP_JID, stanza_id="")


# --- form ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda fp: fp[:-1] + ("0" if fp[-1] != "0" else "1"),
        str.upper,
        lambda fp: "",
        lambda fp: fp[:32],
    ],
    ids=["other", "upper", "empty", "short"],
)
def test_app_key_fingerprint_edited(scene: Scene, edit: Callable[[str], str]) -> None:
    tree = scene.tree()
    tree["app_key"]["fingerprint"] = edit(tree["app_key"]["fingerprint"])
    refused(scene, dump(tree), MalformedEncoding)


EXTRA_FIELDS: dict[str, Callable[[Any], Any]] = {
    "envelope": lambda tree: tree,
    "header": lambda tree: tree["header"],
    "app_key": lambda tree: tree["app_key"],
    "key-entry": lambda tree: tree["keys"][1],
}


@pytest.mark.parametrize("where", EXTRA_FIELDS)
def test_unknown_field(scene: Scene, where: str) -> None:
    for name, value in [("extra", 1), ("Signature", "x"), ("", None)]:
        tree = scene.tree()
        EXTRA_FIELDS[where](tree)[name] = value
        refused(scene, dump(tree), MalformedEncoding)


@pytest.mark.parametrize(
    ("anchor", "duplicate"),
    [
        (b"{", b'"v":1,'),
        (b'"header":{', b'"v":1,'),
        (b'"header":{', b'"kind":"text",'),
        (b'"app_key":{', b'"fingerprint":"x",'),
        (b'"keys":[{', b'"device_id":1,'),
    ],
)
def test_duplicate_json_key(scene: Scene, anchor: bytes, duplicate: bytes) -> None:
    wire = scene.wire
    assert wire.count(anchor) >= 1
    tampered = wire.replace(anchor, anchor + duplicate, 1)
    refused(scene, tampered, MalformedEncoding)


def test_wrong_types(scene: Scene) -> None:
    edits: list[Callable[[Any], None]] = [
        lambda t: t.update(v=True),
        lambda t: t.update(keys=[]),
        lambda t: t.update(keys={}),
        lambda t: t.update(header=[]),
        lambda t: t["header"].update(created_ms="1"),
        lambda t: t["header"].update(expires_ms=2**53),
        lambda t: t["header"].update(auto_delete_s=0),
        lambda t: t["keys"][0].update(device_id=0),
        lambda t: t["keys"][1].update(sealed=t["keys"][1]["sealed"][:-2]),
        lambda t: t.update(nonce=b64url(bytes(16))),
        lambda t: t["app_key"].update(public_key=None),
    ]
    for edit in edits:
        tree = scene.tree()
        edit(tree)
        refused(scene, dump(tree), MalformedEncoding)


def test_device_listed_twice(scene: Scene) -> None:
    tree = scene.tree()
    tree["keys"].append(copy.deepcopy(tree["keys"][0]))
    refused(scene, dump(tree), MalformedEncoding)


def test_oversize_envelope(scene: Scene) -> None:
    wire = scene.wire
    padding = MAX_ENVELOPE_BYTES - len(wire)
    # JSON whitespace is allowed: at exactly the limit the envelope opens...
    assert open_as(scene.other_device, wire + b" " * padding, scene.app_key).content == TEXT
    # ... one byte more is refused before parsing.
    refused(scene, wire + b" " * (padding + 1), OversizeInput)
    refused(scene, (wire + b" " * (padding + 1)).decode(), OversizeInput)
    refused(scene, b"[" * (MAX_ENVELOPE_BYTES + 1), OversizeInput)


def test_app_key_not_on_the_curve(scene: Scene) -> None:
    point = bytearray(from_b64url(scene.tree()["app_key"]["public_key"], what="app key"))
    point[-1] ^= 0x01
    tree = scene.tree()
    tree["app_key"] = {"public_key": b64url(bytes(point)), "fingerprint": fingerprint(bytes(point))}
    refused(scene, dump(tree), InvalidPoint)
    refused(scene, dump(tree), InvalidPoint, pinned=False)
    compressed = b"\x02" + bytes(point[1:33])
    tree["app_key"] = {"public_key": b64url(compressed), "fingerprint": fingerprint(compressed)}
    refused(scene, dump(tree), MalformedEncoding)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\xff\xfe",
        b'"\xc3"',
        "{}",
        "\u00e9",
        b"{" * 5000,
        b"[" * 100_000,
    ],
    ids=["empty", "null", "array", "object", "bom", "utf8", "str", "str-e", "braces", "deep"],
)
def test_not_an_envelope(scene: Scene, data: bytes | str) -> None:
    refused(scene, data, MalformedEncoding)


def test_nothing_consumed_after_many_refusals(scene: Scene) -> None:
    tree = scene.tree()
    tree["payload"] = flip_b64(tree["payload"], 3)
    for data in (dump(tree), resign(tree, scene.app_key), scene.wire):
        for kwargs in ({"sender_jid": "x@y.z"}, {"stanza_id": "nope"}, {"now_ms": EXPIRES_MS}):
            with pytest.raises(EnvelopeError):
                open_as(scene.device, data, scene.app_key, **kwargs)
    assert set(scene.device.one_time_prekeys) == {2, 3, 4}
    assert open_as(scene.device, scene.wire, scene.app_key).key_id == 2
    assert set(scene.device.one_time_prekeys) == {3, 4}


def test_app_outside_the_gateway_domain_is_foreign(scene: Scene) -> None:
    """A validly signed envelope from an account that is not one of the gateway's apps."""
    refused(scene, scene.wire, ForeignApp, app_domain="gateway.elsewhere.test")
    opened = open_as(scene.device, scene.wire, scene.app_key, app_domain="apps.cmaas.test")
    assert opened.content == TEXT
