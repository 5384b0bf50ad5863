"""Ad-hoc command errors, and the one place that maps them to XMPP errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from slixmpp.exceptions import XMPPError

from cmaas.errors import CmaasError

__all__ = [
    "AdhocError",
    "BadAction",
    "BadPayload",
    "BadSessionId",
    "CommandNotFound",
    "Forbidden",
    "SessionExpired",
    "TooManySessions",
    "maps_adhoc_errors",
]

log = logging.getLogger(__name__)

COMMANDS_NS = "http://jabber.org/protocol/commands"


class AdhocError(CmaasError):
    """Root of ad-hoc protocol errors; each subclass names its XMPP error."""

    condition: ClassVar[str] = "bad-request"
    extension: ClassVar[str | None] = None
    """XEP-0050 application condition, in the commands namespace."""


class CommandNotFound(AdhocError):
    condition = "item-not-found"


class Forbidden(AdhocError):
    condition = "forbidden"


class BadSessionId(AdhocError):
    extension = "bad-sessionid"


class SessionExpired(AdhocError):
    condition = "not-allowed"
    extension = "session-expired"


class BadAction(AdhocError):
    extension = "bad-action"


class BadPayload(AdhocError):
    extension = "bad-payload"


class TooManySessions(AdhocError):
    condition = "resource-constraint"


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def maps_adhoc_errors(handler: F) -> F:
    """Turn :class:`AdhocError` into the matching XMPP error reply.

    Anything unexpected becomes ``internal-server-error``; it is logged with its
    traceback but without the stanza, which may hold secrets typed into a form.
    """

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except AdhocError as exc:
            raise XMPPError(
                exc.condition,  # type: ignore[arg-type]
                text=str(exc),
                extension=exc.extension,
                extension_ns=COMMANDS_NS if exc.extension else None,
            ) from exc
        except XMPPError:
            raise
        except Exception as exc:
            log.exception("ad-hoc command failed")
            raise XMPPError("internal-server-error", text="internal error") from exc

    return wrapper  # type: ignore[return-value]
