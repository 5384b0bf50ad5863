"""Checking each submitted envelope against its submission: its strict parse and the
app's signature, in this process or in worker processes beside it.

These two are the largest part of admitting a message (about 50 and 65 µs of CPU each
on a 2-core VM, against some 400 µs for all the gateway does with a message). The
gateway's one event loop also carries the component link, the outbox and the durable
writes; run there, a flood's checks take the CPU the drain needs. With workers
(``CMAAS_ADMISSION_WORKERS``), bulk and normal messages are checked in child processes
while the loop goes on; a high-priority message is checked at once in this process, so
an OTP never waits behind a batch queued at the workers. Either way the signature is
verified before anything is stored, and a worker that dies only costs time: what it
held is checked here instead, and a new worker takes its place.

A worker is ``python -m cmaas.delivery.envelope_checks``: it imports the envelope code
and nothing of the gateway, holds no secret (the app keys it sees are public), and
speaks on its standard input and output: per request, a JSON line followed by the
envelopes' bytes; per answer, a JSON line. It exits when its input closes, as
it does when the gateway stops or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from cmaas.delivery.errors import InvalidRequest, UnknownSigningKey
from cmaas.envelope import (
    EnvelopeError,
    EnvelopeOutline,
    PublicKey,
    parse_public_key,
    verify,
)
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.errors import CmaasError
from cmaas.lifecycle import Priority
from cmaas.values import value_class

__all__ = [
    "CLOCK_SKEW_MS",
    "CheckedEnvelope",
    "EnvelopeChecks",
    "EnvelopeClaim",
    "EnvelopeWorkers",
    "WorkerLost",
    "check_envelope",
]

log = logging.getLogger(__name__)

CLOCK_SKEW_MS = 300_000
"""How far a sender's clock may run ahead of the gateway's, as for request timestamps
(:data:`cmaas.delivery.auth.SIGNATURE_WINDOW_S`)."""

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


@value_class
class EnvelopeClaim:
    """What a submission says of its envelope, which the envelope must agree with.

    Attributes:
        text: The envelope's JSON text, as submitted (or its UTF-8 bytes).
        message_id: The submission's message id.
        priority: The submission's priority.
        expires_at: The submission's expiry in unix seconds, if it gave one.
    """

    text: str | bytes
    message_id: str
    priority: Priority
    expires_at: int | None


@value_class
class CheckedEnvelope:
    """What admission needs of an envelope that checked out.

    Attributes:
        to: The recipient's bare JID, as sealed in the header.
        expires_ms: The header's expiry.
        device_ids: The devices it is sealed to, ascending.
    """

    to: str
    expires_ms: int
    device_ids: tuple[int, ...]


CheckResult = CheckedEnvelope | InvalidRequest
"""Per claim: the envelope's facts, or why it was refused (:class:`InvalidRequest`, or
:class:`UnknownSigningKey`)."""


def check_envelope(
    claim: EnvelopeClaim,
    *,
    app_jid: str,
    signing_keys: Mapping[str, PublicKey],
    now_ms: int,
) -> CheckedEnvelope:
    """Parse the envelope strictly, compare it with its submission and verify the app's
    signature, in that order.

    Raises:
        InvalidRequest: The envelope is malformed, disagrees with the submission, has
            a lifetime that does not start now, or its signature does not verify.
        UnknownSigningKey: It is signed by a key the app has not registered.
    """
    try:
        envelope = EnvelopeOutline.from_bytes(claim.text)
    except EnvelopeError as error:
        raise InvalidRequest(f"envelope: {type(error).__name__}: {error}") from error
    header = envelope.header
    for field, sealed, submitted in (
        ("message_id", header.message_id, claim.message_id),
        ("app", header.app, app_jid),
        ("priority", header.priority.value, claim.priority.value),
    ):
        if sealed != submitted:
            raise InvalidRequest(f"the envelope's {field} is {sealed!r}, not {submitted!r}")
    # The header caps a lifetime at 30 days from created_ms, which the sender chooses:
    # it must be the gateway's now, within the clock skew a request signature allows.
    if header.created_ms > now_ms + CLOCK_SKEW_MS:
        raise InvalidRequest(
            f"the envelope's created_ms is {header.created_ms}, ahead of the gateway's clock"
            f" ({now_ms}) by more than {CLOCK_SKEW_MS // 1000} s"
        )
    if header.expires_ms > now_ms + MAX_LIFETIME_MS + CLOCK_SKEW_MS:
        raise InvalidRequest(
            f"the envelope's expires_ms is {header.expires_ms}, more than 30 days after"
            f" the gateway's clock ({now_ms})"
        )
    if claim.expires_at is not None and claim.expires_at != header.expires_ms // 1000:
        raise InvalidRequest(
            f"expires_at is {claim.expires_at}, the envelope expires at {header.expires_ms // 1000}"
        )
    key = signing_keys.get(envelope.app_key_fingerprint)
    if key is None:
        raise UnknownSigningKey(
            "the envelope is signed by a key this app has not registered (POST /v1/signing-keys)"
        )
    try:
        verify(key, envelope.signature, envelope.signed, what="app")
    except EnvelopeError as error:
        raise InvalidRequest("the envelope's signature does not verify") from error
    return CheckedEnvelope(header.to, header.expires_ms, tuple(sorted(envelope.device_ids)))


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
        """Check each claim on its own (:func:`check_envelope`).

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
                _checked_here(claim, app_jid, keys, now_ms)
                for claim in claims[start : start + _SLICE]
            )
        return results

    async def close(self) -> None:
        """Stop what the checks started (nothing, in this process)."""


