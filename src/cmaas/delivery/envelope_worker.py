"""The envelope checks themselves, and the admission worker process that runs them.

A worker is ``python -m cmaas.delivery.envelope_worker``: it imports the envelope code
and nothing of the gateway, holds no secret (the app keys it sees are public), and
speaks on its standard input and output: per request, a JSON line followed by the
envelopes' bytes; per answer, a JSON line. It exits when its input closes, as it does
when the gateway stops or dies.

This module imports neither asyncio nor logging, and the envelope package does without
``hashlib``: both would load the system's OpenSSL library beside the one
``cryptography`` carries (asyncio through ``ssl``). A worker holds about 23 MB resident
with them left out, against 32 MB. :mod:`cmaas.delivery.envelope_checks` runs these
checks in the gateway or sends them to workers.
"""

from __future__ import annotations

import json
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
from cmaas.lifecycle import Priority
from cmaas.values import value_class

__all__ = [
    "CLOCK_SKEW_MS",
    "CheckResult",
    "CheckedEnvelope",
    "EnvelopeClaim",
    "check_envelope",
    "check_or_refuse",
    "request_line",
    "result_from_json",
    "serve",
]

CLOCK_SKEW_MS = 300_000
"""How far a sender's clock may run ahead of the gateway's, as for request timestamps
(:data:`cmaas.delivery.auth.SIGNATURE_WINDOW_S`)."""


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


def check_or_refuse(
    claim: EnvelopeClaim, app_jid: str, keys: Mapping[str, PublicKey], now_ms: int
) -> CheckResult:
    """:func:`check_envelope`, with a refusal returned rather than raised."""
    try:
        return check_envelope(claim, app_jid=app_jid, signing_keys=keys, now_ms=now_ms)
    except InvalidRequest as refusal:
        return refusal


def request_line(
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


def result_from_json(item: list[Any]) -> CheckResult:
    if item[0] == "ok":
        return CheckedEnvelope(item[1], item[2], tuple(item[3]))
    if item[0] == UnknownSigningKey.code:
        return UnknownSigningKey(item[1])
    return InvalidRequest(item[1])


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """A worker's loop: one request in (:func:`request_line`), one answer line out,
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
                _result_to_json(check_or_refuse(claim, request["app"], keys, request["now"]))
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
