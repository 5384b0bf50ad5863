"""The error type of cmaas.devservers."""

from __future__ import annotations

from cmaas.errors import CmaasError


class DevServerError(CmaasError):
    """A development server failed to install, start, stop or register a user.

    The message says what failed and, when there is one, ends with the tail of the
    server's log.
    """
