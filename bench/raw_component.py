"""(a) The physical limit: a raw XEP-0114 component writing pre-serialised stanzas.

No XMPP library: after the handshake the injector only writes bytes built before the
clock starts and parses the receipts that come back, so what it measures is the
server, not the gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.xmlstream import XmlStream, attr

ACCEPT_NS = "jabber:component:accept"
RECEIPTS_NS = "urn:xmpp:receipts"
_MESSAGE = f"{{{ACCEPT_NS}}}message"
_RECEIVED = f"{{{RECEIPTS_NS}}}received"
_HANDSHAKE = f"{{{ACCEPT_NS}}}handshake"
SETUP_TIMEOUT = 10.0


@dataclass
class InjectResult:
    """What one injection run saw; ``round_trips`` holds seconds, in receipt order."""

    sent: int
    acked: int
    errors: int
    first_send: float
    last_receipt: float
    round_trips: list[float]
    complete: bool

    @property
    def rate(self) -> float:
        span = self.last_receipt - self.first_send
        return self.acked / span if self.acked and span > 0 else 0.0


async def _handshake(stream: XmlStream, domain: str, secret: str) -> None:
    stream.send(
        f"<stream:stream xmlns='{ACCEPT_NS}' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{attr(domain)}'>"
    )
    header = await stream.wait_header()
    stream_id = header.get("id")
    if not stream_id:
        raise ConnectionError("component stream header without an id")
    digest = hashlib.sha1((stream_id + secret).encode(), usedforsecurity=False).hexdigest()
    stream.send(f"<handshake>{digest}</handshake>")
    reply = await stream.next_element()
    if reply.tag != _HANDSHAKE:
        raise ConnectionError(f"component handshake refused: {reply.tag}")


class RawComponent:
    """A connected, authenticated XEP-0114 stream."""

    def __init__(self, stream: XmlStream, domain: str) -> None:
        self.stream = stream
        self.domain = domain

    @classmethod
    async def connect(cls, host: str, port: int, domain: str, secret: str) -> RawComponent:
        """Open the component stream and do the SHA-1 handshake.

        Raises:
            TimeoutError, OSError, StreamClosedError, ConnectionError: If the server
                refuses or is silent.
        """
        async with asyncio.timeout(SETUP_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
            stream = XmlStream(reader, writer)
            try:
                await _handshake(stream, domain, secret)
            except BaseException:
                await stream.close()
                raise
        return cls(stream, domain)

    def stanzas(self, to: str, count: int, body_size: int) -> tuple[str, list[bytes]]:
        """``count`` chat messages asking for a receipt, with ids ``<prefix><seq>``."""
        # A fresh prefix per run, so that a late receipt from the warm-up cannot be
        # counted in the measured run.
        prefix = f"b{secrets.token_hex(3)}-"
        body = ("cmaas-bench " * (body_size // 12 + 1))[:body_size]
        sender = attr(f"bench@{self.domain}")
        head = f"<message type='chat' from='{sender}' to='{attr(to)}' id='{prefix}"
        tail = f"'><body>{body}</body><request xmlns='{RECEIPTS_NS}'/></message>"
        return prefix, [f"{head}{seq}{tail}".encode() for seq in range(count)]

    async def inject(
        self,
        prefix: str,
        stanzas: list[bytes],
        window: int,
        deadline: float,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> InjectResult:
        """Send ``stanzas`` with at most ``window`` unanswered, until every receipt is back.

        Stops at ``deadline`` (``time.monotonic()``) with ``complete=False``; receipts
        and bounces (``type='error'``) both free a window slot.
        """
        count = len(stanzas)
        sent_at = [0.0] * count
        answered = [False] * count
        round_trips: list[float] = []
        state = {"next": 0, "done": 0, "errors": 0}
        last_receipt = 0.0
        room = asyncio.Event()
        stream = self.stream
        skip = len(prefix)

        async def send() -> None:
            while state["next"] < count:
                free = window - (state["next"] - state["done"])
                if free <= 0:
                    room.clear()
                    await room.wait()
                    continue
                start = state["next"]
                stop = min(count, start + free)
                now = time.perf_counter()
                # One write per refill: a write per stanza would cost a syscall each.
                stream.writer.write(b"".join(stanzas[start:stop]))
                for seq in range(start, stop):
                    sent_at[seq] = now
                state["next"] = stop
                await stream.writer.drain()

        async def receive() -> None:
            nonlocal last_receipt
            while state["done"] < count:
                data = await stream.read_chunk()
                now = time.perf_counter()
                for elem in stream.feed(data):
                    if elem.tag != _MESSAGE:
                        continue
                    if elem.get("type") == "error":
                        key = elem.get("id", "")
                        is_error = True
                    else:
                        received = elem.find(_RECEIVED)
                        if received is None:
                            continue
                        key = received.get("id", "")
                        is_error = False
                    if not key.startswith(prefix):
                        continue
                    seq = int(key[skip:])
                    if answered[seq]:
                        continue
                    answered[seq] = True
                    state["done"] += 1
                    if is_error:
                        state["errors"] += 1
                    else:
                        round_trips.append(now - sent_at[seq])
                        last_receipt = now
                room.set()
                if on_progress is not None:
                    on_progress(state["done"], count)

        first_send = time.perf_counter()
        tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
        complete = False
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.gather(*tasks)
            complete = True
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return InjectResult(
            sent=state["next"],
            acked=state["done"] - state["errors"],
            errors=state["errors"],
            first_send=first_send,
            last_receipt=last_receipt if round_trips else first_send,
            round_trips=round_trips,
            complete=complete and state["errors"] == 0,
        )

    async def close(self) -> None:
        await self.stream.close()
