"""Envelope checks at admission: in this process and in real worker processes, the
same answer for every claim, high priority never behind the workers, and a worker that
dies costing nothing but time."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cmaas.delivery.auth import SIGNATURE_WINDOW_S
from cmaas.delivery.envelope_checks import EnvelopeChecks, EnvelopeWorkers, WorkerLost
from cmaas.delivery.envelope_worker import (
    CLOCK_SKEW_MS,
    CheckedEnvelope,
    EnvelopeClaim,
    request_line,
    serve,
)
from cmaas.delivery.errors import InvalidRequest, UnknownSigningKey
from cmaas.envelope import b64url, fingerprint, generate_private_key, seal
from cmaas.lifecycle import Priority

from .envelope_fixtures import (
    APP_JID,
    EXPIRES_MS,
    NOW_MS,
    TEXT,
    USER_JID,
    app_public,
    make_keyring,
    sender_bundle,
    to_tree,
)

APP_KEY = generate_private_key()
OTHER_KEY = generate_private_key()
KEYS = {fingerprint(app_public(APP_KEY)): app_public(APP_KEY)}
BUNDLE = sender_bundle(make_keyring(), with_one_time_prekey=False)


def sealed(message_id: str, priority: Priority = Priority.BULK, *, key: object = APP_KEY) -> str:
    return (
        seal(
            TEXT,
            message_id=message_id,
            app_jid=APP_JID,
            recipient_jid=USER_JID,
            bundles=[BUNDLE],
            app_key=key,  # type: ignore[arg-type]
            created_ms=NOW_MS,
            expires_ms=EXPIRES_MS,
            priority=priority,
        )
        .to_bytes()
        .decode()
    )


def claim(
    sealed_id: str, sealed_priority: Priority = Priority.BULK, /, **changes: object
) -> EnvelopeClaim:
    """A claim for an envelope sealed as ``sealed_id``, the claim's fields then changed."""
    return dataclasses.replace(
        EnvelopeClaim(sealed(sealed_id, sealed_priority), sealed_id, sealed_priority, None),
        **changes,  # type: ignore[arg-type]
    )


def tampered_signature(message_id: str) -> str:
    tree = to_tree(sealed(message_id).encode())
    signature = bytearray(b"\0" * 8) + bytearray(range(56))
    tree["signature"] = b64url(bytes(signature))
    return json.dumps(tree, separators=(",", ":"), sort_keys=True)


