"""Legacy-OMEMO elements on the wire: the header the gateway reads from an
``<encrypted/>`` element (and everything it refuses), the submission carrying one, and
the key-transport request."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from cmaas.lifecycle import Priority
from cmaas.wire import KeyTransportRequest, Submission, WireError
from cmaas.wire.omemo_message import (
    MAX_OMEMO_MESSAGE_CHARS,
    EncryptedHeader,
    parse_encrypted,
    parse_safe_xml,
)
from tests.omemo_elements import AXOLOTL, b64, encrypted_xml

# parse_encrypted: what the gateway reads


def test_a_message_names_its_sender_and_recipient_devices() -> None:
    header = parse_encrypted(encrypted_xml(7, (9, 11, 9)))
    assert header == EncryptedHeader(7, frozenset({9, 11}), has_payload=True)


def test_a_key_transport_has_no_payload() -> None:
    header = parse_encrypted(encrypted_xml(7, (9,), payload=False))
    assert header == EncryptedHeader(7, frozenset({9}), has_payload=False)


def test_a_16_byte_iv_from_older_clients_is_accepted() -> None:
    assert parse_encrypted(encrypted_xml(iv=b64(16))).has_payload


@pytest.mark.parametrize(
    "doc",
    [
        f'<!DOCTYPE encrypted><encrypted xmlns="{AXOLOTL}"/>',
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        f'<encrypted xmlns="{AXOLOTL}"><header sid="&b;"/></encrypted>',
        '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f'<encrypted xmlns="{AXOLOTL}">&xxe;</encrypted>',
    ],
)
def test_a_doctype_is_refused_before_any_entity(doc: str) -> None:
    with pytest.raises(WireError, match="DOCTYPE"):
        parse_encrypted(doc)
    with pytest.raises(WireError, match="DOCTYPE"):
        parse_safe_xml(doc, 10_000)


def test_an_undeclared_entity_or_broken_xml_is_not_well_formed() -> None:
    for broken in (f'<encrypted xmlns="{AXOLOTL}">&xxe;</encrypted>', "<encrypted>", ""):
        with pytest.raises(WireError, match="not well-formed"):
            parse_safe_xml(broken, 10_000)


def test_xml_longer_than_the_bound_is_refused_before_parsing() -> None:
    assert parse_safe_xml("<a/>", 4).tag == "a"
    with pytest.raises(WireError, match="longer than 3 characters"):
        parse_safe_xml("<a/>", 3)
    padded = encrypted_xml().replace("<header", " " * MAX_OMEMO_MESSAGE_CHARS + "<header", 1)
    with pytest.raises(WireError, match="longer than"):
        parse_encrypted(padded)


@pytest.mark.parametrize(
    ("xml", "why"),
    [
        (encrypted_xml(namespace="eu.siacs.conversations.axolotl.other"), "must be <encrypted"),
        (encrypted_xml(namespace="urn:xmpp:omemo:2"), "must be <encrypted"),
        (f"<header xmlns='{AXOLOTL}' sid='7'/>", "must be <encrypted"),
        (f"<encrypted xmlns='{AXOLOTL}'><payload>{b64(8)}</payload></encrypted>", "no <header"),
        (encrypted_xml(rids=()), "1 to 64 <key/>"),
        (encrypted_xml(rids=tuple(range(1, 66))), "1 to 64 <key/>"),
        (encrypted_xml(iv=b64(8)), "<iv/> of 12 or 16 bytes"),
        (encrypted_xml(iv=b64(32)), "<iv/> of 12 or 16 bytes"),
        (encrypted_xml(iv="not base64!"), "the OMEMO IV is not base64"),
        (encrypted_xml().replace("<iv>", "<other>").replace("</iv>", "</other>"), "<iv/>"),
    ],
)
def test_a_malformed_element_is_refused(xml: str, why: str) -> None:
    with pytest.raises(WireError, match=why):
        parse_encrypted(xml)


def test_64_keys_is_the_most() -> None:
    assert len(parse_encrypted(encrypted_xml(rids=tuple(range(1, 65)))).recipient_devices) == 64


@pytest.mark.parametrize("bad", ["0", str(2**31), "-1", "+7", "7a", "", "99999999999", "\u0667"])
def test_sid_and_rid_must_be_device_ids(bad: str) -> None:
    with pytest.raises(WireError, match="sid must be a whole number from 1 to 2147483647"):
        parse_encrypted(encrypted_xml(sid=bad))
    with pytest.raises(WireError, match="rid of OMEMO key 1 must be a whole number"):
        parse_encrypted(encrypted_xml(rids=(9, bad)))


def test_a_header_without_sid_is_refused() -> None:
    with pytest.raises(WireError, match="sid must be"):
        parse_encrypted(encrypted_xml().replace(" sid='7'", ""))


def test_the_largest_id_and_leading_zeros_read_as_numbers() -> None:
    # The header's ids are compared as numbers with the app's published devices: "007"
    # is device 7, as it is to python-omemo.
    header = parse_encrypted(encrypted_xml(sid="007", rids=(2**31 - 1,)))
    assert (header.sender_device, header.recipient_devices) == (7, frozenset({2**31 - 1}))


@pytest.mark.parametrize(
    ("payload", "why"),
    [("!!", "the OMEMO payload is not base64"), (" ", "the OMEMO payload must be 1 to")],
)
def test_a_bad_payload_is_refused(payload: str, why: str) -> None:
    xml = encrypted_xml(payload=False).replace(
        "</encrypted>", f"<payload>{payload}</payload></encrypted>"
    )
    with pytest.raises(WireError, match=why):
        parse_encrypted(xml)


def test_a_key_must_be_base64_of_bounded_length() -> None:
    with pytest.raises(WireError, match="OMEMO key 0 is not base64"):
        parse_encrypted(encrypted_xml().replace("<key rid='9'>", "<key rid='9'>*", 1))
    empty = encrypted_xml().split("<key rid='9'>")[0] + "<key rid='9'></key><iv>" + b64(12)
    with pytest.raises(WireError, match="OMEMO key 0 must be 1 to 1024 characters"):
        parse_encrypted(empty + "</iv></header></encrypted>")
    long_key = base64.b64encode(bytes(800)).decode()  # 1068 characters
    head = f"<encrypted xmlns='{AXOLOTL}'><header sid='7'><key rid='9'>{long_key}</key>"
    with pytest.raises(WireError, match="OMEMO key 0 must be 1 to 1024 characters"):
        parse_encrypted(f"{head}<iv>{b64(12)}</iv></header></encrypted>")


# Submission with an OMEMO element

ENVELOPE = '{"v":1}'


def submission_json(**fields: object) -> dict[str, object]:
    value: dict[str, object] = {"message_id": "m1", "to": "bob@example.org", **fields}
    return {key: item for key, item in value.items() if item is not None}


def test_an_omemo_only_submission_needs_expires_at() -> None:
    omemo = encrypted_xml()
    with pytest.raises(WireError, match="expires_at is required"):
        Submission.from_json(submission_json(omemo=omemo))
    read = Submission.from_json(submission_json(omemo=omemo, expires_at=1_800_000_600))
    assert (read.envelope, read.omemo, read.expires_at) == (None, omemo, 1_800_000_600)


def test_a_submission_without_envelope_and_omemo_is_refused() -> None:
    with pytest.raises(WireError, match="needs an envelope, an omemo element, or both"):
        Submission.from_json(submission_json(expires_at=1_800_000_600))


@pytest.mark.parametrize("omemo", ["", "x" * (MAX_OMEMO_MESSAGE_CHARS + 1), 7, ["<e/>"]])
def test_an_omemo_field_that_is_not_bounded_text_is_refused(omemo: object) -> None:
    with pytest.raises(WireError, match="omemo must be the legacy-OMEMO"):
        Submission.from_json(submission_json(omemo=omemo, envelope=ENVELOPE))


@pytest.mark.parametrize(
    "submission",
    [
        Submission("m1", "bob@example.org", None, Priority.HIGH, 1_800_000_600, encrypted_xml()),
        Submission("m1", "bob@example.org", ENVELOPE, Priority.BULK, None, encrypted_xml()),
        Submission("m1", "bob@example.org", ENVELOPE),
    ],
    ids=["omemo-only", "both", "envelope-only"],
)
def test_a_submission_reads_back_as_written(submission: Submission) -> None:
    written = json.loads(json.dumps(submission.to_json()))
    assert ("omemo" in written) == (submission.omemo is not None)
    assert ("envelope" in written) == (submission.envelope is not None)
    assert Submission.from_json(written) == submission


def test_the_digest_covers_the_omemo_element() -> None:
    omemo = encrypted_xml()
    first = Submission("m1", "bob@example.org", ENVELOPE, omemo=omemo)
    retry = Submission.from_json(json.loads(json.dumps(first.to_json())))
    other = Submission("m1", "bob@example.org", ENVELOPE, omemo=encrypted_xml())
    without = Submission("m1", "bob@example.org", ENVELOPE)
    assert retry.request_sha256() == first.request_sha256()
    assert other.request_sha256() != first.request_sha256()
    assert without.request_sha256() != first.request_sha256()


def test_an_envelope_only_digest_is_the_one_stored_before_omemo() -> None:
    # Digests already stored for idempotent retries must not change with the new field.
    normalised = {
        "message_id": "m1",
        "to": "bob@example.org",
        "priority": "normal",
        "expires_at": None,
        "envelope": ENVELOPE,
    }
    expected = hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).digest()
    assert Submission("m1", "bob@example.org", ENVELOPE).request_sha256() == expected


# KeyTransportRequest


def test_a_key_transport_request_reads_back() -> None:
    request = KeyTransportRequest("bob@example.org", encrypted_xml(payload=False))
    assert KeyTransportRequest.from_json(request.to_json()) == request


def test_a_key_transport_request_with_a_payload_is_refused() -> None:
    with pytest.raises(WireError, match="carries no <payload/>"):
        KeyTransportRequest.from_json({"to": "bob@example.org", "xml": encrypted_xml()})


@pytest.mark.parametrize(
    "to", ["bob@example.org/phone", "", "x" * 3072, "not a jid", "example.org"]
)
def test_a_key_transport_goes_to_a_bare_jid(to: str) -> None:
    with pytest.raises(WireError, match=r"^to: "):
        KeyTransportRequest.from_json({"to": to, "xml": encrypted_xml(payload=False)})


def test_a_key_transport_request_with_unknown_fields_or_bad_xml_is_refused() -> None:
    xml = encrypted_xml(payload=False)
    with pytest.raises(WireError, match="unknown fields: body, id"):
        KeyTransportRequest.from_json({"to": "bob@example.org", "xml": xml, "id": 1, "body": ""})
    with pytest.raises(WireError, match="not well-formed"):
        KeyTransportRequest.from_json({"to": "bob@example.org", "xml": "<encrypted"})
    with pytest.raises(WireError):
        KeyTransportRequest.from_json({"to": "bob@example.org"})
