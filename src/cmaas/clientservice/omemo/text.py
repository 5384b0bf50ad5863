"""What a person's OMEMO client shows for a message.

A legacy-OMEMO message carries a body and nothing else: no signed header with a kind or
an expiry, so an OTP states its purpose and validity in words. Times are in UTC, since
the sender does not know the person's time zone.
"""

from __future__ import annotations

import datetime

from cmaas.envelope import Content, FileContent, OtpContent, TextContent

__all__ = ["omemo_body"]


def _validity(created_ms: int, expires_ms: int) -> str:
    minutes = max(1, round((expires_ms - created_ms) / 60_000))
    until = datetime.datetime.fromtimestamp(expires_ms / 1000, tz=datetime.UTC)
    span = f"{minutes} minute{'s' if minutes != 1 else ''}"
    if minutes >= 24 * 60:
        return f"valid until {until:%Y-%m-%d %H:%M} UTC"
    return f"valid for {span}, until {until:%H:%M} UTC"


def omemo_body(content: Content, created_ms: int, expires_ms: int) -> str:
    """The body an OMEMO client shows for ``content``.

    Raises: ValueError: A file: OMEMO clients fetch files from ``aesgcm://`` URLs
        (XEP-0454), which CMaaS blobs are not; files reach CMaaS devices only.
    """
    if isinstance(content, OtpContent):
        return (
            f"Your {content.purpose} code: {content.code}\n"
            f"It is {_validity(created_ms, expires_ms)}. Never share it with anyone."
        )
    if isinstance(content, TextContent):
        return content.text
    if isinstance(content, FileContent):
        raise ValueError("files reach CMaaS devices only, not OMEMO clients")
    raise TypeError(f"unknown content: {type(content).__name__}")
