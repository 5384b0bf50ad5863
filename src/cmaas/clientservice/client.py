"""The app's side of CMaaS: takes plaintext, seals it at the source for every device of
the recipient, signs it with the app's key, submits it, and hands statuses back.

The gateway sees only the envelope. Recipients' device identity keys are pinned on first
use; a device that presents another key later is never sealed to, and is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from cmaas.clientservice.api import ApiError, AppCredentials, GatewayApi
from cmaas.clientservice.errors import DeviceKeyChanged, GatewayUnavailable
from cmaas.clientservice.sealing import seal_submission
from cmaas.clientservice.state import (
    DevicePins,
    Registration,
    load_or_create_app_key,
    read_cursor,
    write_cursor,
)
from cmaas.clock import now_ms
from cmaas.envelope import (
    Content,
    FileContent,
    OtpContent,
    TextContent,
    b64url,
    fingerprint,
    point_bytes,
)
from cmaas.envelope.blob import FILE_KEY_SIZE, encrypt_blob
from cmaas.lifecycle import (
    Priority,
)
from cmaas.wire import (
    Accepted,
    AppInfo,
    BlobReceipt,
    EventsPage,
    KeyLookup,
    MessageView,
    Refused,
    StatusEvent,
    Submission,
    SubmissionResult,
)

__all__ = ["ClientConfig", "GatewayClient", "KeyChange", "Sent", "Transport"]

log = logging.getLogger(__name__)

# Answers worth retrying with the same message id: the gateway is busy or unreachable.
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_BATCH = 500
_UNKNOWN_KEY = "unknown_signing_key"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Attributes:
    url: The gateway's HTTP API, e.g. ``https://gateway.example.org:8480``.
    credentials: What ``app-register`` showed once.
    state_dir: Where the app signing key, the pins and the event cursor live.
    key_cache_s: How long a recipient's looked-up keys are reused (signed prekeys only:
        a one-time prekey is used for one message, then dropped).
    retry_for_s: How long a send keeps retrying while the gateway is unreachable or busy.
    """

    url: str
    credentials: AppCredentials = field(repr=False)
    state_dir: Path
    key_cache_s: float = 60.0
    retry_for_s: float = 120.0