def every_kind_of_claim() -> list[EnvelopeClaim]:
    """A good one and one of each refusal, in every priority."""
    claims = []
    for priority in Priority:
        p = priority.value
        claims += [
            claim(f"good-{p}", priority),
            claim(f"id-{p}", priority, message_id=f"other-{p}"),
            claim(f"prio-{p}", priority, priority=Priority.HIGH if p != "high" else Priority.BULK),
            claim(f"exp-{p}", priority, expires_at=EXPIRES_MS // 1000 + 1),
            claim(f"exp-same-{p}", priority, expires_at=EXPIRES_MS // 1000),
            EnvelopeClaim(sealed(f"key-{p}", priority, key=OTHER_KEY), f"key-{p}", priority, None),
            EnvelopeClaim("{not json", f"junk-{p}", priority, None),
            EnvelopeClaim(tampered_signature(f"sig-{p}"), f"sig-{p}", Priority.BULK, None),
        ]
    return claims


def comparable(result: CheckedEnvelope | InvalidRequest) -> object:
    if isinstance(result, CheckedEnvelope):
        return result
    return (type(result), result.code, result.detail)


@pytest.fixture(autouse=True)
def collected_after() -> Iterator[None]:
    """Collect each test's garbage (the asyncio subprocess objects' reference cycles)
    while nothing else runs. Left to a later collection, one that fell inside an
    ``ast.parse`` (pytest rewriting a module imported late) ran Python code that parsed
    again, and CPython 3.11.7 then raised "AST constructor recursion depth mismatch"
    (its bug gh-106905, fixed in later releases)."""
    yield
    gc.collect()


@pytest.fixture
async def workers() -> AsyncIterator[EnvelopeWorkers]:
    pool = EnvelopeWorkers(1)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def worker_pids(pool: EnvelopeWorkers) -> list[int]:
    return [worker.process.pid for worker in pool._workers]


def test_the_skew_is_the_request_signatures_window() -> None:
    assert CLOCK_SKEW_MS == SIGNATURE_WINDOW_S * 1000


async def test_each_claim_gets_its_own_answer_in_this_process() -> None:
    results = await EnvelopeChecks().check(
        every_kind_of_claim(), app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS
    )
    by_id = dict(zip((c.message_id for c in every_kind_of_claim()), results, strict=True))
    for p in ("bulk", "normal", "high"):
        assert by_id[f"good-{p}"] == CheckedEnvelope(USER_JID, EXPIRES_MS, (BUNDLE.device_id,))
        assert by_id[f"exp-same-{p}"] == by_id[f"good-{p}"]
        assert "message_id is" in str(by_id[f"other-{p}"])
        assert "priority is" in str(by_id[f"prio-{p}"])
        assert "expires_at is" in str(by_id[f"exp-{p}"])
        assert type(by_id[f"key-{p}"]) is UnknownSigningKey
        assert "MalformedEncoding" in str(by_id[f"junk-{p}"])
        assert str(by_id[f"sig-{p}"]) == "the envelope's signature does not verify"


async def test_the_workers_answer_as_this_process_does(workers: EnvelopeWorkers) -> None:
    claims = every_kind_of_claim() * 20
    here = await EnvelopeChecks().check(claims, app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
    away = await workers.check(claims, app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
    assert [comparable(r) for r in away] == [comparable(r) for r in here]
    assert workers.checked_here_for_lost == 0


async def test_a_lifetime_that_does_not_start_now_is_refused_by_the_workers(
    workers: EnvelopeWorkers,
) -> None:
    claims = [claim("late")]
    (ahead,) = await workers.check(
        claims, app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS - CLOCK_SKEW_MS - 1
    )
    assert isinstance(ahead, InvalidRequest)
    assert "ahead of the gateway's clock" in ahead.detail
    (wrong_app,) = await workers.check(
        claims, app_jid="other@apps.cmaas.test", signing_keys=KEYS, now_ms=NOW_MS
    )
    assert "the envelope's app is" in str(wrong_app)


async def test_high_priority_is_checked_here_while_the_workers_are_busy(
    workers: EnvelopeWorkers,
) -> None:
    (pid,) = worker_pids(workers)
    os.kill(pid, signal.SIGSTOP)
    try:
        bulk = asyncio.create_task(
            workers.check([claim("bulk")], app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
        )
        (otp,) = await asyncio.wait_for(
            workers.check(
                [claim("otp", Priority.HIGH)], app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS
            ),
            10,
        )
        assert isinstance(otp, CheckedEnvelope)
        # The stopped worker holds the bulk claim: it cannot have been answered.
        assert not bulk.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    (answer,) = await asyncio.wait_for(bulk, 10)
    assert isinstance(answer, CheckedEnvelope)


async def test_a_killed_worker_costs_no_check_and_is_replaced(workers: EnvelopeWorkers) -> None:
    (pid,) = worker_pids(workers)
    os.kill(pid, signal.SIGSTOP)
    claims = [claim(f"m{n}") for n in range(200)] + [claim("bad", message_id="other")]
    pending = asyncio.create_task(
        workers.check(claims, app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
    )
    while not workers._workers[0].pending:
        await asyncio.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    results = await asyncio.wait_for(pending, 30)
    assert all(isinstance(r, CheckedEnvelope) for r in results[:200])
    assert "message_id is" in str(results[200])
    assert workers.checked_here_for_lost > 0
    for _ in range(300):
        if workers.alive == 1:
            break
        await asyncio.sleep(0.05)
    assert workers.replaced == 1
    assert worker_pids(workers) != [pid]
    again = await workers.check(claims, app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
    assert [comparable(r) for r in again] == [comparable(r) for r in results]


async def test_a_worker_outlasts_the_groups_sigterm(workers: EnvelopeWorkers) -> None:
    """systemd and a terminal signal the whole group: the worker waits for the gateway
    to close its input, so checks in the gateway's orderly stop still reach it."""
    (pid,) = worker_pids(workers)
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    (result,) = await workers.check(
        [claim("after-term")], app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS
    )
    assert isinstance(result, CheckedEnvelope)
    assert workers.checked_here_for_lost == 0
    assert worker_pids(workers) == [pid]


async def test_without_a_live_worker_everything_is_checked_here() -> None:
    pool = EnvelopeWorkers(1)
    await pool.start()
    await pool.close()
    assert pool.alive == 0
    (result,) = await pool.check([claim("m")], app_jid=APP_JID, signing_keys=KEYS, now_ms=NOW_MS)
    assert isinstance(result, CheckedEnvelope)


async def test_closing_stops_every_worker() -> None:
    pool = EnvelopeWorkers(2)
    await pool.start()
    processes = [worker.process for worker in pool._workers]
    assert len({p.pid for p in processes}) == 2
    await pool.close()
    assert [p.returncode for p in processes] == [0, 0]


def request(request_id: int, claims: list[EnvelopeClaim]) -> bytes:
    hex_keys = {digest: point.hex() for digest, point in KEYS.items()}
    return request_line(request_id, APP_JID, hex_keys, NOW_MS, claims)


def test_a_worker_serves_until_its_input_ends() -> None:
    # Lengths are in bytes: a text with a two-byte character ahead of a good one.
    not_ascii = claim("n", text='{"é":1}')
    answers = io.BytesIO()
    serve(io.BytesIO(request(7, [claim("a"), not_ascii]) + request(8, [claim("b")])), answers)
    first, second = map(json.loads, answers.getvalue().splitlines())
    assert first["id"] == 7
    assert first["results"][0] == ["ok", USER_JID, EXPIRES_MS, [BUNDLE.device_id]]
    assert first["results"][1][0] == "invalid_request"
    assert second == {"id": 8, "results": [first["results"][0]]}


@pytest.mark.parametrize("cut", ["in the line", "in the envelopes"])
def test_a_request_cut_short_by_the_gateways_death_gets_no_answer(cut: str) -> None:
    whole = request(1, [claim("a"), claim("b")])
    end = whole.index(b"\n") - 10 if cut == "in the line" else len(whole) - 10
    answers = io.BytesIO()
    serve(io.BytesIO(whole[:end]), answers)
    assert answers.getvalue() == b""


async def test_a_worker_whose_gateway_is_gone_exits_quietly(tmp_path: Path) -> None:
    """The gateway killed while the worker answers: no traceback in the shared log."""
    log = tmp_path / "worker.log"
    claims = [claim(f"m{n}") for n in range(64)]
    answers_read, answers_write = os.pipe()
    with log.open("wb") as stderr:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "cmaas.delivery.envelope_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=answers_write,
            stderr=stderr,
        )
    os.close(answers_write)
    # Nobody reads its answers any more, as when the gateway has died.
    os.close(answers_read)
    assert worker.stdin is not None
    worker.stdin.write(request(1, claims))
    worker.stdin.close()
    assert await asyncio.wait_for(worker.wait(), 30) == 0
    assert log.read_text() == ""


async def test_a_worker_that_cannot_start_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    pool = EnvelopeWorkers(1)
    with pytest.raises(WorkerLost, match=r"ended as it started.*CMAAS_ADMISSION_WORKERS=0"):
        await pool.start()
    await pool.close()
    assert pool.alive == 0


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        EnvelopeWorkers(0)


def test_a_worker_imports_neither_asyncio_nor_hashlib() -> None:
    """Each would load the system's OpenSSL library beside the one ``cryptography``
    carries: some 4 MB of every worker's resident memory (bench item f)."""
    script = (
        "import sys, cmaas.delivery.envelope_worker;"
        " print(sorted({'asyncio', 'ssl', 'hashlib', 'logging'} & set(sys.modules)))"
    )
    shown = subprocess.run(
        [sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"
