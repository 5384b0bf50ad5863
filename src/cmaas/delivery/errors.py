"""Refusals of the delivery engine, each with its HTTP status and stable code
(``docs/openapi.json`` lists them).

The HTTP API and the ad-hoc commands both turn these into their own error forms, in
one place each; the engine itself never speaks HTTP or XMPP.
"""

from __future__ import annotations

from typing import ClassVar

from cmaas.errors import CmaasError

__all__ = [
    "AppSuspended",
    "Backpressure",
    "ForbiddenAddress",
    "InvalidRequest",
    "MessageIdConflict",
    "NotFound",
    "PayloadTooLarge",
    "PriorityNotAllowed",
    "QuotaExceeded",
    "RateLimited",
    "Refusal",
    "Unauthenticated",
    "Unavailable",
    "UnknownOmemoDevice",
    "UnknownSigningKey",
]


class Refusal(CmaasError):
    """Root of the engine's refusals.

    Attributes:
        status: The HTTP status that answers it.
        code: The stable machine-readable ``error`` code of the answer.
        retry_after: Seconds after which trying again may succeed, where that holds.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class InvalidRequest(Refusal):
    """The body or a parameter is malformed, or the envelope disagrees with it."""


class UnknownSigningKey(InvalidRequest):
    """The envelope is signed by a key the app has not registered."""

    code = "unknown_signing_key"


class UnknownOmemoDevice(InvalidRequest):
    """The OMEMO element is sealed by a device the app has not published."""

    code = "unknown_omemo_device"


class Unauthenticated(Refusal):
    """Unknown client, wrong secret, bad signature, stale timestamp or replayed nonce."""

    status = 401
    code = "unauthenticated"


class ForbiddenAddress(Refusal):
    """The request came from an address outside the app's allow-list."""

    status = 403
    code = "forbidden_address"


class AppSuspended(Refusal):
    status = 403
    code = "app_suspended"


class PriorityNotAllowed(Refusal):
    """The app's plan does not allow this priority."""

    status = 403
    code = "priority_not_allowed"


class NotFound(Refusal):
    status = 404
    code = "not_found"


class MessageIdConflict(Refusal):
    """The message id was used before with a different request."""

    status = 409
    code = "message_id_conflict"


class PayloadTooLarge(Refusal):
    status = 413
    code = "payload_too_large"


class RateLimited(Refusal):
    """Over the plan's sustained rate and burst; ``retry_after`` says when."""

    status = 429
    code = "rate_limited"


class QuotaExceeded(Refusal):
    """The plan's daily quota is used up until the next UTC day."""

    status = 429
    code = "quota_exceeded"


class Backpressure(Refusal):
    """The outbox is too deep for this priority; bulk is refused first, never high."""

    status = 503
    code = "backpressure"


class Unavailable(Refusal):
    """The gateway is not connected to its IM server, and the request cannot wait in the
    outbox (a key transport)."""

    status = 503
    code = "im_server_unavailable"
