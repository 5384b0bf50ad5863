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
from typing import Any, Protocol, TypeVar

import aiohttp

from cmaas.clientservice.api import ApiError, AppCredentials, GatewayApi, gateway_session
from cmaas.clientservice.errors import (
    ClientServiceError,
    DeviceKeyChanged,
    GatewayUnavailable,
    NoDeviceToSeal,
)
from cmaas.clientservice.omemo.directory import GatewayDirectory
from cmaas.clientservice.omemo.errors import (
    NoOmemoDevices,
    OmemoDecryptFailed,
    OmemoKeyChanged,
    OmemoMalformed,
    OmemoTransportError,
)
from cmaas.clientservice.omemo.sender import OmemoSender
from cmaas.clientservice.omemo.text import omemo_body
from cmaas.clientservice.sealing import seal_submission
from cmaas.clientservice.state import (
    DevicePins,
    KeyChange,
    NewDevice,
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
    KeyTransportRequest,
    MessageView,
    OmemoBundle,
    OmemoDevices,
    OmemoInbound,
    OmemoInboundPage,
    Refused,
    StatusEvent,
    Submission,
    SubmissionResult,
)

__all__ = [
    "ClientConfig",
    "GatewayClient",
    "KeyChange",
    "NewDevice",
    "OmemoReply",
    "Sent",
    "Transport",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Answers worth retrying with the same message id: the gateway is busy or unreachable.
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_BATCH = 500
PINS_FILE = "device-pins.sqlite3"
LEGACY_PINS_FILE = "device-pins.json"  # kept by earlier versions; imported once
_UNKNOWN_KEY = "unknown_signing_key"
_UNKNOWN_OMEMO_DEVICE = "unknown_omemo_device"
_RECOVERABLE = frozenset({_UNKNOWN_KEY, _UNKNOWN_OMEMO_DEVICE})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Attributes:
    url: The gateway's HTTP API, e.g. ``https://gateway.example.org:8480``.
    credentials: What ``app-register`` showed once.
    state_dir: Where the app signing key, the pins and the event cursor live.
    key_cache_s: How long a recipient's looked-up keys are reused (signed prekeys only:
        a one-time prekey is used for one message, then dropped).
    retry_for_s: How long a send keeps retrying while the gateway is unreachable or busy.
    omemo: Whether this instance is also a legacy-OMEMO device of the app, sealing to
        recipients' OMEMO clients beside their CMaaS devices.
    """

    url: str
    credentials: AppCredentials = field(repr=False)
    state_dir: Path
    key_cache_s: float = 60.0
    retry_for_s: float = 120.0
    omemo: bool = True


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

    async def omemo_devices(self) -> OmemoDevices: ...

    async def publish_omemo_device(self, bundle: OmemoBundle) -> None: ...

    async def retire_omemo_device(self, device_id: int) -> None: ...

    async def omemo_inbound(self, after: int = 0, wait: int = 0) -> OmemoInboundPage: ...

    async def send_key_transport(self, request: KeyTransportRequest) -> None: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of one recipient of a multicast: the gateway's result, or the
    client service's own refusal (an unknown recipient, changed device keys, ...)."""

    to: str
    result: SubmissionResult


@dataclass(slots=True)
class _CachedKeys:
    keys: KeyLookup
    until: float


@dataclass(frozen=True, slots=True)
class OmemoReply:
    """A message a person's OMEMO client sent to the app's JID, opened.

    Attributes:
        sender: The person's bare JID.
        device_id: The OMEMO device it came from.
        text: What they wrote.
        seq: The gateway's sequence number of the element: a reply handed on again after
            a restart has the same.
        received_ms: When the gateway received it (Unix milliseconds).
    """

    sender: str
    device_id: int
    text: str = field(repr=False)
    seq: int
    received_ms: int


