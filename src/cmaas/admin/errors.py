"""Errors of the administration service."""

from __future__ import annotations

from cmaas.errors import CmaasError, InputRejected

__all__ = ["AdminError", "InvalidInput"]


class AdminError(CmaasError):
    """Root of the administration service's errors."""


class InvalidInput(AdminError, InputRejected):
    """One or more submitted fields were refused; nothing was changed."""
