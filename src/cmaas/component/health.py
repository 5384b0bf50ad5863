"""``GET /healthz``: liveness with the component link's state, for load balancers and ops."""

from __future__ import annotations

from aiohttp import web

from cmaas import __version__
from cmaas.xmpp_link import LinkState, XmppLink

__all__ = ["health_routes"]


def health_routes(link: XmppLink) -> list[web.RouteDef]:
    async def healthz(_request: web.Request) -> web.Response:
        up = link.state is LinkState.CONNECTED
        return web.json_response(
            {
                "status": "ok" if up else "degraded",
                "component_link": link.state.value,
                "link_connects": link.connects,
                "version": __version__,
            },
            status=200 if up else 503,
        )

    return [web.get("/healthz", healthz)]
