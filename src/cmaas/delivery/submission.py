"""Admitting sealed messages: the checks every submission passes, over HTTP or ad-hoc.

For each message, in order: its form; the plan's priorities; back-pressure (bulk is
refused first, never high); the rate plan; the envelope against the submission (same
id, app, recipient and priority, signed by a key the app registered); the legacy-OMEMO
element's header (a message sealed by an OMEMO device the app published; its keys and
payload stay opaque); the recipient; and the daily quota as the message is stored. The
answer comes only once the messages are committed, with the request's nonce when the
caller hands it over (one transaction for both, or for the nonce and the first slice
where the store takes a large request in slices).

Where several instances share a PostgreSQL database, what admission counts is theirs
together: back-pressure reads the database's queue
(:class:`~cmaas.delivery.backlog.SharedDepth`), the rate plan takes from buckets in it
(:class:`~cmaas.delivery.ratelimit.SharedBuckets`), and quotas and nonces are rows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from cmaas.delivery.auth import claim_nonce, nonce_used
from cmaas.delivery.envelope_checks import EnvelopeChecks
from cmaas.delivery.envelope_worker import CLOCK_SKEW_MS, CheckedEnvelope, EnvelopeClaim
from cmaas.delivery.errors import (
    Backpressure,
    InvalidRequest,
    MessageIdConflict,
    PriorityNotAllowed,
    QuotaExceeded,
    RateLimited,
    Refusal,
    UnknownOmemoDevice,
)
from cmaas.delivery.ratelimit import RateLimiter, TokenBuckets
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.urgency import UrgentTraffic
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.identifiers import InvalidIdentifier
from cmaas.keystore import (
    App,
    Keystore,
    MessageConflict,
    MessageRecord,
    NewMessage,
    NonceUsed,
    OutboxEntry,
    Plan,
    QuotaExhausted,
    RequestNonce,
)
from cmaas.lifecycle import (
    MessageStatus,
    Priority,
)
from cmaas.values import value_class
from cmaas.wire import Accepted, Refused, Submission, SubmissionResult, WireError
from cmaas.wire.omemo_message import parse_encrypted

__all__ = [
    "CLOCK_SKEW_MS",
    "AdmissionLimits",
    "Depth",
    "Outcome",
    "SubmissionService",
    "submission_result",
]

Outcome = MessageRecord | Refusal
"""Per message: the stored record (new or, for a retry, as stored before), or why not."""

StoreOutcome = MessageRecord | MessageConflict | QuotaExhausted

_SLICE = 32
"""Messages parsed or looked up between two turns of the event loop."""


@value_class
class _Item:
    submission: Submission
    request_sha256: bytes

    @property
    def priority(self) -> Priority:
        return self.submission.priority


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Attributes:
    bulk_backlog: Queued messages from which bulk submissions are refused.
    normal_backlog: Queued messages from which normal ones are refused too; high
        priority is never refused for depth.
    max_batch: Messages in one batch request.
    """

    bulk_backlog: int = 50_000
    normal_backlog: int = 200_000
    max_batch: int = 1000


Depth = Callable[[], Mapping[Priority, int] | Awaitable[Mapping[Priority, int]]]
"""How many messages are queued, per priority: the dispatcher's own count, or where
instances share the database, a coroutine that reads theirs
(:class:`~cmaas.delivery.backlog.SharedDepth`)."""


