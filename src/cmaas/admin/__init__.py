"""The administration service shared by the ad-hoc commands and the ``cmaas admin`` CLI."""

from cmaas.admin.errors import AdminError, InvalidInput
from cmaas.admin.requests import (
    DirectoryRequest,
    PlanRequest,
    RegisterAppRequest,
    RotateRequest,
    UpdateAppRequest,
)
from cmaas.admin.service import AdminService, AppDetails, DirectoryChange, IssuedApp

__all__ = [
    "AdminError",
    "AdminService",
    "AppDetails",
    "DirectoryChange",
    "DirectoryRequest",
    "InvalidInput",
    "IssuedApp",
    "PlanRequest",
    "RegisterAppRequest",
    "RotateRequest",
    "UpdateAppRequest",
]
