"""Identifiers from operators and the network: canonical forms and clear refusals."""

from __future__ import annotations

import pytest

from cmaas.identifiers import (
    InvalidIdentifier,
    parse_address,
    parse_app_id,
    parse_bare_jid,
    parse_callback_url,
    parse_display_name,
    parse_e164,
    parse_email,
    parse_network,
)


@pytest.mark.parametrize("value", ["a", "parichay-otp", "bank.alerts_2", "0" * 64])
def test_app_ids(value: str) -> None:
    assert parse_app_id(value) == value


@pytest.mark.parametrize("value", ["", "A", "-lead", ".lead", "has space", "x" * 65, "ü", "a@b"])
def test_bad_app_ids(value: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_app_id(value)


def test_emails_are_lowercased() -> None:
    assert parse_email(" Alice.Smith@Example.ORG ") == "alice.smith@example.org"
    with pytest.raises(InvalidIdentifier):
        parse_email("alice@@example.org")


def test_mobiles_become_e164() -> None:
    assert parse_e164("+91 98765-43210") == "+919876543210"
    assert parse_e164("+44 7911 123456") == "+447911123456"
    for bad in ("9876543210", "+91 123", "+1 555", "+" + "9" * 40, "+91abcdefghij"):
        with pytest.raises(InvalidIdentifier):
            parse_e164(bad)


def test_address_kinds() -> None:
    assert parse_address("Bob@Example.org") == ("email", "bob@example.org")
    assert parse_address("+919876543210") == ("mobile", "+919876543210")
    with pytest.raises(InvalidIdentifier, match="international form"):
        parse_address("98765 43210")
    with pytest.raises(InvalidIdentifier, match="email address or a mobile"):
        parse_address("bob")


def test_jids() -> None:
    assert parse_bare_jid("Bob@Example.ORG") == "bob@example.org"
    for bad in ("example.org", "bob@example.org/phone", "a@b@c", "", "x" * 3000):
        with pytest.raises(InvalidIdentifier):
            parse_bare_jid(bad)


def test_networks() -> None:
    assert str(parse_network("203.0.113.7")) == "203.0.113.7/32"
    assert str(parse_network("2001:db8::/32")) == "2001:db8::/32"
    with pytest.raises(InvalidIdentifier, match=r"did you mean 10\.0\.0\.0/8"):
        parse_network("10.1.2.3/8")
    for bad in ("10.0.0.0/33", "300.1.1.1", "bad", "", "fe80::/129"):
        with pytest.raises(InvalidIdentifier):
            parse_network(bad)


def test_callback_urls() -> None:
    assert parse_callback_url("https://app.example.org/cb?x=1") == "https://app.example.org/cb?x=1"
    for bad in (
        "ftp://a.example/",
        "https:///path",
        "https://u:p@a.example/",
        "//a.example",
        "https://a.example/" + "x" * 2100,
        "https://a.example/\x00",
    ):
        with pytest.raises(InvalidIdentifier):
            parse_callback_url(bad)


def test_display_names() -> None:
    assert parse_display_name("  State Bank  ") == "State Bank"
    for bad in ("", "   ", "x" * 101, "line\nbreak", "rtl\u202eoverride"):
        with pytest.raises(InvalidIdentifier):
            parse_display_name(bad)
