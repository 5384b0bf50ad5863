"""What a sealed message says: a text, a one-time password, or a file reference.

The content is canonical JSON with a ``kind`` that must equal the header's kind.
Files travel as encrypted blobs; the content carries the blob's URL, the key that
decrypts it and the SHA-256 of the plaintext file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cmaas.envelope.encoding import Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding, OversizeInput
from cmaas.envelope.padding import MAX_PLAINTEXT

__all__ = [
    "Content",
    "FileContent",
    "Kind",
    "OtpContent",
    "TextContent",
    "content_from_json",
    "content_kind",
    "content_to_json",
]

Kind = Literal["text", "otp", "file"]
KINDS: tuple[Kind, ...] = ("text", "otp", "file")
_OTP_CODE = re.compile(r"[0-9A-Za-z]{4,12}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 16_000


@dataclass(frozen=True, slots=True)
class TextContent:
    text: str


@dataclass(frozen=True, slots=True)
class OtpContent:
    """A one-time password: 4 to 12 ASCII letters or digits, and what it is for."""

    code: str
    purpose: str


@dataclass(frozen=True, slots=True)
class FileContent:
    name: str
    media_type: str
    size: int
    url: str
    file_key: bytes
    sha256: str


Content = TextContent | OtpContent | FileContent


def content_kind(content: Content) -> Kind:
    if isinstance(content, TextContent):
        return "text"
    if isinstance(content, OtpContent):
        return "otp"
    return "file"


def content_to_json(content: Content) -> bytes:
    """Canonical JSON of ``content``, checked as :func:`content_from_json` would.

    Raises:
        MalformedEncoding: A field is out of bounds (so nothing unreadable is sent).
        OversizeInput: The content is over :data:`MAX_PLAINTEXT` bytes.
    """
    value: dict[str, object]
    if isinstance(content, TextContent):
        value = {"kind": "text", "text": content.text}
    elif isinstance(content, OtpContent):
        value = {"kind": "otp", "code": content.code, "purpose": content.purpose}
    else:
        value = {
            "kind": "file",
            "name": content.name,
            "media_type": content.media_type,
            "size": content.size,
            "url": content.url,
            "file_key": b64url(content.file_key),
            "sha256": content.sha256,
        }
    data = canonical_json(value)
    if len(data) > MAX_PLAINTEXT:
        raise OversizeInput(f"content is {len(data)} bytes; the limit is {MAX_PLAINTEXT}")
    # The value holds only strings and integers, which canonical_json has just checked
    # and which read back from JSON unchanged: checking it is checking the bytes.
    _content_from_value(value)
    return data


def content_from_json(data: bytes) -> Content:
    """Raises: MalformedEncoding, OversizeInput: Not a valid content object."""
    return _content_from_value(parse_json(data, max_bytes=MAX_PLAINTEXT, what="content"))


def _content_from_value(value: object) -> Content:
    """Raises: MalformedEncoding: Not a valid content object (already parsed from JSON)."""
    kind = Fields(value, "content", frozenset({"kind"}), frozenset(_FIELDS_ANY)).choice(
        "kind", KINDS
    )
    if kind == "text":
        fields = Fields(value, "content", frozenset({"kind", "text"}))
        return TextContent(fields.text("text", max_length=_MAX_TEXT))
    if kind == "otp":
        fields = Fields(value, "content", frozenset({"kind", "code", "purpose"}))
        code = fields.text("code", max_length=12)
        if not _OTP_CODE.fullmatch(code):
            raise MalformedEncoding("content.code must be 4 to 12 ASCII letters or digits")
        return OtpContent(code, fields.text("purpose", max_length=200))
    fields = Fields(value, "content", frozenset(_FILE_FIELDS))
    sha256 = fields.text("sha256", max_length=64, min_length=64)
    if not _SHA256_HEX.fullmatch(sha256):
        raise MalformedEncoding("content.sha256 must be 64 lowercase hex digits")
    url = fields.text("url", max_length=2048)
    if not url.startswith("https://") and not url.startswith("http://"):
        raise MalformedEncoding("content.url must be an http(s) URL")
    return FileContent(
        name=fields.text("name", max_length=255),
        media_type=fields.text("media_type", max_length=255),
        size=fields.integer("size", low=0, high=2**40),
        url=url,
        file_key=fields.binary("file_key", size=32),
        sha256=sha256,
    )


_FILE_FIELDS = ("kind", "name", "media_type", "size", "url", "file_key", "sha256")
_FIELDS_ANY = ("text", "code", "purpose", *_FILE_FIELDS[1:])
