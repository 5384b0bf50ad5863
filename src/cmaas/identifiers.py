"""Parsing and normalising the identifiers that arrive from operators and the network.

Every function either returns the canonical form or raises :class:`InvalidIdentifier`
with a message fit to show to the person who typed the value.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Literal
from urllib.parse import urlsplit

import email_validator
import phonenumbers
from slixmpp import JID
from slixmpp.jid import InvalidJID

from cmaas.errors import CmaasError

__all__ = [
    "MAX_APP_ID_LENGTH",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_URL_LENGTH",
    "AddressKind",
    "InvalidIdentifier",
    "IpNetwork",
    "parse_address",
    "parse_app_id",
    "parse_bare_jid",
    "parse_callback_url",
    "parse_display_name",
    "parse_domain",
    "parse_e164",
    "parse_email",
    "parse_network",
]

MAX_APP_ID_LENGTH = 64
MAX_DISPLAY_NAME_LENGTH = 100
MAX_URL_LENGTH = 2048
# RFC 7622 caps each JID part at 1023 octets; a whole bare JID never needs more.
_MAX_JID_LENGTH = 2047

_APP_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")

AddressKind = Literal["email", "mobile"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidIdentifier(CmaasError, ValueError):
    """A value is not a valid identifier of the expected kind."""


def parse_app_id(value: str) -> str:
    """Check an app id, which becomes the localpart of the app's JID.

    Raises:
        InvalidIdentifier: Not 1-64 of lowercase letters, digits, ``-``, ``_``, ``.``,
            starting with a letter or digit.
    """
    if not 0 < len(value) <= MAX_APP_ID_LENGTH or not _APP_ID.fullmatch(value):
        raise InvalidIdentifier(
            f"app id {_shorten(value)!r} must be 1 to {MAX_APP_ID_LENGTH} lowercase letters,"
            " digits, '-', '_' or '.', starting with a letter or digit"
        )
    return value


def parse_domain(value: str) -> str:
    """Normalise a domain name such as a component domain.

    Raises:
        InvalidIdentifier: Not a valid JID domainpart, or it has a local or resource part.
    """
    jid = _parse_jid(value)
    if jid.user or jid.resource:
        raise InvalidIdentifier(f"{_shorten(value)!r} must be a bare domain such as gw.example.org")
    return str(jid.domain)


def parse_bare_jid(value: str) -> str:
    """Normalise a bare JID with a localpart, such as ``alice@example.org``.

    Raises:
        InvalidIdentifier: Not a valid JID, or it lacks a localpart or has a resource.
    """
    jid = _parse_jid(value)
    if not jid.user:
        raise InvalidIdentifier(f"{_shorten(value)!r} must be a JID such as alice@example.org")
    if jid.resource:
        raise InvalidIdentifier(f"{_shorten(value)!r} must be a bare JID, without '/resource'")
    return str(jid.bare)


def parse_email(value: str) -> str:
    """Normalise an email address to lowercase.

    Raises:
        InvalidIdentifier: Not a syntactically valid address (no DNS lookup is made).
    """
    try:
        checked = email_validator.validate_email(value.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a valid email address: {exc}") from exc
    return str(checked.normalized).lower()


def parse_e164(value: str) -> str:
    """Normalise a mobile number to E.164, e.g. ``+919876543210``.

    The number must carry its country code: a gateway serves many countries and
    guessing one would bind messages to the wrong person.

    Raises:
        InvalidIdentifier: Not a valid number in international form.
    """
    text = value.strip()
    if not text.startswith("+") or len(text) > 32:
        raise InvalidIdentifier(
            f"{_shorten(value)!r} must be a mobile number in international form, e.g. +919876543210"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def parse_address(value: str) -> tuple[AddressKind, str]:
    """Normalise a directory address: an email or an E.164 mobile number.

    Raises:
        InvalidIdentifier: Neither a valid email nor a valid E.164 number.
    """
    if value.strip().startswith("+"):
        return "mobile", parse_e164(value)
    if "@" in value:
        return "email", parse_email(value)
    if any(ch.isdigit() for ch in value):
        raise InvalidIdentifier(
            f"{_shorten(value)!r}: write mobile numbers in international form, with + and"
            " the country code, e.g. +919876543210"
        )
    raise InvalidIdentifier(
        f"{_shorten(value)!r} must be an email address or a mobile number such as +919876543210"
    )


def parse_network(value: str) -> IpNetwork:
    """Parse an IPv4/IPv6 address or CIDR block; a bare address means that host only.

    Host bits must be zero: silently widening ``10.1.2.3/8`` to ``10.0.0.0/8`` would
    let in far more than the operator meant.

    Raises:
        InvalidIdentifier: Not an address or CIDR, or host bits are set.
    """
    text = value.strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            widened = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidIdentifier(
                f"{_shorten(value)!r} is not an IP address or CIDR block such as 203.0.113.0/24"
            ) from exc
        raise InvalidIdentifier(
            f"{_shorten(value)!r} has host bits set; did you mean {widened}?"
        ) from exc


def parse_callback_url(value: str) -> str:
    """Check a webhook URL: absolute ``https://`` (or ``http://`` for TLS-terminating proxies).

    Raises:
        InvalidIdentifier: Not an absolute http(s) URL with a host, or too long.
    """
    text = value.strip()
    if len(text) > MAX_URL_LENGTH:
        raise InvalidIdentifier(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
        raise InvalidIdentifier(
            f"{_shorten(value)!r} must be an absolute http(s) URL without credentials,"
            " e.g. https://app.example.org/cmaas/events"
        )
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in text):
        raise InvalidIdentifier("callback URL must not contain spaces or control characters")
    return text


def parse_display_name(value: str) -> str:
    """Check a human-readable name shown to recipients.

    Raises:
        InvalidIdentifier: Empty, longer than 100 characters, or with control characters.
    """
    text = value.strip()
    if not 0 < len(text) <= MAX_DISPLAY_NAME_LENGTH:
        raise InvalidIdentifier(f"display name must be 1 to {MAX_DISPLAY_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise InvalidIdentifier("display name must not contain control characters")
    return text


def _parse_jid(value: str) -> JID:
    text = value.strip()
    if not text or len(text) > _MAX_JID_LENGTH:
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a valid JID")
    try:
        return JID(text)
    except InvalidJID as exc:
        raise InvalidIdentifier(f"{_shorten(value)!r} is not a valid JID: {exc}") from exc


def _shorten(value: str, limit: int = 80) -> str:
    """Keep error messages readable when someone pastes a megabyte into a field."""
    return value if len(value) <= limit else value[:limit] + "..."
