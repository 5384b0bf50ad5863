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
    link: XmppLink,
    depth: Callable[[], Mapping[Priority, int]] | None = None,
    ping_link: XmppLink | None = None,
) -> list[web.RouteDef]:
    """Args:
    ping_link: This instance's own connection for its ping replies
        (``CMAAS_INSTANCE_HOST``): without it, every round of messages waits for pings
        that never come back, so the instance is degraded.
    """

    async def healthz(_request: web.Request) -> web.Response:
        pings_back = ping_link is None or ping_link.state is LinkState.CONNECTED
        up = link.state is LinkState.CONNECTED and pings_back
        # A standby serves the HTTP API while another instance holds the component.
        serving = up or link.state is LinkState.STANDBY
        queued = depth() if depth is not None else {}
        answer: dict[str, object] = {
            "status": "ok" if up else "standby" if serving else "degraded",
            "component_link": link.state.value,
            "link_connects": link.connects,
            "outbox": {priority.value: count for priority, count in queued.items()},
            "version": __version__,
        }
        if ping_link is not None:
            answer["ping_link"] = ping_link.state.value
        return web.json_response(answer, status=200 if serving else 503)

    return [web.get("/healthz", healthz)]
