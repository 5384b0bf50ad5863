"""The outline a relay reads of an envelope agrees with the full parse on every input:
the same facts when both accept, the same error class and words when they refuse, for
canonical envelopes (read by the fast path) and every other spelling (read strictly)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from cmaas.envelope import (
    EnvelopeError,
    EnvelopeOutline,
    MalformedEncoding,
    OversizeInput,
    SealedEnvelope,
    generate_private_key,
    sealed,
)
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES, MAX_PAYLOAD_SIZE

from .envelope_fixtures import FILE, dump, make_keyring, seal_to, sender_bundle, to_tree


@pytest.fixture(scope="module")
def envelope() -> SealedEnvelope:
    bundles = [sender_bundle(make_keyring()), sender_bundle(make_keyring())]
    return seal_to(bundles, generate_private_key(), auto_delete_s=600)


def read_both(data: bytes | str) -> tuple[SealedEnvelope, EnvelopeOutline] | EnvelopeError:
    """Both readings of ``data``: both accept it, with the same facts, or both refuse it
    with the same error (returned)."""
    refusal: EnvelopeError | None = None
    try:
        full = SealedEnvelope.from_bytes(data)
    except EnvelopeError as error:
        refusal = error
    if refusal is not None:
        with pytest.raises(type(refusal)) as caught:
            EnvelopeOutline.from_bytes(data)
        assert type(caught.value) is type(refusal)
        assert str(caught.value) == str(refusal)
        return refusal
    outline = EnvelopeOutline.from_bytes(data)
    assert outline.header == full.header
    assert outline.app_key == full.app_key
    assert outline.device_ids == tuple(entry.device_id for entry in full.keys)
    assert outline.signature == full.signature
    assert outline.signed == full.signature_input()
    return full, outline


def test_a_canonical_envelope_reads_alike(envelope: SealedEnvelope) -> None:
    for data in (envelope.to_bytes(), envelope.to_bytes().decode()):
        read = read_both(data)
        assert not isinstance(read, EnvelopeError)
        full, outline = read
        assert full == envelope
        assert outline.signed == envelope.signature_input()
        assert outline.app_key_fingerprint == to_tree(envelope)["app_key"]["fingerprint"]


def test_a_canonical_envelope_needs_no_strict_parse(
    envelope: SealedEnvelope, monkeypatch: pytest.MonkeyPatch
) -> None:
    def strict_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the strict parse ran")

    monkeypatch.setattr(sealed, "parse_json", strict_parse)
    assert EnvelopeOutline.from_bytes(envelope.to_bytes()).signed == envelope.signature_input()
    with pytest.raises(AssertionError, match="the strict parse ran"):
        EnvelopeOutline.from_bytes(SPELLINGS["spaced"](envelope.to_bytes()))


def test_a_canonical_envelope_is_read_by_its_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    def whole_json(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole envelope was read as JSON")

    bundles = [sender_bundle(make_keyring("åsa@cmaas.test")) for _ in range(3)]
    shaped = [
        seal_to(bundles, generate_private_key(), recipient_jid="åsa@cmaas.test"),
        seal_to(
            bundles[:1],
            generate_private_key(),
            FILE,
            auto_delete_s=60,
            recipient_jid="åsa@cmaas.test",
        ),
    ]
    expected = [read_both(envelope.to_bytes()) for envelope in shaped]
    monkeypatch.setattr(sealed, "_canonical", whole_json)
    for envelope, read in zip(shaped, expected, strict=True):
        assert EnvelopeOutline.from_bytes(envelope.to_bytes()) == read[1]  # type: ignore[index]
    # Another spelling of the same envelope is read as JSON.
    with pytest.raises(AssertionError, match="read as JSON"):
        EnvelopeOutline.from_bytes(SPELLINGS["escaped"](shaped[0].to_bytes()))


def test_every_edit_of_one_byte_reads_alike(envelope: SealedEnvelope) -> None:
    """Each byte replaced by characters that matter to the shape (quote, digit,
    base64url letters, escape, brace) or dropped, and a zero put before it: both
    readings agree, whichever path the outline took."""
    wire = envelope.to_bytes()
    accepted = 0
    for position in range(len(wire)):
        edits = [
            wire[:position] + replacement + wire[position + 1 :]
            for replacement in (b'"', b"0", b"9", b"A", b"B", b"_", b"+", b"\\", b"}", b"")
        ]
        edits.append(wire[:position] + b"0" + wire[position:])
        for edited in edits:
            if edited != wire and not isinstance(read_both(edited), EnvelopeError):
                accepted += 1
    # Edits inside the sealed parts still parse: the shape's accepting path ran.
    assert accepted > len(wire)


SPELLINGS: dict[str, Callable[[bytes], bytes]] = {
    "spaced": lambda wire: json.dumps(json.loads(wire), indent=1).encode(),
    "reordered": lambda wire: json.dumps(dict(reversed(json.loads(wire).items()))).encode(),
    "escaped": lambda wire: wire.replace(b'"text"', b'"\\u0074ext"', 1),
    "inner space": lambda wire: wire.replace(b'"v":1}', b'"v":1 }'),
    "trailing space": lambda wire: wire + b" ",
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_other_spelling_reads_as_the_canonical_one(
    envelope: SealedEnvelope, spelling: str
) -> None:
    wire = SPELLINGS[spelling](envelope.to_bytes())
    assert wire != envelope.to_bytes()
    read = read_both(wire)
    assert not isinstance(read, EnvelopeError)
    assert read[1].signed == envelope.signature_input()


def spliced(wire: bytes, anchor: bytes, text: bytes) -> bytes:
    assert anchor in wire
    return wire.replace(anchor, text, 1)


# Each is canonical JSON in every other respect, so that the fast path reads it first.
REFUSALS: dict[str, tuple[Callable[[bytes], bytes], type[EnvelopeError], str]] = {
    "repeated key": (
        lambda w: spliced(w, b'"header":{', b'"header":{"v":1,'),
        MalformedEncoding,
        "duplicate key 'v'",
    ),
    "repeated top key": (
        lambda w: spliced(w, b',"v":1}', b',"v":1,"v":1}'),
        MalformedEncoding,
        "duplicate key 'v'",
    ),
    "float": (lambda w: spliced(w, b',"v":1}', b',"v":1.0}'), MalformedEncoding, "1.0"),
    "nan": (lambda w: spliced(w, b',"v":1}', b',"v":NaN}'), MalformedEncoding, "NaN"),
    "huge integer": (
        lambda w: spliced(w, b'"created_ms":', b'"created_ms":9007199254740993'),
        MalformedEncoding,
        "beyond 2**53 - 1",
    ),
    "lone surrogate": (
        lambda w: spliced(w, b'"kind":"text"', b'"kind":"\\ud800"'),
        MalformedEncoding,
        "lone surrogate",
    ),
    "unknown field": (
        lambda w: spliced(w, b',"v":1}', b',"v":1,"w":1}'),
        MalformedEncoding,
        "unknown fields w",
    ),
    "signature not text": (
        lambda w: w[: w.index(b'"signature":')] + b'"signature":7,"v":1}',
        MalformedEncoding,
        "signature must be a base64url string",
    ),
    "not an object": (lambda w: b"[" + w + b"]", MalformedEncoding, "must be a JSON object"),
    "not utf-8": (lambda w: spliced(w, b'"text"', b'"te\xffxt"'), MalformedEncoding, "JSON"),
    "byte order mark": (lambda w: b"\xef\xbb\xbf" + w, MalformedEncoding, "JSON"),
    "over the limit": (
        lambda w: w + b" " * (MAX_ENVELOPE_BYTES + 1 - len(w)),
        OversizeInput,
        "the limit is",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_both_refuse_alike_and_in_the_strict_parse_s_words(
    envelope: SealedEnvelope, case: str
) -> None:
    edit, error, words = REFUSALS[case]
    refused = read_both(edit(envelope.to_bytes()))
    assert type(refused) is error
    assert words in str(refused)


def test_both_refuse_edited_trees_alike(envelope: SealedEnvelope) -> None:
    edits: list[Callable[[Any], None]] = [
        lambda t: t.update(v=2),
        lambda t: t.update(keys=[]),
        lambda t: t.update(keys=t["keys"] * 40),
        lambda t: t["keys"].append(copy.deepcopy(t["keys"][0])),
        lambda t: t["keys"][0].update(sealed=t["keys"][0]["sealed"][:-4]),
        lambda t: t["keys"][1].update(key_id=0),
        lambda t: t["keys"][0].update(device_id=2**31),
        lambda t: t["keys"][1].update(key_id=2**31),
        lambda t: t.update(payload="A" * ((MAX_PAYLOAD_SIZE + 3) * 4 // 3)),
        lambda t: t.update(signature="A" * 100),
        lambda t: t["header"].update(priority="urgent"),
        lambda t: t["header"].pop("to"),
        lambda t: t.update(nonce=t["nonce"] + "A"),
        lambda t: t.update(payload=t["payload"][:-1] + "+"),
        lambda t: t["app_key"].update(fingerprint="0" * 64),
    ]
    for edit in edits:
        tree = to_tree(envelope)
        edit(tree)
        assert isinstance(read_both(dump(tree)), EnvelopeError)
