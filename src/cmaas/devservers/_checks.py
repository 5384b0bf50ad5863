"""Checks on the names, secrets and paths pasted into the server configs."""

from __future__ import annotations

import re
from pathlib import Path

from cmaas.devservers._errors import DevServerError

_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
# Secrets and paths are pasted into Lua, YAML and shell strings: refuse anything that
# would need quoting there rather than escape it three different ways.
_SECRET_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_PATH_RE = re.compile(r"^[A-Za-z0-9._/+=@,-]+$")
_USERNAME_RE = re.compile(r"^[a-z0-9._=+-]+$")


def check_domain(domain: str, what: str) -> None:
    """Raise ValueError unless ``domain`` is a plain lower-case DNS name."""
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"{what} {domain!r} is not a lower-case DNS name")


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` can be pasted into Lua, YAML and shell as is."""
    if not _SECRET_RE.match(secret):
        raise ValueError("component_secret may only contain A-Z a-z 0-9 . _ ~ + / = -")


def check_username(username: str) -> None:
    """Raise ValueError unless ``username`` is a simple lower-case localpart."""
    if not _USERNAME_RE.match(username):
        raise ValueError(f"username {username!r}: use lower-case letters, digits and ._=+-")


def check_path(path: Path) -> None:
    """Raise DevServerError if ``path`` would need quoting in a config file."""
    if not _PATH_RE.match(str(path)):
        raise DevServerError(f"path {path} contains characters unsafe in a config file")
