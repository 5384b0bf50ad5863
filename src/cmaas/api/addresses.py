"""The client's address: the peer's, or behind trusted proxies, the forwarded one."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from cmaas.identifiers import IpNetwork

__all__ = ["ClientAddresses"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_UNKNOWN = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 (an address compared, never bound)


def _plain(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """``X-Forwarded-For`` counts only when the peer is a trusted proxy; then the client
    is the right-most address that is not itself a trusted proxy (each proxy appends
    the address it saw, so entries further left are whatever the client claimed)."""

    def __init__(self, trusted_proxies: Sequence[IpNetwork]) -> None:
        self._trusted = tuple(trusted_proxies)

    def _is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self._trusted)

    def client(self, request: web.Request) -> IpAddress:
        """The client's address; ``0.0.0.0``, which no allow-list of an app that has one
        should hold, when it cannot be told (no peer address, a malformed chain)."""
        peer_text = request.transport.get_extra_info("peername") if request.transport else None
        try:
            peer = _plain(ipaddress.ip_address(peer_text[0])) if peer_text else _UNKNOWN
        except ValueError:
            return _UNKNOWN
        if not self._is_trusted(peer):
            return peer
        hops = [
            hop.strip()
            for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        ]
        for hop in reversed([hop for hop in hops if hop]):
            try:
                address = _plain(ipaddress.ip_address(hop))
            except ValueError:
                return _UNKNOWN
            if not self._is_trusted(address):
                return address
        return peer
