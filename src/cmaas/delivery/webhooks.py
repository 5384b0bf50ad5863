"""Signed webhooks: each app's status events POSTed to its callback URL, in order.

Body: ``{"app_id": ..., "events": [...]}`` (up to 100 events, each as in ``GET /v1/events``). Header
``X-CMAAS-Signature: t={unix seconds},v1={hex HMAC-SHA256(hmac_key, t + "." + body)}``
under the app's newest HMAC key. Anything but a 2xx within the timeout is retried with
backoff until the event is 24 hours old; the cursor is kept in the database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp
import yarl

from cmaas import __version__
from cmaas.delivery.destinations import is_public, literal_address
from cmaas.delivery.events import ConsumerFailed, CursorConsumer
from cmaas.keystore import App, Keystore, StatusEvent
from cmaas.wire.signing import webhook_signature

__all__ = ["WebhookConsumer"]

log = logging.getLogger(__name__)


class WebhookConsumer(CursorConsumer):
    consumer = "webhook"

    def __init__(
        self,
        keystore: Keystore,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
        max_age_s: float = 86_400.0,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        deny_private: bool = False,
    ) -> None:
        super().__init__(
            keystore,
            max_age_s=max_age_s,
            first_backoff_s=first_backoff_s,
            max_backoff_s=max_backoff_s,
            clock=clock,
        )
        self._session = session
        # Names are checked by the session's resolver (PublicOnlyResolver); an address
        # in the URL is never resolved, so it is checked here.
        self._deny_private = deny_private
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def wants(self, app: App) -> bool:
        return bool(app.callback_url)

    async def deliver(self, app_id: str, events: Sequence[StatusEvent]) -> bool:
        app = await self.app(app_id)
        if not app.callback_url:
            return False
        body = json.dumps(
            {"app_id": app_id, "events": [event.wire().to_json() for event in events]},
            separators=(",", ":"),
        ).encode()
        if self._deny_private:
            literal = literal_address(yarl.URL(app.callback_url).host or "")
            if literal is not None and not is_public(literal):
                reason = f"the callback URL's address {literal} is private"
                log.warning(
                    "webhook for %s refused: %s (CMAAS_WEBHOOK_DENY_PRIVATE)", app_id, reason
                )
                raise ConsumerFailed(reason)
        key = (await self._keystore.hmac_keys(app_id))[0]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"CMaaS/{__version__}",
            "X-CMAAS-Signature": webhook_signature(key, int(self._clock()), body),
        }
        try:
            async with self._session.post(
                app.callback_url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return True
                reason = f"HTTP {response.status} from the callback URL"
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        log.warning("webhook for %s failed (%s); will retry", app_id, reason)
        raise ConsumerFailed(reason)
