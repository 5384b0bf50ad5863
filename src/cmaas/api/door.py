"""The HTTP front door's own limits, so that no client, signed or not, can hold the
gateway's memory or file descriptors: deadlines on request heads and bodies; caps on
connections in all and per peer address; on requests and long-polls in flight per app;
and on bodies being read before their signature can be checked.

The connection limits work on the listening socket itself (:meth:`Door.serve` wraps
aiohttp's protocol factory); the rest in the routes and :meth:`Door.middleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from cmaas.delivery.errors import Backpressure, InvalidRequest, RateLimited
from cmaas.identifiers import IpNetwork

__all__ = ["Door", "DoorLimits", "RateLimitedLog"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What asyncio's accept loop reports, once per pending connection, when the process is
# out of file descriptors (it can repeat hundreds of thousands of times a minute).
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """Attributes:
    header_timeout_s: Time a connection has to deliver a whole request head, from
        its opening or the end of its previous answer (an idle keep-alive connection
        is closed after it too).
    body_timeout_s: Time a request body has to arrive whole; for a blob upload, the
        longest pause between two of its chunks.
    max_connections: Open connections in all; more are closed at once.
    max_connections_per_ip: Open connections from one peer address; trusted proxies
        are exempt (they carry many clients).
    max_requests_per_app: Requests one app may have in flight.
    max_long_polls_per_app: Waiting ``GET /v1/events`` one app may have open.
    max_bodies_in_flight: Request bodies read at once, across all apps, before their
        signature is checked.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 900
    max_connections_per_ip: int = 100
    max_requests_per_app: int = 64
    max_long_polls_per_app: int = 8
    max_bodies_in_flight: int = 64


class RateLimitedLog:
    """A warning logged at most once per ``every_s``, with the count of those held back."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._every = every_s
        self._clock = clock
        self._last: float | None = None
        self.held_back = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._every:
            self.held_back += 1
            return
        if self.held_back:
            message += f" ({self.held_back} more like it held back)"
        self._last, self.held_back = now, 0
        self._log.warning(message, *args)


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the door's caps and deadline."""

    def __init__(self, door: Door, inner: asyncio.Protocol) -> None:
        self._door = door
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._peer: IpAddress | None = None
        self._busy = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = _peer_address(transport)
        if not self._door._admit(self._peer):
            # Not handed to aiohttp, so connection_lost below has nothing to undo.
            cast(asyncio.Transport, transport).abort()
            return
        self._transport = transport
        self._door._opened(self, transport, self._peer)
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._disarm()
        self._door._closed(self._transport, self._peer)
        self._transport = None
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._transport is not None:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._door.limits.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._transport is not None and self._busy == 0:
            self._door.expired += 1
            cast(asyncio.Transport, self._transport).abort()


