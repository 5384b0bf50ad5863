"""``GET /healthz``: liveness with the component link's state, for load balancers and ops."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from cmaas import __version__
from cmaas.lifecycle import (
    Priority,
)
from cmaas.xmpp.link import LinkState, XmppLink

__all__ = ["health_routes"]


def health_routes(
    link: XmppLink, depth: Callable[[], Mapping[Priority, int]] | None = None
) -> list[web.RouteDef]:
    async def healthz(_request: web.Request) -> web.Response:
        up = link.state is LinkState.CONNECTED
        # A standby serves the HTTP API while another instance holds the component.
        serving = up or link.state is LinkState.STANDBY
        queued = depth() if depth is not None else {}
        return web.json_response(
            {
                "status": "ok" if up else "standby" if serving else "degraded",
                "component_link": link.state.value,
                "link_connects": link.connects,
                "outbox": {priority.value: count for priority, count in queued.items()},
                "version": __version__,
            },
            status=200 if serving else 503,
        )

    return [web.get("/healthz", healthz)]
