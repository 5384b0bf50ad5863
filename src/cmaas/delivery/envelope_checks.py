"""Checking each submitted envelope against its submission: its strict parse and the
app's signature, in this process or in worker processes beside it.

These two are the largest part of admitting a message (about 10 and 45 µs of CPU each
on a 2-core VM, against some 170 µs for all the gateway does with a message). The
gateway's one event loop also carries the component link, the outbox and the durable
writes; run there, a flood's checks take the CPU the drain needs. With workers
(``CMAAS_ADMISSION_WORKERS``), bulk and normal messages are checked in child processes
while the loop goes on; a high-priority message is checked at once in this process, so
an OTP never waits behind a batch queued at the workers. Either way the signature is
verified before anything is stored, and a worker that dies only costs time: what it
held is checked here instead, and a new worker takes its place.

The checks themselves and the worker's side are :mod:`cmaas.delivery.envelope_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from cmaas.delivery import envelope_worker
from cmaas.delivery.envelope_worker import (
    CheckResult,
    EnvelopeClaim,
    check_or_refuse,
    request_line,
    result_from_json,
)
from cmaas.envelope import parse_public_key
from cmaas.errors import CmaasError
from cmaas.lifecycle import Priority

__all__ = [
    "EnvelopeChecks",
    "EnvelopeWorkers",
    "WorkerLost",
]

log = logging.getLogger(__name__)

_SLICE = 32
"""Checks between two turns of the event loop when checking in this process: 32 cost
about 4 ms of CPU, so receipts and the dispatcher run between slices."""

_CHUNK = 64
"""Claims in one request to a worker: small enough that high-priority work never sits
long behind it, large enough that the pipe's cost per message stays near 1 µs."""

_IN_FLIGHT_PER_WORKER = 3
"""Chunks sent to one worker before its answers: one being checked, the next ones
already in its pipe, so that it never waits for the gateway's loop."""

_RESPAWN_DELAY_S = 1.0


class EnvelopeChecks:
    """Checks envelopes in this process, a slice at a time between turns of the loop."""

    replaced = 0
    """Workers started again after one ended."""

    @property
    def alive(self) -> int:
        """Worker processes running now."""
        return 0

    async def check(
        self,
        claims: Sequence[EnvelopeClaim],
        *,
        app_jid: str,
        signing_keys: Mapping[str, bytes],
        now_ms: int,
    ) -> list[CheckResult]:
        """Check each claim on its own (:func:`~cmaas.delivery.envelope_worker.check_envelope`).

        Args:
            signing_keys: The app's registered keys: fingerprint to 65-byte point.

        Returns: one result per claim, in order.
        """
        keys = {digest: parse_public_key(point) for digest, point in signing_keys.items()}
        results: list[CheckResult] = []
        for start in range(0, len(claims), _SLICE):
            if start:
                await asyncio.sleep(0)
            results.extend(
                check_or_refuse(claim, app_jid, keys, now_ms)
                for claim in claims[start : start + _SLICE]
            )
        return results

    async def close(self) -> None:
        """Stop what the checks started (nothing, in this process)."""


class WorkerLost(CmaasError):
    """A worker process ended (or could not be written to) before it answered."""