class SubmissionService:
    """Checks and stores submissions, then hands them to the dispatcher.

    Args:
        depth: The queued messages that back-pressure counts, read once a request.
        owner: The instance that owns a message stored now (``None``: nobody yet; the
            next takeover of a linked instance moves it).
        envelopes: Where envelopes are parsed and their signatures verified (in this
            process by default; :class:`~cmaas.delivery.envelope_checks.EnvelopeWorkers`
            for worker processes).
        urgent: The high-priority messages on their way, which the slices of other
            requests step aside for (:class:`~cmaas.delivery.urgency.UrgentTraffic`).
    """

    def __init__(
        self,
        keystore: Keystore,
        resolver: RecipientResolver,
        enqueue: Callable[[Sequence[OutboxEntry]], None],
        depth: Depth,
        *,
        component_domain: str,
        limits: AdmissionLimits | None = None,
        buckets: RateLimiter | None = None,
        on_outcomes: Callable[[Sequence[Outcome]], None] | None = None,
        owner: Callable[[], int | None] = lambda: None,
        envelopes: EnvelopeChecks | None = None,
        urgent: UrgentTraffic | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._urgent = urgent or UrgentTraffic()
        self._envelopes = envelopes or EnvelopeChecks()
        self._owner = owner
        self._keystore = keystore
        self._resolver = resolver
        self._enqueue = enqueue
        self._depth = depth
        self._domain = component_domain
        self.limits = limits or AdmissionLimits()
        self._buckets: RateLimiter = buckets or TokenBuckets()
        self._on_outcomes = on_outcomes

    async def submit(
        self, app: App, items: Sequence[object], *, nonce: RequestNonce | None = None
    ) -> list[Outcome]:
        """Admit each message on its own; one refusal does not affect the others.

        ``nonce``, the request's still unclaimed, is claimed in the transaction that
        stores the messages (the first slice of them, where the store takes a large
        request in slices), or alone if the request stores none.

        Returns: one outcome per item, in order.
        Raises:
            InvalidRequest: More items than a batch may hold, or none.
            Unauthenticated: ``nonce`` was claimed before: nothing was stored.
        """
        if not 0 < len(items) <= self.limits.max_batch:
            if nonce is not None:
                await claim_nonce(self._keystore.messages, nonce)
            raise InvalidRequest(f"a batch holds 1 to {self.limits.max_batch} messages")
        plan = await self._keystore.get_plan(app.plan)
        outcomes: list[Outcome | _Item] = []
        for start in range(0, len(items), _SLICE):
            if start:
                await self._urgent.make_way()  # 32 parses and digests: about 0.5 ms
            outcomes.extend(_parse_item(item) for item in items[start : start + _SLICE])
        if any(isinstance(item, _Item) and item.priority is Priority.HIGH for item in outcomes):
            with self._urgent.admission():
                results = await self._admit(app, plan, outcomes, nonce, self._next_turn)
        else:
            results = await self._admit(app, plan, outcomes, nonce, self._urgent.make_way)
        if self._on_outcomes is not None:
            self._on_outcomes(results)
        return results

    @staticmethod
    async def _next_turn() -> None:
        await asyncio.sleep(0)

    async def _admit(
        self,
        app: App,
        plan: Plan,
        outcomes: list[Outcome | _Item],
        nonce: RequestNonce | None,
        pause: Callable[[], Awaitable[None]],
    ) -> list[Outcome]:
        """The checks after the parse, then the store; ``pause`` between slices (an
        urgent request's own slices wait for nothing)."""
        queued = self._depth()
        if not isinstance(queued, Mapping):
            queued = await queued
        depth = sum(queued.values())
        outcomes = [self._admissible(plan, depth, item) for item in outcomes]
        await self._take_tokens(app, plan, outcomes)
        envelopes = await self._check_envelopes(app, outcomes)
        lookups = _Lookups()
        checked: list[Outcome | NewMessage] = []
        for index, item in enumerate(outcomes):
            checked.append(await self._checked(app, envelopes.get(index), lookups, item))
            if index % _SLICE == _SLICE - 1:
                # Lookups of many recipients read the database: let receipts and the
                # dispatcher run between slices, or an OTP waits behind the batch.
                await pause()
        new = [entry for entry in checked if isinstance(entry, NewMessage)]
        if len(new) > _SLICE:
            await pause()
        stored = iter(await self._store(new, plan, nonce))
        return [_stored_outcome(next(stored)) if isinstance(e, NewMessage) else e for e in checked]

    async def _store(
        self, new: Sequence[NewMessage], plan: Plan, nonce: RequestNonce | None
    ) -> list[StoreOutcome]:
        """Store ``new`` in the slices the store asks for, and queue each slice's
        messages for dispatch as soon as it is committed, so that a slice stored before
        a later one fails is never left behind.

        The first slice claims ``nonce``; the others are handed over only once it is
        committed, together, so that a replayed request stores nothing.

        Raises:
            Unauthenticated: ``nonce`` was claimed before: nothing was stored.
            Exception: What the store raised for a slice, once the others are done.
        """
        store = self._keystore.messages
        owner = self._owner()
        size = store.submit_slice or len(new) or 1
        slices = [new[start : start + size] for start in range(0, len(new), size)] or [[]]

        async def stored(
            part: Sequence[NewMessage], nonce: RequestNonce | None
        ) -> list[StoreOutcome]:
            outcomes = await store.submit(
                part, daily_quota=plan.daily_quota, owner=owner, nonce=nonce
            )
            self._enqueue(_dispatchable(outcomes))
            return outcomes

        try:
            first = await stored(slices[0], nonce)
        except NonceUsed as error:
            raise nonce_used() from error
        rest = await asyncio.gather(
            *(stored(part, None) for part in slices[1:]), return_exceptions=True
        )
        outcomes = list(first)
        for part in rest:
            if isinstance(part, BaseException):
                raise part
            outcomes.extend(part)
        return outcomes

    def _admissible(self, plan: Plan, depth: int, item: Outcome | _Item) -> Outcome | _Item:
        if not isinstance(item, _Item):
            return item
        if item.priority not in plan.priorities:
            allowed = ", ".join(p.value for p in Priority.ranked(plan.priorities))
            return PriorityNotAllowed(
                f"plan {plan.name!r} allows priorities {allowed}, not {item.priority.value}"
            )
        limit = {
            Priority.BULK: self.limits.bulk_backlog,
            Priority.NORMAL: self.limits.normal_backlog,
        }.get(item.priority)
        if limit is not None and depth >= limit:
            return Backpressure(
                f"{depth} messages are queued; {item.priority.value} submissions wait"
                " until the outbox drains",
                retry_after=5.0,
            )
        return item

    async def _take_tokens(self, app: App, plan: Plan, outcomes: list[Outcome | _Item]) -> None:
        """Grant the plan's tokens to the most urgent messages first."""
        waiting = sorted(
            (i for i, item in enumerate(outcomes) if isinstance(item, _Item)),
            key=lambda i: outcomes[i].priority,  # type: ignore[union-attr]
        )
        granted, retry_after = await self._buckets.take(f"submit:{app.app_id}", plan, len(waiting))
        for index in waiting[granted:]:
            outcomes[index] = RateLimited(
                f"plan {plan.name!r} allows {plan.sustained_per_second:g} messages/s"
                f" with bursts of {plan.burst}",
                retry_after=retry_after,
            )

    async def take_lookup(self, app: App, plan: Plan) -> None:
        """Charge one key lookup to the app's lookup bucket (it uses up prekeys).

        Raises: RateLimited.
        """
        granted, retry_after = await self._buckets.take(f"keys:{app.app_id}", plan, 1)
        if not granted:
            raise RateLimited(
                f"plan {plan.name!r} allows {plan.sustained_per_second:g} key lookups/s",
                retry_after=retry_after,
            )

    async def _check_envelopes(
        self, app: App, outcomes: Sequence[Outcome | _Item]
    ) -> dict[int, CheckedEnvelope | Refusal]:
        """The envelope checks of every message still admissible, by index."""
        claims = {
            index: EnvelopeClaim(
                item.submission.envelope,
                item.submission.message_id,
                item.priority,
                item.submission.expires_at,
            )
            for index, item in enumerate(outcomes)
            if isinstance(item, _Item) and item.submission.envelope is not None
        }
        if not claims:
            return {}
        results = await self._envelopes.check(
            list(claims.values()),
            app_jid=f"{app.app_id}@{self._domain}",
            signing_keys=await self._keystore.signing_keys(app.app_id),
            now_ms=int(self._clock() * 1000),
        )
        return dict(zip(claims, results, strict=True))

    async def _checked(
        self,
        app: App,
        envelope: CheckedEnvelope | Refusal | None,
        lookups: _Lookups,
        item: Outcome | _Item,
    ) -> Outcome | NewMessage:
        if not isinstance(item, _Item):
            return item
        if isinstance(envelope, Refusal):
            return envelope
        now_ms = int(self._clock() * 1000)
        submission = item.submission
        try:
            omemo = (
                None
                if submission.omemo is None
                else _checked_omemo(
                    submission.omemo, await lookups.omemo_devices(self._keystore, app.app_id)
                )
            )
            expires_ms = (
                envelope.expires_ms
                if envelope is not None
                else _submitted_expiry(submission.expires_at, now_ms)
            )
        except Refusal as error:
            return error
        try:
            jid = await lookups.resolve(self._resolver, submission.to)
        except InvalidIdentifier as error:
            return InvalidRequest(f"to: {error}")
        failure: str | None = None
        if jid is None:
            failure = f"unknown recipient: {submission.to} is not in the directory"
        elif envelope is not None and envelope.to != jid:
            return InvalidRequest(
                f"the envelope is sealed to {envelope.to}, but {submission.to} is {jid}"
            )
        elif omemo is None and envelope is not None:
            active = await lookups.active_devices(self._keystore, jid)
            failure = _device_failure(jid, active, envelope)
        return NewMessage(
            app_id=app.app_id,
            message_id=submission.message_id,
            recipient=submission.to,
            recipient_jid=jid,
            priority=item.priority,
            request_sha256=item.request_sha256,
            envelope=None if submission.envelope is None else submission.envelope.encode(),
            expires_ms=expires_ms,
            failure=failure,
            sealed_to=() if envelope is None else envelope.device_ids,
            omemo=None if omemo is None else omemo.encode(),
        )


class _Lookups:
    """What one request reads once per recipient, however many messages name it."""

    def __init__(self) -> None:
        self._jids: dict[str, str | None] = {}
        self._active: dict[str, set[int]] = {}
        self._omemo_devices: dict[str, frozenset[int]] = {}

    async def resolve(self, resolver: RecipientResolver, to: str) -> str | None:
        """Raises: InvalidIdentifier."""
        if to not in self._jids:
            self._jids[to] = await resolver.resolve(to)
        return self._jids[to]

    async def active_devices(self, keystore: Keystore, jid: str) -> set[int]:
        if jid not in self._active:
            devices = await keystore.devices.list(jid)
            self._active[jid] = {d.device_id for d in devices if d.revoked_at is None}
        return self._active[jid]

    async def omemo_devices(self, keystore: Keystore, app_id: str) -> frozenset[int]:
        if app_id not in self._omemo_devices:
            self._omemo_devices[app_id] = frozenset(await keystore.omemo.device_ids(app_id))
        return self._omemo_devices[app_id]


def _checked_omemo(xml: str, app_devices: frozenset[int]) -> str:
    """The submitted legacy-OMEMO element, once its header checks out.

    Raises: InvalidRequest: Not a message element (or a key transport), or sealed by a
        device the app has not published.
    """
    try:
        header = parse_encrypted(xml)
    except WireError as error:
        raise InvalidRequest(f"omemo: {error}") from error
    if not header.has_payload:
        raise InvalidRequest("omemo: a message element needs a <payload/>")
    if header.sender_device not in app_devices:
        raise UnknownOmemoDevice(
            f"omemo: sealed by device {header.sender_device}, which this app has not"
            " published (PUT /v1/omemo/devices/{device_id})"
        )
    return xml


def _submitted_expiry(expires_at: int | None, now_ms: int) -> int:
    """The expiry of a message without an envelope, in milliseconds.

    Raises: InvalidRequest: Missing, past, or more than 30 days ahead.
    """
    if expires_at is None:
        raise InvalidRequest("expires_at is required for a message without an envelope")
    expires_ms = expires_at * 1000
    if expires_ms <= now_ms:
        raise InvalidRequest(f"expires_at {expires_at} has passed (the gateway's clock: {now_ms})")
    if expires_ms > now_ms + MAX_LIFETIME_MS + CLOCK_SKEW_MS:
        raise InvalidRequest(
            f"expires_at {expires_at} is more than 30 days after the gateway's clock ({now_ms})"
        )
    return expires_ms


def _device_failure(jid: str, active: set[int], envelope: CheckedEnvelope) -> str | None:
    if not active:
        return f"no device: {jid} has no active device"
    if not active.intersection(envelope.device_ids):
        return "no device: none of the devices the envelope is sealed to is active"
    return None


def _parse_item(value: object) -> Outcome | _Item:
    try:
        submission = Submission.from_json(value)
    except WireError as error:
        return InvalidRequest(str(error))
    return _Item(submission, submission.request_sha256())


def _dispatchable(outcomes: Sequence[StoreOutcome]) -> list[OutboxEntry]:
    """The newly stored messages that wait for dispatch (not failed at once)."""
    return [
        OutboxEntry(r.seq, r.app_id, r.message_id, r.recipient_jid, r.priority, r.expires_ms)
        for r in outcomes
        if isinstance(r, MessageRecord)
        and not r.duplicate
        and r.status is MessageStatus.ACCEPTED
        and r.recipient_jid is not None
    ]


def _stored_outcome(result: StoreOutcome) -> Outcome:
    if isinstance(result, MessageConflict):
        return MessageIdConflict(str(result))
    if isinstance(result, QuotaExhausted):
        now = time.time()
        return QuotaExceeded(str(result), retry_after=86400 - now % 86400)
    return result


def submission_result(outcome: Outcome, submitted: object = None) -> SubmissionResult:
    """One message's answer, as the HTTP API and ad-hoc commands show it; a refusal
    names the submitted ``message_id`` where there was one."""
    if isinstance(outcome, Refusal):
        message_id = submitted.get("message_id") if isinstance(submitted, dict) else None
        return Refused(
            outcome.status,
            outcome.code,
            outcome.detail,
            message_id[:128] if isinstance(message_id, str) else None,
            None if outcome.retry_after is None else max(1, math.ceil(outcome.retry_after)),
        )
    return Accepted(
        outcome.message_id,
        outcome.status,
        outcome.detail,
        outcome.recipient_jid,
        outcome.created_ms,
        outcome.duplicate,
    )
