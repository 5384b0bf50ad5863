"""The delivery engine's face towards apps: what the HTTP API and the ad-hoc commands
both call, so that both speak for one engine with the same checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cmaas.delivery.doorbells import Doorbells
from cmaas.delivery.errors import InvalidRequest, NotFound
from cmaas.delivery.events import EventHub
from cmaas.delivery.omemo import AppOmemo, KeyTransportSender, OmemoLimits
from cmaas.delivery.recipient_omemo import RecipientOmemoLookup
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.submission import Outcome, SubmissionService
from cmaas.envelope import (
    EnvelopeError,
    fingerprint,
    from_b64url,
    parse_public_key,
)
from cmaas.identifiers import InvalidIdentifier
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import (
    App,
    Keystore,
    MessageNotFound,
    MessageRecord,
    RequestNonce,
    StatusEvent,
    TooManySigningKeys,
)
from cmaas.wire import AppInfo, EventsPage, KeyLookup, MessageView, SigningKeyRequest

__all__ = ["MAX_WAIT_S", "Messaging", "message_view"]

MAX_WAIT_S = 60.0


class Messaging:
    """Key lookup, submission, status and events for one authenticated app."""

    def __init__(
        self,
        keystore: Keystore,
        directory: KeyDirectory,
        resolver: RecipientResolver,
        submissions: SubmissionService,
        hub: EventHub,
        *,
        component_domain: str,
        omemo_limits: OmemoLimits | None = None,
        recipient_omemo: RecipientOmemoLookup | None = None,
        key_transports: KeyTransportSender | None = None,
        inbound_bells: Doorbells | None = None,
    ) -> None:
        """Args:
        recipient_omemo: Reads recipients' legacy OMEMO devices for :meth:`lookup`;
            without it, lookups carry none.
        key_transports: Sends apps' OMEMO key transports; without it, they are
            refused as unavailable.
        inbound_bells: Wake the reads of inbound OMEMO; by default, this process's own.
        """
        self._keystore = keystore
        self._directory = directory
        self._resolver = resolver
        self.submissions = submissions
        self._hub = hub
        self._domain = component_domain
        self.omemo = AppOmemo(
            keystore, omemo_limits or OmemoLimits(), key_transports, bells=inbound_bells
        )
        self._recipient_omemo = recipient_omemo

    def describe(self, app: App) -> AppInfo:
        """What an app's client needs to know of itself: above all, the JID it sends as."""
        return AppInfo(
            app.app_id,
            f"{app.app_id}@{self._domain}",
            app.display_name,
            app.plan,
            app.callback_url,
            app.jids,
        )

    async def lookup(self, app: App, to: str) -> KeyLookup:
        """The recipient's JID and a bundle per active device, each with one
        one-time prekey taken from its pool (charged to the app's lookup rate), while
        the app has not taken its share of that device's prekeys in the window
        (:class:`~cmaas.keydirectory.DeviceLimits`); past it, the signed prekey alone.
        Beside them, its legacy OMEMO devices as its PEP shows them to the app's JID, or
        why they could not be read.

        Raises: InvalidRequest, NotFound (unknown recipient, or no device in either
            suite: the detail says why no OMEMO device could be read), RateLimited.
        """
        await self.submissions.take_lookup(app, await self._keystore.get_plan(app.plan))
        try:
            jid = await self._resolver.resolve(to)
        except InvalidIdentifier as error:
            raise InvalidRequest(f"to: {error}") from error
        if jid is None:
            raise NotFound(f"unknown recipient: {to} is not in the directory")
        if self._recipient_omemo is None:
            bundles = await self._directory.lookup(jid, for_app=app.app_id)
            if not bundles:
                raise NotFound(f"no device: {jid} has no active device")
            return KeyLookup(jid, tuple(bundles))
        # The recipient's PEP is read over XMPP while the keystore hands out prekeys: a
        # lookup waits for the slower of the two, not for both in turn.
        async with asyncio.TaskGroup() as both:
            taking = both.create_task(self._directory.lookup(jid, for_app=app.app_id))
            reading = both.create_task(self._recipient_omemo.lookup(app.app_id, jid))
        bundles, omemo = taking.result(), reading.result()
        if not bundles:
            omemo = self._recipient_omemo.ask_if_refused(app.app_id, jid, omemo)
        if not bundles and not omemo.bundles:
            why = (
                f"{omemo.unreadable.reason.value}: {omemo.unreadable.detail}"
                if omemo.unreadable is not None
                else "no readable bundle"
            )
            raise NotFound(f"no device: {jid} has no active device and no OMEMO device ({why})")
        return KeyLookup(jid, tuple(bundles), omemo)

    async def submit(
        self, app: App, items: Sequence[object], *, nonce: RequestNonce | None = None
    ) -> list[Outcome]:
        """See :meth:`SubmissionService.submit`."""
        return await self.submissions.submit(app, items, nonce=nonce)

    async def status(self, app: App, message_id: str) -> MessageView:
        """A message's status and timestamped history, per device.

        Raises: NotFound.
        """
        try:
            record, events = await self._keystore.messages.get(app.app_id, message_id)
        except MessageNotFound as error:
            raise NotFound(str(error)) from error
        return message_view(record, events)

    async def events(self, app: App, after: int, wait_s: float) -> EventsPage:
        """The app's events after the cursor ``after``, waiting up to ``wait_s`` (≤ 60 s)."""
        found = await self._hub.wait_events(app.app_id, after, min(wait_s, MAX_WAIT_S))
        return EventsPage(
            tuple(event.wire() for event in found), found[-1].event_id if found else after
        )

    async def register_signing_key(self, app: App, request: SigningKeyRequest) -> tuple[str, bool]:
        """Register the public half of an app signing key.

        Returns: its fingerprint, and whether it is new.
        Raises: InvalidRequest: Not a P-256 point, or the app has too many keys.
        """
        try:
            key = from_b64url(request.public_key, what="public_key", size=65, max_size=128)
            parse_public_key(key)
        except EnvelopeError as error:
            raise InvalidRequest(f"public_key: {error}") from error
        digest = fingerprint(key)
        try:
            added = await self._keystore.add_signing_key(app.app_id, digest, key)
        except TooManySigningKeys as error:
            raise InvalidRequest(str(error)) from error
        return digest, added

    async def signing_keys(self, app: App) -> list[str]:
        return list(await self._keystore.signing_keys(app.app_id))

    async def retire_signing_key(self, app: App, digest: str) -> None:
        """Raises: NotFound."""
        if not await self._keystore.retire_signing_key(app.app_id, digest):
            raise NotFound(f"no active signing key {digest[:64]!r}")


def message_view(record: MessageRecord, events: Sequence[StatusEvent]) -> MessageView:
    """A message as apps see it: status, per-device progress and the whole history."""
    history = tuple(event.wire() for event in events)
    return MessageView(
        message_id=record.message_id,
        status=record.status,
        detail=record.detail,
        to=record.recipient,
        recipient_jid=record.recipient_jid,
        priority=record.priority,
        accepted_ms=record.created_ms,
        updated_ms=record.updated_ms,
        expires_ms=record.expires_ms,
        devices=MessageView.progress(history),
        history=history,
    )