class Transport(Protocol):
    """How the client reaches the gateway: :class:`GatewayApi` over HTTP (the default),
    or :class:`~cmaas.clientservice.xmpp_transport.XmppTransport` for bots. Each call
    raises ApiError for a refusal and WireError for an answer off the contract."""

    async def describe(self) -> AppInfo: ...

    async def register_signing_key(self, public_key_b64url: str) -> str: ...

    async def lookup(self, to: str) -> KeyLookup: ...

    async def submit(self, message: Submission) -> Accepted: ...

    async def submit_batch(self, messages: Sequence[Submission]) -> list[SubmissionResult]: ...

    async def status(self, message_id: str) -> MessageView: ...

    async def events(self, after: int = 0, wait: int = 0) -> EventsPage: ...

    async def upload_blob(self, path: Path, digest: str, expires_in: int) -> BlobReceipt: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of one recipient of a multicast: the gateway's result, or the
    client service's own refusal (an unknown recipient, changed device keys, ...)."""

    to: str
    result: SubmissionResult


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A recipient device presented another identity key than the pinned one."""

    jid: str
    device_id: int


@dataclass(slots=True)
class _CachedKeys:
    keys: KeyLookup
    until: float


class GatewayClient:
    """Sends confidential messages as one app. Use ``async with GatewayClient(...)``.

    Args:
        on_key_change: Told of every device refused for a changed identity key.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        on_key_change: Callable[[KeyChange], None] | None = None,
    ) -> None:
        self.config = config
        self._own_session = session is None
        self._session = session
        self._on_key_change = on_key_change
        self._cache: OrderedDict[str, _CachedKeys] = OrderedDict()
        self._pins = DevicePins(config.state_dir / "device-pins.json")
        self.app_key, _ = load_or_create_app_key(config.state_dir / "app-signing-key.pem")
        self.app_jid = ""
        self.api: Transport | None = transport
        self._registration = Registration(config.state_dir / "registration.json")
        self._unconfirmed = False

    async def __aenter__(self) -> GatewayClient:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Learn the app's JID and register its signing key (idempotent). Over HTTP,
        what the gateway confirmed is kept in the state directory, so a later start
        makes no round trip; a submission refused for an unknown signing key then
        registers it again and is sent once more.

        Raises: ApiError, GatewayUnavailable.
        """
        if self.api is None:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            self.api = GatewayApi(self.config.url, self.config.credentials, self._session)
            known = self._registration.app_jid(*self._registration_key())
            if known is not None:
                self.app_jid = known
                self._unconfirmed = True
                return
        await self._register()

    def _registration_key(self) -> tuple[str, str, str]:
        key = fingerprint(point_bytes(self.app_key.public_key()))
        return self.config.url, self.config.credentials.client_id, key

    async def _register(self) -> None:
        described: AppInfo = await self._retrying(self._api().describe)
        self.app_jid = described.app_jid
        public = b64url(point_bytes(self.app_key.public_key()))
        await self._retrying(lambda: self._api().register_signing_key(public))
        self._unconfirmed = False
        if isinstance(self.api, GatewayApi):
            self._registration.confirm(*self._registration_key(), self.app_jid)

    async def _submit(self, request: Submission) -> Accepted:
        try:
            answer: Accepted = await self._retrying(lambda: self._api().submit(request))
        except ApiError as error:
            if error.code != _UNKNOWN_KEY or not self._unconfirmed:
                raise
            self._registration.forget()
            await self._register()
            answer = await self._retrying(lambda: self._api().submit(request))
        return answer

    async def _submit_batch(self, requests: list[Submission]) -> list[SubmissionResult]:
        answers: list[SubmissionResult] = await self._retrying(
            functools.partial(self._api().submit_batch, requests)
        )
        if self._unconfirmed and any(
            isinstance(a, Refused) and a.error == _UNKNOWN_KEY for a in answers
        ):
            self._registration.forget()
            await self._register()
            # Those already stored come back as duplicates of themselves.
            answers = await self._retrying(functools.partial(self._api().submit_batch, requests))
        return answers

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _api(self) -> Transport:
        if self.api is None:
            raise RuntimeError("start the client first (async with GatewayClient(...))")
        return self.api

    async def send(
        self,
        to: str,
        *,
        text: str | None = None,
        otp: str | None = None,
        purpose: str = "login",
        priority: Priority | None = None,
        ttl_s: int = 600,
        auto_delete_s: int | None = None,
        message_id: str | None = None,
    ) -> Accepted:
        """Seal and submit one message; returns the gateway's answer once it is stored.

        Exactly one of ``text`` and ``otp`` is given. Retries (gateway unreachable,
        busy, rate-limited) reuse the message id, so nothing is sent twice.

        Raises:
            ValueError: Neither or both of ``text`` and ``otp``.
            DeviceKeyChanged: Every device of the recipient changed its identity key.
            ApiError: The gateway refused the message (see its ``code``).
            GatewayUnavailable: No answer within ``retry_for_s``.
        """
        content = _content(text, otp, purpose)
        request = await self._sealed(
            to, content, message_id or _new_id(), _priority(priority, otp), ttl_s, auto_delete_s
        )
        return await self._submit(request)

    async def send_file(
        self,
        to: str,
        path: Path,
        *,
        media_type: str = "application/octet-stream",
        name: str | None = None,
        priority: Priority | None = None,
        ttl_s: int = 86_400,
        message_id: str | None = None,
    ) -> Accepted:
        """Encrypt a file at the source (CMB1, a fresh key), upload it as a blob, and send
        its key, digest and capability URL sealed in the envelope. The file is streamed:
        never held whole in memory, here or at the gateway.

        Raises: as :meth:`send`, and OSError (the file cannot be read).
        """
        content = await self._upload(path, media_type, name or path.name, ttl_s)
        request = await self._sealed(
            to, content, message_id or _new_id(), priority or Priority.NORMAL, ttl_s, None
        )
        return await self._submit(request)

    async def send_file_many(
        self,
        recipients: Sequence[str],
        path: Path,
        *,
        media_type: str = "application/octet-stream",
        name: str | None = None,
        priority: Priority = Priority.NORMAL,
        ttl_s: int = 86_400,
    ) -> list[Sent]:
        """One file to several recipients: uploaded once, its key sealed for each (results
        as :meth:`send_many`).

        Raises: OSError, ApiError (the upload), GatewayUnavailable.
        """
        content = await self._upload(path, media_type, name or path.name, ttl_s)
        return await self._multicast(recipients, content, priority, ttl_s, None)

    async def _upload(self, path: Path, media_type: str, name: str, ttl_s: int) -> FileContent:
        file_key = os.urandom(FILE_KEY_SIZE)
        blob_path = self.config.state_dir / f".outgoing-{secrets.token_hex(8)}.blob"
        try:
            size, plain_sha256, blob_sha256 = await asyncio.to_thread(
                _encrypt_file, path, blob_path, file_key
            )
            uploaded = await self._retrying(
                functools.partial(self._api().upload_blob, blob_path, blob_sha256, ttl_s)
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                blob_path.unlink()
        return FileContent(
            name=name,
            media_type=media_type,
            size=size,
            url=uploaded.url,
            file_key=file_key,
            sha256=plain_sha256,
        )

    async def send_many(
        self,
        recipients: Sequence[str],
        *,
        text: str | None = None,
        otp: str | None = None,
        purpose: str = "login",
        priority: Priority | None = None,
        ttl_s: int = 600,
        auto_delete_s: int | None = None,
    ) -> list[Sent]:
        """Multicast: seal the same content for each recipient and submit them in batches.

        Returns: one result per recipient, in order: the gateway's answer, or a refusal
            (an unknown recipient, changed device keys, ...). One recipient's refusal
            does not stop the others.
        Raises: ValueError, GatewayUnavailable.
        """
        content = _content(text, otp, purpose)
        return await self._multicast(
            recipients, content, _priority(priority, otp), ttl_s, auto_delete_s
        )

    async def _multicast(
        self,
        recipients: Sequence[str],
        content: Content,
        priority: Priority,
        ttl_s: int,
        auto_delete_s: int | None,
    ) -> list[Sent]:
        results: list[Sent | None] = []
        requests: list[tuple[int, Submission]] = []
        for to in recipients:
            try:
                request = await self._sealed(to, content, _new_id(), priority, ttl_s, auto_delete_s)
            except ApiError as error:
                results.append(Sent(to, Refused(error.status, error.code, error.detail)))
                continue
            except DeviceKeyChanged as error:
                results.append(Sent(to, Refused(409, "device_key_changed", str(error))))
                continue
            requests.append((len(results), request))
            results.append(None)
        for start in range(0, len(requests), _BATCH):
            chunk = requests[start : start + _BATCH]
            answers = await self._submit_batch([r for _, r in chunk])
            for (index, request), answer in zip(chunk, answers, strict=True):
                results[index] = Sent(request.to, answer)
        return [result for result in results if result is not None]

    async def _sealed(
        self,
        to: str,
        content: Content,
        message_id: str,
        priority: Priority,
        ttl_s: int,
        auto_delete_s: int | None,
    ) -> Submission:
        """The submission for one recipient, sealed to its devices.

        Raises: ApiError (from the key lookup), DeviceKeyChanged, GatewayUnavailable.
        """
        now = now_ms()
        return seal_submission(
            await self._keys(to),
            to,
            content,
            message_id=message_id,
            app_jid=self.app_jid,
            app_key=self.app_key,
            priority=priority,
            created_ms=now,
            expires_ms=now + ttl_s * 1000,
            auto_delete_s=auto_delete_s,
        )

    async def status(self, message_id: str) -> MessageView:
        """The message's status, per-device progress and history.

        Raises: ApiError, GatewayUnavailable.
        """
        view: MessageView = await self._retrying(lambda: self._api().status(message_id))
        return view

    async def statuses(self, *, wait_s: int = 30) -> AsyncGenerator[StatusEvent, None]:
        """Status events from the last one handled on (the cursor is kept in the state
        directory once the consumer asks for the next event): at least once, in order.

        Raises: ApiError, GatewayUnavailable.
        """
        cursor = read_cursor(self._cursor_path)
        while True:
            for event in await self._page(cursor, wait_s):
                yield event
                cursor = event.event_id
                write_cursor(self._cursor_path, cursor)

    async def follow(
        self, on_status: Callable[[StatusEvent], Awaitable[None] | None], stop: asyncio.Event
    ) -> None:
        """Call ``on_status`` with each status event, in order, until ``stop`` is set; the
        cursor advances after each call returns.

        Raises: ApiError, GatewayUnavailable, and whatever ``on_status`` raises.
        """
        cursor = read_cursor(self._cursor_path)
        while not stop.is_set():
            page = asyncio.ensure_future(self._page(cursor, 5))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({page, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not page.done():
                page.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await page
                return
            for event in page.result():
                result = on_status(event)
                if result is not None:
                    await result
                cursor = event.event_id
                write_cursor(self._cursor_path, cursor)

    @property
    def _cursor_path(self) -> Path:
        return self.config.state_dir / "events.cursor"

    async def _page(self, cursor: int, wait_s: int) -> tuple[StatusEvent, ...]:
        page: EventsPage = await self._retrying(
            functools.partial(self._api().events, after=cursor, wait=wait_s)
        )
        return page.events

    async def _keys(self, to: str) -> KeyLookup:
        """The recipient's bundles: a fresh lookup (with one-time prekeys), or the cached
        one of the last ``key_cache_s`` seconds (signed prekeys only)."""
        cached = self._cache.get(to)
        if cached is not None and cached.until > time.monotonic():
            return cached.keys
        found: KeyLookup = await self._retrying(lambda: self._api().lookup(to))
        jid, bundles = found.jid, found.devices
        changed = [
            b.device_id for b in bundles if self._pins.changed(jid, b.device_id, b.identity_key)
        ]
        for device_id in changed:
            log.warning(
                "device %d of %s changed its identity key; not sealing to it", device_id, jid
            )
            if self._on_key_change is not None:
                self._on_key_change(KeyChange(jid, device_id))
        usable = [b for b in bundles if b.device_id not in changed]
        if not usable:
            raise DeviceKeyChanged(jid, changed)
        self._pins.pin(jid, {b.device_id: b.identity_key for b in usable})
        # A handed-out one-time prekey seals one message only; reuse seals to the SPK.
        reusable = tuple(dataclasses.replace(b, one_time_prekeys=()) for b in usable)
        self._cache[to] = _CachedKeys(
            KeyLookup(jid, reusable), time.monotonic() + self.config.key_cache_s
        )
        self._cache.move_to_end(to)
        while len(self._cache) > 10_000:
            self._cache.popitem(last=False)
        return KeyLookup(jid, tuple(usable))

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call``, retrying while the gateway is unreachable or asks to wait."""
        deadline = time.monotonic() + self.config.retry_for_s
        delay = 0.5
        while True:
            try:
                return await call()
            except ApiError as error:
                if error.status not in _RETRYABLE:
                    raise
                wait = error.retry_after or delay
                reason = str(error)
            except (aiohttp.ClientError, TimeoutError) as error:
                wait = delay
                reason = f"{type(error).__name__}: {error}"
            if time.monotonic() + wait > deadline:
                raise GatewayUnavailable(f"gave up after {self.config.retry_for_s:g} s: {reason}")
            log.info("gateway: %s; retrying in %.1f s", reason, wait)
            await asyncio.sleep(wait * random.uniform(0.9, 1.1))  # noqa: S311
            delay = min(delay * 2, 10.0)


def _encrypt_file(source: Path, target: Path, file_key: bytes) -> tuple[int, str, str]:
    """Returns: the plaintext's size and SHA-256, and the blob's SHA-256 (signed)."""
    with source.open("rb") as plain, target.open("wb") as blob:
        size, plain_sha256 = encrypt_blob(plain, blob, file_key)
    digest = hashlib.sha256()
    with target.open("rb") as blob:
        for chunk in iter(lambda: blob.read(1024 * 1024), b""):
            digest.update(chunk)
    return size, plain_sha256, digest.hexdigest()


def _priority(priority: Priority | None, otp: str | None) -> Priority:
    """OTPs ride high unless told otherwise; everything else normal."""
    if priority is not None:
        return priority
    return Priority.HIGH if otp is not None else Priority.NORMAL


def _content(text: str | None, otp: str | None, purpose: str) -> Content:
    """Raises: ValueError: Neither or both of ``text`` and ``otp``."""
    if (text is None) == (otp is None):
        raise ValueError("give either text or otp")
    return OtpContent(otp, purpose) if otp is not None else TextContent(text or "")


def _new_id() -> str:
    return secrets.token_urlsafe(16)