class _Worker:
    """One worker process and the chunks it has been sent, by request id."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[list[Any]]] = {}
        self.reader = asyncio.create_task(self._read(), name="envelope-worker-reader")

    async def call(self, request_id: int, line: bytes) -> list[Any]:
        """Raises: WorkerLost."""
        stdin = self.process.stdin
        assert stdin is not None
        answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = answer
        try:
            stdin.write(line)
            await stdin.drain()
        except (ConnectionError, RuntimeError) as error:
            self.pending.pop(request_id, None)
            raise WorkerLost(f"worker {self.process.pid}: {error}") from error
        return await answer

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                answer = json.loads(line)
                future = self.pending.pop(answer["id"], None)
                if future is not None and not future.done():
                    future.set_result(answer["results"])
        except (ValueError, KeyError, TypeError) as error:  # a line over the limit too
            log.error("envelope worker %d answered out of protocol: %s", self.process.pid, error)
            self.process.kill()
        finally:
            lost = WorkerLost(f"worker {self.process.pid} ended")
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(lost)
            self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.reader.done()


class EnvelopeWorkers(EnvelopeChecks):
    """Checks bulk and normal envelopes in ``count`` worker processes, high-priority
    ones in this process. Call :meth:`start` before use and :meth:`close` after.

    A worker that ends is replaced after a second; meanwhile, and while none is alive,
    every check runs in this process.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self._count = count
        self._workers: list[_Worker] = []
        self._slots = asyncio.Semaphore(count * _IN_FLIGHT_PER_WORKER)
        self._ids = itertools.count()
        self._closing = False
        self._respawning: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self.checked_here_for_lost = 0

    async def start(self) -> None:
        """Start the workers and wait until each has answered once.

        Raises:
            OSError: A worker could not be started.
            WorkerLost: A worker ended before it answered.
        """
        for _ in range(self._count):
            self._workers.append(await self._spawn())
        try:
            await asyncio.gather(*(self._ping(worker) for worker in self._workers))
        except WorkerLost as error:
            raise WorkerLost(
                f"an envelope worker ended as it started ({error}):"
                f" `{sys.executable} -P -m {envelope_worker.__name__}` shows why;"
                " CMAAS_ADMISSION_WORKERS=0 checks envelopes in the gateway process"
            ) from error

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            # -P: never import from the working directory, whatever it holds.
            sys.executable,
            "-P",
            "-m",
            envelope_worker.__name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        worker = _Worker(process)
        worker.reader.add_done_callback(lambda _: self._lost(worker))
        return worker

    async def _ping(self, worker: _Worker) -> None:
        request_id = next(self._ids)
        line = request_line(request_id, "", {}, 0, [])
        await worker.call(request_id, line)

    def _lost(self, worker: _Worker) -> None:
        if self._closing or worker not in self._workers:
            return
        self._workers.remove(worker)
        # Its pipes are closed and its exit status read, or they outlive it.
        ending = asyncio.create_task(_stop(worker), name="envelope-worker-end")
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)
        log.error(
            "envelope worker %d ended (exit %s); its checks run in the gateway until it"
            " is replaced",
            worker.process.pid,
            worker.process.returncode,
        )
        if self._respawning is None or self._respawning.done():
            self._respawning = asyncio.create_task(self._respawn(), name="envelope-respawn")

    async def _respawn(self) -> None:
        delay = _RESPAWN_DELAY_S
        while not self._closing and len(self._workers) < self._count:
            await asyncio.sleep(delay)
            try:
                worker = await self._spawn()
            except OSError as error:
                log.error("an envelope worker could not be started: %s", error)
                delay = min(delay * 2, 30.0)
                continue
            if self._closing:
                await _stop(worker)
                return
            self._workers.append(worker)
            self.replaced += 1

    @property
    def alive(self) -> int:
        return sum(1 for worker in self._workers if worker.alive)

    async def check(
        self,
        claims: Sequence[EnvelopeClaim],
        *,
        app_jid: str,
        signing_keys: Mapping[str, bytes],
        now_ms: int,
    ) -> list[CheckResult]:
        if not self.alive:
            return await super().check(
                claims, app_jid=app_jid, signing_keys=signing_keys, now_ms=now_ms
            )
        here = [i for i, claim in enumerate(claims) if claim.priority is Priority.HIGH]
        away = [i for i, claim in enumerate(claims) if claim.priority is not Priority.HIGH]
        results: dict[int, CheckResult] = {}
        if here:
            # The urgent ones first, before anything waits on a worker.
            checked = await super().check(
                [claims[i] for i in here], app_jid=app_jid, signing_keys=signing_keys, now_ms=now_ms
            )
            results.update(zip(here, checked, strict=True))
        hex_keys = {digest: point.hex() for digest, point in signing_keys.items()}
        chunks = [away[start : start + _CHUNK] for start in range(0, len(away), _CHUNK)]
        answers = await asyncio.gather(
            *(
                self._checked_away(
                    [claims[i] for i in chunk], app_jid, signing_keys, hex_keys, now_ms
                )
                for chunk in chunks
            )
        )
        for chunk, answer in zip(chunks, answers, strict=True):
            results.update(zip(chunk, answer, strict=True))
        return [results[index] for index in range(len(claims))]

    async def _checked_away(
        self,
        claims: list[EnvelopeClaim],
        app_jid: str,
        signing_keys: Mapping[str, bytes],
        hex_keys: Mapping[str, str],
        now_ms: int,
    ) -> list[CheckResult]:
        async with self._slots:
            workers = [worker for worker in self._workers if worker.alive]
            if workers:
                worker = min(workers, key=lambda w: len(w.pending))
                request_id = next(self._ids)
                line = request_line(request_id, app_jid, hex_keys, now_ms, claims)
                try:
                    return [result_from_json(item) for item in await worker.call(request_id, line)]
                except WorkerLost:
                    self.checked_here_for_lost += len(claims)
        return await super().check(
            claims, app_jid=app_jid, signing_keys=signing_keys, now_ms=now_ms
        )

    async def close(self) -> None:
        """Stop the workers: their input is closed, then after 5 s they are killed."""
        self._closing = True
        if self._respawning is not None:
            self._respawning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._respawning
        workers, self._workers = self._workers, []
        await asyncio.gather(*(_stop(worker) for worker in workers), *self._ending)


async def _stop(worker: _Worker) -> None:
    process = worker.process
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 5.0)
    except TimeoutError:
        process.kill()
        await process.wait()
    await worker.reader
