"""The HTTP API's routes over a keystore, in-process, for the tests that call them: the
parts of the delivery engine a request reaches, with no dispatcher or IM server behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from cmaas.api import ClientAddresses, api_routes
from cmaas.api.door import Door
from cmaas.delivery.auth import RequestAuthenticator
from cmaas.delivery.events import EventHub
from cmaas.delivery.metrics import GatewayMetrics
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import SubmissionService
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import Keystore, OutboxEntry
from cmaas.lifecycle import Priority

DOMAIN = "gateway.cmaas.test"
"""The component domain the harness's gateway serves; recipients are on ``cmaas.test``."""


def idle_metrics(feedback: tuple[int, bool] = (0, False)) -> GatewayMetrics:
    """Metrics of a gateway with nothing queued or in flight and its link up
    (``feedback``: the feedback in progress, and whether the stream is left unread)."""
    return GatewayMetrics(
        depth=lambda: dict.fromkeys(Priority, 0),
        inflight=lambda: 0,
        resent=lambda: 0,
        link=lambda: (1, 1),
        pings=lambda: (0, 0),
        consumers={},
        feedback=lambda: feedback,
    )


def routes_over(
    keystore: Keystore,
    metrics: GatewayMetrics,
    *,
    enqueue: Callable[[Sequence[OutboxEntry]], None] = lambda entries: None,
    door: Door | None = None,
) -> list[web.RouteDef]:
    """The API's routes, admitting messages into ``keystore`` and handing the stored
    ones to ``enqueue``; an empty outbox for back-pressure."""
    resolver = RecipientResolver(keystore, frozenset({"cmaas.test"}))
    submissions = SubmissionService(
        keystore,
        resolver,
        enqueue,
        lambda: dict.fromkeys(Priority, 0),
        component_domain=DOMAIN,
    )
    hub = EventHub(keystore)
    keystore.messages.listen(hub.on_events)
    messaging = Messaging(
        keystore, KeyDirectory(keystore), resolver, submissions, hub, component_domain=DOMAIN
    )
    return api_routes(
        messaging, RequestAuthenticator(keystore), ClientAddresses([]), metrics, door=door
    )