def _peer_address(transport: asyncio.BaseTransport) -> IpAddress | None:
    peer = transport.get_extra_info("peername")
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except (ValueError, TypeError, IndexError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Door:
    """The limits of :class:`DoorLimits`, enforced; counts for ``/metrics`` and tests."""

    def __init__(self, limits: DoorLimits, trusted_proxies: Sequence[IpNetwork] = ()) -> None:
        self.limits = limits
        self._trusted = tuple(trusted_proxies)
        self._connections: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._per_peer: Counter[IpAddress | None] = Counter()
        self._requests: Counter[str] = Counter()
        self._long_polls: Counter[str] = Counter()
        self._bodies = 0
        self.refused_connections = 0
        self.expired = 0
        self._refusals = RateLimitedLog(log)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _admit(self, peer: IpAddress | None) -> bool:
        reason = None
        if len(self._connections) >= self.limits.max_connections:
            reason = f"{len(self._connections)} connections are open (CMAAS_HTTP_MAX_CONNECTIONS)"
        elif self._per_peer[peer] >= self.limits.max_connections_per_ip and not self._is_trusted(
            peer
        ):
            held = self._per_peer[peer]
            reason = f"{peer} holds {held} connections (CMAAS_HTTP_MAX_CONNECTIONS_PER_IP)"
        if reason is None:
            return True
        self.refused_connections += 1
        self._refusals.warning("HTTP connection refused: %s", reason)
        return False

    def _is_trusted(self, peer: IpAddress | None) -> bool:
        return peer is not None and any(peer in network for network in self._trusted)

    def _opened(
        self,
        connection: _GuardedConnection,
        transport: asyncio.BaseTransport,
        peer: IpAddress | None,
    ) -> None:
        self._connections[transport] = connection
        self._per_peer[peer] += 1

    def _closed(self, transport: asyncio.BaseTransport, peer: IpAddress | None) -> None:
        self._connections.pop(transport, None)
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, inner())

    async def serve(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        ssl_context: Any = None,
    ) -> asyncio.Server:
        """Listen on ``host:port`` with aiohttp's handler behind the door; the caller
        closes the returned server before cleaning up ``runner``.

        Raises: OSError: The address cannot be bound.
        """
        server = runner.server
        assert server is not None, "runner.setup() comes first"
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            self.protocol_factory(server), host, port, ssl=ssl_context, backlog=128
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Holds a connection's head deadline while its request is handled, and refuses
        compressed bodies (a few KiB of gzip can expand to the whole body limit).

        Raises: InvalidRequest: The body has a ``Content-Encoding``.
        """
        connection = self._connections.get(request.transport) if request.transport else None
        task = asyncio.current_task()
        if connection is not None:
            connection.request_started()
            # aiohttp writes the answer (a blob of many MiB, say) after the handler
            # returns, in this same task: the deadline restarts once the task is done.
            if task is not None:
                task.add_done_callback(lambda _: connection.request_finished())
        try:
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise InvalidRequest(
                    f"Content-Encoding {encoding[:32]!r} is not accepted: send the body as is"
                )
            return await handler(request)
        finally:
            if connection is not None and task is None:
                connection.request_finished()

    def app_request(self, app_id: str) -> contextlib.AbstractContextManager[None]:
        """One of the app's requests in flight.

        Raises: RateLimited: The app already has its share in flight.
        """
        return _slot(
            self._requests,
            app_id,
            self.limits.max_requests_per_app,
            "requests in flight; wait for answers",
        )

    def long_poll(self, app_id: str) -> contextlib.AbstractContextManager[None]:
        """One of the app's waiting ``GET /v1/events``.

        Raises: RateLimited: The app already holds its share of long-polls.
        """
        return _slot(
            self._long_polls,
            app_id,
            self.limits.max_long_polls_per_app,
            "waiting event polls; one is enough",
        )

    async def read_body(self, request: web.Request) -> bytes:
        """The whole body, within the body deadline and the cap on bodies in flight.

        Raises:
            Backpressure: Too many bodies are being read at once.
            InvalidRequest: The body did not arrive in time.
            HTTPRequestEntityTooLarge: Over the application's ``client_max_size``.
        """
        if not request.body_exists:
            return b""
        if self._bodies >= self.limits.max_bodies_in_flight:
            raise Backpressure(
                "the gateway is receiving too many request bodies at once", retry_after=1.0
            )
        self._bodies += 1
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await request.read()
        except TimeoutError as error:
            raise InvalidRequest(
                f"the body did not arrive within {self.limits.body_timeout_s:g} s"
            ) from error
        finally:
            self._bodies -= 1

    async def chunks(self, request: web.Request, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """A streamed body's chunks, each within the body deadline of the one before.

        Raises: InvalidRequest: The body stalled.
        """
        while True:
            try:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    chunk = await request.content.read(size)
            except TimeoutError as error:
                raise InvalidRequest(
                    f"the body stalled for {self.limits.body_timeout_s:g} s"
                ) from error
            if not chunk:
                return
            yield chunk

    def quiet_accept_errors(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Let asyncio's accept-loop error about exhausted file descriptors through at
        most once per 10 s (other errors go on as before). Returns the undo."""
        previous = loop.get_exception_handler()
        limited = RateLimitedLog(logging.getLogger("asyncio"))

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == _ACCEPT_EXHAUSTED:
                limited.warning(
                    "%s: %s (raise LimitNOFILE, lower CMAAS_HTTP_MAX_CONNECTIONS)",
                    _ACCEPT_EXHAUSTED,
                    context.get("exception"),
                )
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        return lambda: loop.set_exception_handler(previous)


@contextlib.contextmanager
def _slot(counter: Counter[str], app_id: str, limit: int, what: str) -> Iterator[None]:
    """Raises: RateLimited: ``counter[app_id]`` is at ``limit`` already."""
    if counter[app_id] >= limit:
        raise RateLimited(f"this app has {counter[app_id]} {what}", retry_after=1.0)
    counter[app_id] += 1
    try:
        yield
    finally:
        counter[app_id] -= 1
        if counter[app_id] <= 0:
            del counter[app_id]