def _checked_here(
    claim: EnvelopeClaim, app_jid: str, keys: Mapping[str, PublicKey], now_ms: int
) -> CheckResult:
    try:
        return check_envelope(claim, app_jid=app_jid, signing_keys=keys, now_ms=now_ms)
    except InvalidRequest as refusal:
        return refusal


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
                f" `{sys.executable} -P -m {__name__}` shows why;"
                " CMAAS_ADMISSION_WORKERS=0 checks envelopes in the gateway process"
            ) from error

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            # -P: never import from the working directory, whatever it holds.
            sys.executable,
            "-P",
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        worker = _Worker(process)
        worker.reader.add_done_callback(lambda _: self._lost(worker))
        return worker

    async def _ping(self, worker: _Worker) -> None:
        request_id = next(self._ids)
        line = _request_line(request_id, "", {}, 0, [])
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
                line = _request_line(request_id, app_jid, hex_keys, now_ms, claims)
                try:
                    return [_result_from_json(item) for item in await worker.call(request_id, line)]
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


def _request_line(
    request_id: int,
    app_jid: str,
    hex_keys: Mapping[str, str],
    now_ms: int,
    claims: Sequence[EnvelopeClaim],
) -> bytes:
    """One request: a JSON line with each claim's facts and its envelope's length in
    bytes, then the envelopes' UTF-8 bytes back to back (no JSON escaping of them on
    either side)."""
    texts = [c.text if isinstance(c.text, bytes) else c.text.encode() for c in claims]
    request = {
        "id": request_id,
        "app": app_jid,
        "keys": hex_keys,
        "now": now_ms,
        "claims": [
            [c.message_id, c.priority.value, c.expires_at, len(text)]
            for c, text in zip(claims, texts, strict=True)
        ],
    }
    return b"".join((json.dumps(request, separators=(",", ":")).encode(), b"\n", *texts))


def _result_to_json(result: CheckResult) -> list[object]:
    if isinstance(result, CheckedEnvelope):
        return ["ok", result.to, result.expires_ms, list(result.device_ids)]
    return [result.code, result.detail]


def _result_from_json(item: list[Any]) -> CheckResult:
    if item[0] == "ok":
        return CheckedEnvelope(item[1], item[2], tuple(item[3]))
    if item[0] == UnknownSigningKey.code:
        return UnknownSigningKey(item[1])
    return InvalidRequest(item[1])


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """A worker's loop: one request in (:func:`_request_line`), one answer line out,
    until ``requests`` ends. The app keys' parsed forms are kept between requests (at
    most 1,024)."""
    parsed: dict[str, PublicKey] = {}
    while line := requests.readline():
        if not line.endswith(b"\n"):
            return  # the gateway died while writing it: nobody waits for the answer
        request = json.loads(line)
        claims = request["claims"]
        size = sum(length for *_, length in claims)
        texts = requests.read(size)
        if len(texts) < size:
            return  # cut short in the envelopes, likewise
        keys: dict[str, PublicKey] = {}
        for digest, point in request["keys"].items():
            if point not in parsed:
                if len(parsed) >= 1024:
                    parsed.clear()
                parsed[point] = parse_public_key(bytes.fromhex(point))
            keys[digest] = parsed[point]
        results = []
        start = 0
        for message_id, priority, expires_at, length in claims:
            text = texts[start : start + length]
            start += length
            claimed = Priority.named(priority) or Priority(priority)  # the latter raises
            claim = EnvelopeClaim(text, message_id, claimed, expires_at)
            results.append(
                _result_to_json(_checked_here(claim, request["app"], keys, request["now"]))
            )
        answers.write(
            json.dumps({"id": request["id"], "results": results}, separators=(",", ":")).encode()
            + b"\n"
        )
        answers.flush()


if __name__ == "__main__":
    # The worker ends when the gateway closes its input, after the gateway's own
    # orderly stop. A terminal's Ctrl-C and systemd's SIGTERM reach the whole group:
    # acted on here, they would end the worker while the gateway still needs it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(10)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        # The gateway died (SIGKILL) while this answer was on its way: exit quietly,
        # without the flush at exit meeting the closed pipe again.
        os._exit(0)
