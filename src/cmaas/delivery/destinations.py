"""Where webhooks may go when the operator denies private ranges
(``CMAAS_WEBHOOK_DENY_PRIVATE``): only to globally routable addresses, checked when a
callback URL is set and again, after DNS resolution, each time it is called (so a name
that later resolves to a loopback or link-local address is refused then too)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "PrivateDestination",
    "PublicOnlyResolver",
    "check_public_url",
    "is_public",
    "literal_address",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateDestination(ValueError):
    """A callback URL's host is, or resolves to, a private or special address."""


def is_public(address: IpAddress) -> bool:
    """Globally routable: not loopback, link-local, private, shared, reserved or
    multicast, including as an IPv4-mapped IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IpAddress | None:
    """``host`` as an address when it is one (aiohttp resolves nothing for those)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def check_public_url(url: str) -> None:
    """Refuse a URL whose host is, or now resolves to, a non-public address; a name
    that does not resolve yet passes (it is checked again at each call).

    Raises: PrivateDestination.
    """
    host = yarl.URL(url).host or ""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return
        addresses = [ipaddress.ip_address(entry[4][0]) for entry in found]
    private = [str(a) for a in addresses if not is_public(a)]
    if private:
        raise PrivateDestination(
            f"{host} is, or resolves to, a private address ({', '.join(private)});"
            " CMAAS_WEBHOOK_DENY_PRIVATE refuses those"
        )


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver with every non-public address dropped from its answers; a
    name left with none fails to connect."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Raises: OSError: No public address."""
        answers = await self._inner.resolve(host, port, family)
        public = [answer for answer in answers if is_public(ipaddress.ip_address(answer["host"]))]
        if not public:
            raise OSError(f"{host} resolves to no public address (CMAAS_WEBHOOK_DENY_PRIVATE)")
        return public

    async def close(self) -> None:
        await self._inner.close()
