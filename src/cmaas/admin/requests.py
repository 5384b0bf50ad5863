"""What an operator asks the administration service for, as typed text.

Both the ad-hoc command forms and the ``cmaas admin`` CLI deliver values as text;
:mod:`cmaas.admin.service` parses and checks them in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cmaas.lifecycle import Priority

__all__ = [
    "DirectoryRequest",
    "PlanRequest",
    "RegisterAppRequest",
    "RotateRequest",
    "UpdateAppRequest",
]


@dataclass(frozen=True, slots=True)
class RegisterAppRequest:
    app_id: str
    display_name: str
    plan: str = "default"
    networks: Sequence[str] = ()
    callback_url: str = ""
    jids: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class UpdateAppRequest:
    """``None`` leaves a field unchanged; an empty callback URL removes it."""

    app_id: str
    display_name: str | None = None
    plan: str | None = None
    networks: Sequence[str] | None = None
    callback_url: str | None = None
    jids: Sequence[str] | None = None
    suspended: bool | None = None


@dataclass(frozen=True, slots=True)
class RotateRequest:
    app_id: str
    grace_seconds: str = "86400"


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """``daily_quota`` empty or ``0`` means no daily cap."""

    name: str
    sustained_per_second: str
    burst: str
    daily_quota: str = ""
    priorities: Sequence[str] = tuple(Priority)


@dataclass(frozen=True, slots=True)
class DirectoryRequest:
    """An empty ``jid`` unbinds the address."""

    address: str
    jid: str = ""
