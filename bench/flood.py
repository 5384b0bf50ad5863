"""A backlog submitted from a process of its own (item d-flood).

Signing and sending 500-message batches keeps a process busy. Done in the process that
submits the OTPs and times them, it delays the OTPs' requests themselves, and the
latency measured would be the bench's as much as the gateway's. The child gets the
gateway's addresses, the app's credentials and the sealed messages on its standard
input, writes ``started`` once it has begun submitting, and exits 0 once
every batch is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Sequence

import aiohttp

from cmaas.clientservice import AppCredentials, GatewayApi
from cmaas.wire import Submission

__all__ = ["Flood"]

_STARTED = b"started\n"


class Flood:
    """The child process submitting one backlog; :meth:`start`, then :meth:`done`."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._errors: asyncio.Task[bytes] | None = None

    async def start(
        self, urls: Sequence[str], credentials: AppCredentials, messages: Sequence[Submission]
    ) -> None:
        """Start the child and return once it has begun submitting.

        Raises: ConnectionError: It ended before it began.
        """
        request = {
            "urls": list(urls),
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "hmac_key": base64.b64encode(credentials.hmac_key).decode(),
            "messages": [message.to_json() for message in messages],
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        self._errors = asyncio.create_task(process.stderr.read())
        process.stdin.write(json.dumps(request).encode())
        await process.stdin.drain()
        process.stdin.close()
        if await process.stdout.readline() != _STARTED:
            await self.done()
            raise ConnectionError("the flood process ended before it began")

    async def done(self) -> None:
        """Wait until every batch is accepted.

        Raises: ConnectionError: A batch was refused, or the child failed.
        """
        assert self._process is not None and self._errors is not None
        code = await self._process.wait()
        errors = await self._errors
        if code != 0:
            raise ConnectionError(f"the flood process exited {code}: {errors.decode()[-2000:]}")

    def stop(self) -> None:
        """End the child if it still runs (the measurement failed)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()


async def _submit(request: dict[str, object]) -> None:
    from bench.gateway import submit_all  # the child needs none of it before here
    from bench.timing import frozen_heap

    credentials = AppCredentials.from_issued(request)
    messages = [Submission.from_json(m) for m in request["messages"]]  # type: ignore[attr-defined]
    urls: list[str] = request["urls"]  # type: ignore[assignment]
    async with aiohttp.ClientSession() as session:
        apis = [GatewayApi(url, credentials, session) for url in urls]
        with frozen_heap():
            submitting = asyncio.create_task(submit_all(apis, messages))
            await asyncio.sleep(0)
            sys.stdout.buffer.write(_STARTED)
            sys.stdout.buffer.flush()
            await submitting


if __name__ == "__main__":
    asyncio.run(_submit(json.load(sys.stdin.buffer)))
