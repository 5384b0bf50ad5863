"""Turning what devices and servers report about a message into its statuses."""

from __future__ import annotations

from collections.abc import Callable

from cmaas.clock import now_ms
from cmaas.keystore import (
    MessageStore,
)
from cmaas.lifecycle import (
    MessageStatus,
    StatusChange,
)

__all__ = ["StatusTracker"]

# Bounce conditions that say the recipient account does not exist, put plainly.
_EXPLAINED = {
    "service-unavailable": "the recipient's account does not exist or refuses messages",
    "item-not-found": "the recipient's account does not exist",
    "remote-server-not-found": "the recipient's server cannot be reached",
    "not-allowed": "the recipient's server does not accept messages from this gateway",
    "forbidden": "the recipient's server does not accept messages from this gateway",
    "resource-constraint": "the recipient's offline storage is full",
}


class StatusTracker:
    """Records receipts (``delivered``), displayed markers (``read``) and bounces
    (``failed``) per device. Only the message's recipient may report on it: a report
    from anyone else is ignored by the store."""

    def __init__(self, store: MessageStore, clock_ms: Callable[[], int] = now_ms) -> None:
        self._store = store
        self._clock_ms = clock_ms

    async def delivered(self, app_id: str, message_id: str, reporter: str, device: str) -> None:
        await self._record(app_id, message_id, MessageStatus.DELIVERED, reporter, device)

    async def read(self, app_id: str, message_id: str, reporter: str, device: str) -> None:
        await self._record(app_id, message_id, MessageStatus.READ, reporter, device)

    async def bounced(self, app_id: str, message_id: str, reporter: str, condition: str) -> None:
        explained = _EXPLAINED.get(condition, "the IM server returned the message")
        detail = f"bounced: {condition or 'undefined-condition'} ({explained})"
        await self._record(app_id, message_id, MessageStatus.FAILED, reporter, "", detail)

    async def _record(
        self,
        app_id: str,
        message_id: str,
        status: MessageStatus,
        reporter: str,
        device: str,
        detail: str = "",
    ) -> None:
        change = StatusChange(
            app_id, message_id, status, self._clock_ms(), device, detail, reporter
        )
        await self._store.record([change])
