"""The device's ways to messages that another client of the same account took.

The server hands a chat message to the account's most available client. When that is
another client (Gajim, Conversations, Profanity beside the device), the device gets a
carbon copy while it is online (XEP-0280), and catches up from the account's archive
(XEP-0313) when it comes back. Both are checked to come from the device's own account:
a copy or an archive result from anyone else is ignored, since its inner sender would
not be vouched for by the server.
"""

from __future__ import annotations

import json
from pathlib import Path

from slixmpp import JID, Message

from cmaas.device.errors import DeviceFileError
from cmaas.private_files import read_private, write_private
from cmaas.xmpp.stanzas import ENVELOPE_NAMESPACE

__all__ = ["ArchiveCursor", "archived_envelope", "carried_envelope"]

# A clock difference between the device and its server must not skip a message.
_SKEW_MS = 120_000


class ArchiveCursor:
    """When the device last caught up from the archive, in milliseconds since the epoch.

    A device catches up from there, less a margin for clock skew; a new device starts
    from its first session, since nothing before it can be sealed to it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def since_ms(self) -> int | None:
        """Raises: DeviceFileError: The file is unreadable or too open."""
        data = read_private(self._path, max_bytes=1024, error=DeviceFileError)
        if data is None:
            return None
        try:
            value = json.loads(data)["caught_up_ms"]
        except (ValueError, KeyError, TypeError):
            return None  # a damaged cursor costs one catch-up from the first session
        return max(0, value - _SKEW_MS) if type(value) is int else None

    def caught_up(self, at_ms: int) -> None:
        """Raises: DeviceFileError."""
        write_private(
            self._path, json.dumps({"caught_up_ms": at_ms}).encode(), error=DeviceFileError
        )


def carried_envelope(carbon: Message, own: JID) -> Message | None:
    """The sealed message a carbon copy carries, if the copy comes from ``own`` account."""
    if carbon["from"].bare != own.bare:
        return None
    inner: Message = carbon["carbon_received"]
    return inner if _has_envelope(inner) else None


def archived_envelope(result: Message, own: JID) -> Message | None:
    """The sealed message an archive result holds, if the result comes from ``own``
    account's archive (no ``from`` means the account itself)."""
    if result["from"] and result["from"].bare != own.bare:
        return None
    inner: Message = result["mam_result"]["forwarded"]["stanza"]
    return inner if _has_envelope(inner) and inner["type"] != "error" else None


def _has_envelope(message: Message) -> bool:
    return message.xml.find(f"{{{ENVELOPE_NAMESPACE}}}envelope") is not None
