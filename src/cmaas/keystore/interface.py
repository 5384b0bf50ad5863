"""The keystore's async interface: what the gateway needs from storage, nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cmaas.keystore.models import (
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    DirectoryEntry,
    IssuedCredentials,
    NewApp,
    Plan,
)

__all__ = ["Keystore"]


class Keystore(Protocol):
    """Storage of app accounts, plans and the directory.

    Every read goes to the database, so a change made by another process (the
    ``cmaas admin`` CLI, or another gateway instance) is seen by the next call.
    """

    async def close(self) -> None: ...

    async def set_plan(self, plan: Plan) -> Plan:
        """Create or replace a plan."""
        ...

    async def get_plan(self, name: str) -> Plan:
        """Raises: PlanNotFound."""
        ...

    async def list_plans(self) -> Sequence[Plan]: ...

    async def create_app(self, new_app: NewApp, credentials: IssuedCredentials) -> App:
        """Raises: AppAlreadyExists, PlanNotFound, JidAlreadyBound, ClientIdTaken."""
        ...

    async def get_app(self, app_id: str) -> App:
        """Raises: AppNotFound."""
        ...

    async def list_apps(self) -> Sequence[App]: ...

    async def update_app(self, app_id: str, changes: AppChanges) -> App:
        """Raises: AppNotFound, PlanNotFound, JidAlreadyBound."""
        ...

    async def rotate_credentials(
        self, app_id: str, credentials: IssuedCredentials, old_not_after: int
    ) -> App:
        """Add new credentials; existing ones end at ``old_not_after`` (unix seconds).

        Raises: AppNotFound.
        """
        ...

    async def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        """Raises: AuthenticationFailed."""
        ...

    async def app_for_jid(self, jid: str) -> str | None:
        """The app a bare JID is bound to, if any."""
        ...

    async def app_counters(self, app_id: str) -> AppCounters: ...

    async def set_directory(self, address: str, kind: str, jid: str) -> DirectoryEntry: ...

    async def remove_directory(self, address: str) -> bool:
        """Returns whether an entry was removed."""
        ...

    async def resolve_address(self, address: str) -> str | None: ...

    async def rewrap_hmac_keys(self) -> int:
        """Re-encrypt every stored HMAC key under the current master key.

        Returns: how many keys were re-encrypted.
        Raises: MasterKeyMismatch.
        """
        ...
