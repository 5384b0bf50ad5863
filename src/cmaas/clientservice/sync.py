"""A blocking face on :class:`GatewayClient`, for apps that are not async.

The client runs on an event loop of its own in a background thread; each call waits
for its result there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from cmaas.clientservice.client import ClientConfig, GatewayClient, Sent
from cmaas.lifecycle import (
    Priority,
)
from cmaas.wire import Accepted, MessageView

__all__ = ["SyncGatewayClient"]

T = TypeVar("T")


class SyncGatewayClient:
    """``with SyncGatewayClient(config) as client: client.send(to, otp="123456")``.

    Every method raises what its :class:`GatewayClient` counterpart raises.
    """

    def __init__(self, config: ClientConfig, *, timeout_s: float | None = None) -> None:
        self._timeout = timeout_s or config.retry_for_s + 30
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="cmaas client", daemon=True
        )
        self._thread.start()
        self._client = GatewayClient(config)
        try:
            self._call(self._client.start())
        except BaseException:
            self.close()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self._timeout)

    @property
    def app_jid(self) -> str:
        return self._client.app_jid

    def send(
        self,
        to: str,
        *,
        text: str | None = None,
        otp: str | None = None,
        purpose: str = "login",
        priority: Priority | None = None,
        ttl_s: int = 600,
        auto_delete_s: int | None = None,
        message_id: str | None = None,
    ) -> Accepted:
        return self._call(
            self._client.send(
                to,
                text=text,
                otp=otp,
                purpose=purpose,
                priority=priority,
                ttl_s=ttl_s,
                auto_delete_s=auto_delete_s,
                message_id=message_id,
            )
        )

    def send_many(
        self,
        recipients: Sequence[str],
        *,
        text: str | None = None,
        otp: str | None = None,
        purpose: str = "login",
        priority: Priority | None = None,
        ttl_s: int = 600,
    ) -> list[Sent]:
        return self._call(
            self._client.send_many(
                recipients, text=text, otp=otp, purpose=purpose, priority=priority, ttl_s=ttl_s
            )
        )

    def status(self, message_id: str) -> MessageView:
        return self._call(self._client.status(message_id))

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SyncGatewayClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
