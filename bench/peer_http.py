"""(b) The peer: ejabberd's ``send_message`` over mod_http_api, what operators use today."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from bench.raw_client import ReceiptResponder

REQUEST_TIMEOUT = 10.0


@dataclass
class PeerResult:
    """``latencies``: seconds from the start of each HTTP request to the message's arrival;
    ``responses``: seconds from the start of each accepted request to its HTTP answer."""

    requested: int
    accepted: int
    failed: int
    arrived: int
    first_request: float
    last_arrival: float
    latencies: list[float]
    responses: list[float]
    last_response: float
    complete: bool
    first_failure: str | None

    @property
    def rate(self) -> float:
        span = self.last_arrival - self.first_request
        return self.arrived / span if self.arrived and span > 0 else 0.0


def body_for(seq: int, size: int) -> str:
    """A ``size``-character body starting with the zero-padded sequence number."""
    return f"{seq:010d} " + "x" * max(0, size - 11)


async def send_messages(
    url: str,
    sender: str,
    recipient: str,
    count: int,
    concurrency: int,
    body_size: int,
    responder: ReceiptResponder,
    deadline: float,
) -> PeerResult:
    """POST ``count`` ``send_message`` commands, ``concurrency`` at a time, and wait until
    ``responder`` has received them all or ``deadline`` (``time.monotonic()``) passes."""
    responder.reset(count)
    bodies = [body_for(seq, body_size) for seq in range(count)]
    started = [0.0] * count
    state = {"next": 0, "accepted": 0, "failed": 0}
    failures: list[str] = []
    responses: list[float] = []
    last_response = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal last_response
        while state["next"] < count:
            seq = state["next"]
            state["next"] += 1
            payload = {
                "type": "chat",
                "from": sender,
                "to": recipient,
                "subject": "",
                "body": bodies[seq],
            }
            started[seq] = time.perf_counter()
            try:
                async with session.post(url, json=payload) as response:
                    text = await response.text()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, text = False, repr(exc)
            if ok:
                state["accepted"] += 1
                last_response = time.perf_counter()
                responses.append(last_response - started[seq])
            else:
                state["failed"] += 1
                if not failures:
                    failures.append(text[:300])

    # One keep-alive connection per worker: opening a connection per request would
    # measure TCP setup instead of the command.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    first_request = time.perf_counter()
    complete = False
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.gather(*workers)
                # Every request answered: now wait for the last deliveries.
                if state["failed"] == 0:
                    await responder.all_arrived.wait()
            complete = state["failed"] == 0 and responder.received >= count
        except TimeoutError:
            pass
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    arrivals = responder.arrivals
    latencies = [arrivals[seq] - started[seq] for seq in arrivals if 0 <= seq < count]
    return PeerResult(
        requested=state["next"],
        accepted=state["accepted"],
        failed=state["failed"],
        arrived=responder.received,
        first_request=first_request,
        last_arrival=max(arrivals.values(), default=first_request),
        latencies=latencies,
        responses=responses,
        last_response=last_response,
        complete=complete,
        first_failure=failures[0] if failures else None,
    )