class GatewayClient:
    """Sends confidential messages as one app. Use ``async with GatewayClient(...)``.

    Args:
        on_key_change: Told of every device (of either suite) refused for a changed
            identity key.
        on_new_device: Told of every new device of a recipient whose other devices of
            the same suite were already pinned (it is pinned and sealed to).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        on_key_change: Callable[[KeyChange], None] | None = None,
        on_new_device: Callable[[NewDevice], None] | None = None,
    ) -> None:
        self.config = config
        self._own_session = session is None
        self._session = session
        self._on_key_change = on_key_change
        self._on_new_device = on_new_device
        self.omemo: OmemoSender | None = None
        self._omemo_directory: GatewayDirectory | None = None
        self._cache: OrderedDict[str, _CachedKeys] = OrderedDict()
        self._pins = DevicePins(
            config.state_dir / PINS_FILE, legacy=config.state_dir / LEGACY_PINS_FILE
        )
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
        registers it again and is sent once more. With ``omemo``, load or create this
        instance's OMEMO device and make sure the app's device list names it.

        Raises: ApiError, GatewayUnavailable, OmemoError (the OMEMO device cannot be
            loaded or published; OmemoStateError when another process holds it).
        """
        if self.api is None:
            if self._session is None:
                self._session = gateway_session()
            self.api = GatewayApi(self.config.url, self.config.credentials, self._session)
            known = self._registration.app_jid(*self._registration_key())
            if known is not None:
                self.app_jid = known
                self._unconfirmed = True
        if not self.app_jid:
            await self._register()
        if self.config.omemo and self.omemo is None:
            await self._start_omemo()

    async def _start_omemo(self) -> None:
        directory = GatewayDirectory(self._api(), self.app_jid)
        sender = OmemoSender(
            self.config.state_dir,
            self.app_jid,
            directory,
            on_key_change=self._on_key_change,
            on_new_device=self._on_new_device,
        )
        await sender.start()
        self.omemo, self._omemo_directory = sender, directory

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
            if not await self._recovered(error.code):
                raise
            answer = await self._retrying(lambda: self._api().submit(request))
        return answer

    async def _recovered(self, code: str) -> bool:
        """Whether a refusal was for something this instance can publish again (its
        signing key, its OMEMO device), and now has: the submission may be repeated."""
        if code == _UNKNOWN_KEY and self._unconfirmed:
            self._registration.forget()
            await self._register()
            return True
        if code == _UNKNOWN_OMEMO_DEVICE and self.omemo is not None:
            await self.omemo.ensure_published()
            return True
        return False

    async def _submit_batch(self, requests: list[Submission]) -> list[SubmissionResult]:
        answers: list[SubmissionResult] = await self._retrying(
            functools.partial(self._api().submit_batch, requests)
        )
        codes = {a.error for a in answers if isinstance(a, Refused)}
        recovered = [await self._recovered(code) for code in sorted(codes & _RECOVERABLE)]
        if any(recovered):
            # Those already stored come back as duplicates of themselves.
            answers = await self._retrying(functools.partial(self._api().submit_batch, requests))
        return answers

    async def close(self) -> None:
        self._pins.close()
        if self.omemo is not None:
            await self.omemo.close()
            self.omemo = None
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
            except NoDeviceToSeal as error:
                results.append(Sent(to, Refused(404, "no_device", str(error))))
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
        """The submission for one recipient: an envelope sealed to its CMaaS devices, a
        legacy-OMEMO element sealed to its OMEMO devices, or both.

        Raises: ApiError (from the key lookup), DeviceKeyChanged, NoDeviceToSeal,
            GatewayUnavailable, OmemoError (the OMEMO state cannot be written).
        """
        keys = await self._keys(to)
        now = now_ms()
        expires_ms = now + ttl_s * 1000
        envelope: str | None = None
        if keys.devices:
            envelope = seal_submission(
                keys,
                to,
                content,
                message_id=message_id,
                app_jid=self.app_jid,
                app_key=self.app_key,
                priority=priority,
                created_ms=now,
                expires_ms=expires_ms,
                auto_delete_s=auto_delete_s,
            ).envelope
        omemo, why_not = await self._omemo_sealed(keys, content, now, expires_ms)
        if envelope is None and omemo is None:
            raise NoDeviceToSeal(keys.jid, why_not)
        return Submission(
            message_id,
            to,
            envelope,
            priority,
            expires_at=None if envelope is not None else expires_ms // 1000,
            omemo=omemo,
        )

    async def _omemo_sealed(
        self, keys: KeyLookup, content: Content, created_ms: int, expires_ms: int
    ) -> tuple[str | None, str]:
        """The OMEMO element for the recipient's OMEMO devices, or None and why not.

        Raises: OmemoKeyChanged (when the recipient has no CMaaS device either),
            OmemoError (the OMEMO state cannot be written).
        """
        if self.omemo is None or self._omemo_directory is None:
            return None, "this client service seals to CMaaS devices only"
        if keys.omemo is None:
            return None, "the gateway relays no OMEMO devices"
        if keys.omemo.unreadable is not None:
            return None, keys.omemo.unreadable.detail
        try:
            body = omemo_body(content, created_ms, expires_ms)
        except ValueError as error:
            return None, str(error)
        self._omemo_directory.offer(keys.jid, keys.omemo)
        try:
            sealed = await self.omemo.encrypt(keys.jid, body.encode())
        except OmemoKeyChanged:
            if not keys.devices:
                raise
            return None, "every OMEMO device changed its identity key"
        except (NoOmemoDevices, OmemoTransportError, OmemoMalformed) as error:
            log.info("not sealing to %s's OMEMO devices: %s", keys.jid, error)
            return None, str(error)
        for skipped in sealed.skipped:
            log.info(
                "OMEMO device %d of %s skipped: %s", skipped.device_id, keys.jid, skipped.reason
            )
        return sealed.xml, ""

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

        async def page(cursor: int) -> list[tuple[StatusEvent, int]]:
            return [(event, event.event_id) for event in await self._page(cursor, 5)]

        await _follow_cursor(self._cursor_path, page, on_status, stop)

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
        one of the last ``key_cache_s`` seconds (signed prekeys only); devices whose
        identity key changed are left out and reported.

        Raises: ApiError, GatewayUnavailable, DeviceKeyChanged (every CMaaS device
            changed its key, and no OMEMO device was relayed).
        """
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
        omemo_relayed = found.omemo is not None and bool(found.omemo.bundles)
        if changed and not usable and not (self.omemo is not None and omemo_relayed):
            raise DeviceKeyChanged(jid, changed)
        if usable:
            known = self._pins.knows(jid)
            fresh = [b for b in usable if not self._pins.pinned(jid, b.device_id)]
            self._pins.pin(jid, {b.device_id: b.identity_key for b in usable})
            for bundle in fresh if known else ():
                log.info("new device %d of %s pinned", bundle.device_id, jid)
                if self._on_new_device is not None:
                    self._on_new_device(
                        NewDevice(jid, bundle.device_id, fingerprint(bundle.identity_key))
                    )
        # A handed-out one-time prekey seals one message only; reuse seals to the SPK.
        reusable = tuple(dataclasses.replace(b, one_time_prekeys=()) for b in usable)
        self._cache[to] = _CachedKeys(
            KeyLookup(jid, reusable, found.omemo), time.monotonic() + self.config.key_cache_s
        )
        self._cache.move_to_end(to)
        while len(self._cache) > 10_000:
            self._cache.popitem(last=False)
        return KeyLookup(jid, tuple(usable), found.omemo)

    async def receive_omemo(
        self,
        stop: asyncio.Event,
        on_reply: Callable[[OmemoReply], Awaitable[None] | None] | None = None,
    ) -> None:
        """Open what people's OMEMO clients send to the app's JID until ``stop`` is set:
        key transports advance this device's sessions; replies go to ``on_reply``. The
        cursor is kept in the state directory, after each element is handled. Elements
        for another device of the app, or that cannot be opened, are skipped (logged
        without their content).

        Raises: ApiError, GatewayUnavailable, OmemoStateError, and whatever ``on_reply``
            raises.
        """
        if self.omemo is None:
            raise ClientServiceError("OMEMO is off for this client (ClientConfig.omemo)")
        api = self._api()

        async def page(cursor: int) -> list[tuple[OmemoInbound, int]]:
            found: OmemoInboundPage = await self._retrying(
                functools.partial(api.omemo_inbound, cursor, 20)
            )
            return [(item, item.seq) for item in found.items]

        async def handle(item: OmemoInbound) -> None:
            reply = await self._open_inbound(item)
            if reply is not None and on_reply is not None:
                await _called(on_reply, reply)

        await _follow_cursor(self.config.state_dir / "omemo-inbound.cursor", page, handle, stop)

    async def _open_inbound(self, item: OmemoInbound) -> OmemoReply | None:
        """Raises: OmemoStateError."""
        assert self.omemo is not None
        try:
            opened = await self.omemo.decrypt(item.sender, item.xml)
        except (OmemoDecryptFailed, OmemoMalformed) as error:
            log.info("OMEMO element %d from %s not opened: %s", item.seq, item.sender, error)
            return None
        if opened.plaintext is None:
            return None
        text = opened.plaintext.decode("utf-8", errors="replace")
        return OmemoReply(opened.jid, opened.device_id, text, item.seq, item.received_ms)

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


async def _follow_cursor(
    path: Path,
    page: Callable[[int], Awaitable[list[tuple[T, int]]]],
    handle: Callable[[T], Awaitable[None] | None],
    stop: asyncio.Event,
) -> None:
    """Hand each item after the cursor kept in ``path`` to ``handle``, in order, until
    ``stop`` is set; the cursor advances after each item is handled. A page still
    waiting when ``stop`` is set is abandoned."""
    cursor = read_cursor(path)
    while not stop.is_set():
        waiting = asyncio.ensure_future(page(cursor))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            return
        for item, position in waiting.result():
            await _called(handle, item)
            cursor = position
            write_cursor(path, cursor)


async def _called(callback: Callable[[T], Awaitable[None] | None], value: T) -> None:
    """Call a callback that may be a coroutine function."""
    result = callback(value)
    if result is not None:
        await result


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
