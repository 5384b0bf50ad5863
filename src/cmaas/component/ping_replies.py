"""Where this gateway instance's ping results come back when several instances share
one component domain.

The IM server routes a stanza for the shared domain to any one of the instances'
connections, so a ping sent from the shared domain is answered to a random instance.
Each instance therefore sends its pings from a host of its own, and holds a second
component connection authenticated as that host: ejabberd (with ``global_routes:
false`` on the listener) routes the host to that connection alone. The ping itself
still goes out on the shared stream, after the messages it vouches for.

The gateway also answers ad-hoc command steps sent to the host
(:meth:`~cmaas.component.gateway.GatewayComponent.serve` adds the handler here), so that
a client can run a command on this instance in particular.
"""

from __future__ import annotations

import asyncio
import logging

from slixmpp import JID, Iq
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.xmlstream import NotConnectedError

__all__ = ["PingReplies"]

log = logging.getLogger(__name__)


class PingReplies(ComponentXMPP):
    """The component connection, as this instance's own host, that receives its pings'
    results.

    Attributes:
        stray: Results that matched no ping waiting here (late after a timeout, or
            routed here by a misconfigured server).
    """

    def __init__(self, host: str, secret: str) -> None:
        super().__init__(host, secret, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.host_jid = JID(host)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.stray = 0
        for kind in ("result", "error"):
            self.register_handler(
                Callback(
                    f"cmaas ping {kind}",
                    MatchXPath(f"{{{self.default_ns}}}iq[@type='{kind}']"),
                    self._answered,  # type: ignore[arg-type]
                )
            )

    async def ping(self, stream: ComponentXMPP, server: JID, within: float) -> bool:
        """Write a ping (XEP-0199) from this instance's host to ``server`` on ``stream``,
        and wait for its result or error here.

        Returns: ``True`` when the server answered within ``within`` seconds, ``False``
        when it did not or ``stream`` is down.
        """
        iq = stream.make_iq_get(ito=server, ifrom=self.host_jid)
        iq.enable("ping")
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[iq["id"]] = answer
        try:
            stream.send(iq)
            await asyncio.wait_for(answer, within)
        except (NotConnectedError, TimeoutError):
            return False
        finally:
            self._waiting.pop(iq["id"], None)
        return True

    def _answered(self, iq: Iq) -> None:
        answer = self._waiting.pop(iq["id"], None)
        if answer is None or answer.done():
            self.stray += 1
            log.debug("ping result %s from %s matches no waiting ping", iq["id"], iq["from"])
            return
        answer.set_result(None)
