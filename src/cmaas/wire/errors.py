"""The wire contract's one error."""

from __future__ import annotations

from cmaas.errors import CmaasError

__all__ = ["WireError"]


class WireError(CmaasError, ValueError):
    """A value received from the other side does not have the shape the contract gives;
    the message says which field and why, in words fit to send back."""
