"""``cmaas client serve``: the client service as a local HTTP daemon, for apps in any
language. It seals at the source here, beside the app, so plaintext never leaves the host.

Two front doors:
- the native JSON API: ``POST /v1/send`` and ``GET /v1/messages/{id}``, authenticated
  with ``Authorization: Bearer <client secret>``;
- a Sandes-shaped ``POST /v1/api/message/multicast`` with headers ``clientid``,
  ``clientsecret`` and ``hmac`` = base64(HMAC-SHA256(hmac key, raw body)), so that an app
  integrated the Sandes way switches over by changing its URL; with an optional
  ``timestamp`` header (unix seconds) the HMAC covers ``timestamp + "." + body``. A MAC
  is accepted once: for the timestamp's window, or for a day without one.

Statuses are relayed to the app's local webhook, signed as the gateway signs its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hmac
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from aiohttp import web

from cmaas.clientservice.api import ApiError, AppCredentials
from cmaas.clientservice.client import GatewayClient, OmemoReply, Sent
from cmaas.clientservice.errors import ClientServiceError, DeviceKeyChanged, NoDeviceToSeal
from cmaas.envelope import EnvelopeError
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.errors import CmaasError
from cmaas.lifecycle import Priority
from cmaas.wire import Refused, StatusEvent
from cmaas.wire.http import refusal_response, router_refusal
from cmaas.wire.signing import body_mac, webhook_signature

__all__ = ["DaemonOptions", "ReplyRelay", "SeenMacs", "StatusRelay", "daemon_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_BODY = 1024 * 1024
_MAX_FILE = 32 * 1024 * 1024
TIMESTAMP_WINDOW_S = 300
"""How far a Sandes request's ``timestamp`` may be from the daemon's clock."""
UNSTAMPED_REPLAY_WINDOW_S = 86_400
"""How long the MAC of a Sandes request without ``timestamp`` is remembered."""
_REMEMBERED_MACS = 100_000


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """Attributes:
    file_urls: URL prefixes ``file_url`` may start with (scheme, host and port equal,
        the path under the prefix's); none: ``file_url`` is refused.
    file_timeout_s: Time the fetch of ``file_url`` may take in all.
    """

    file_urls: tuple[str, ...] = ()
    file_timeout_s: float = 30.0


class SeenMacs:
    """MACs of accepted Sandes requests, each until its window ends, so that the same
    request sent again is refused; at most ``capacity``, the oldest forgotten first."""

    def __init__(
        self, capacity: int = _REMEMBERED_MACS, clock: Callable[[], float] = time.time
    ) -> None:
        self._until: OrderedDict[bytes, float] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def first_time(self, mac: bytes, window_s: float) -> bool:
        """Remember ``mac`` for ``window_s``; ``False`` when it is remembered already."""
        now = self._clock()
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        if mac in self._until and self._until[mac] > now:
            return False
        self._until[mac] = now + window_s
        self._until.move_to_end(mac)
        # Entries are kept in insertion order; their windows differ, so an expired one
        # may sit behind a live one until the live one goes.
        while len(self._until) > self._capacity:
            self._until.popitem(last=False)
        return True


class _Refused(CmaasError):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place the daemon's refusals become JSON answers."""
    try:
        return await handler(request)
    except _Refused as error:
        return refusal_response(error.status, error.code, error.detail)
    except ApiError as error:
        return refusal_response(error.status, error.code, error.detail)
    except DeviceKeyChanged as error:
        return refusal_response(409, "device_key_changed", str(error))
    except NoDeviceToSeal as error:
        return refusal_response(404, "no_device", str(error))
    except (EnvelopeError, ValueError) as error:
        # What the content itself refuses (an OTP too short, a bad message id, ...).
        return refusal_response(400, "invalid_request", str(error))
    except ClientServiceError as error:
        return refusal_response(503, "gateway_unavailable", str(error))
    except web.HTTPException as error:
        return router_refusal(request, error)


def daemon_app(
    client: GatewayClient, credentials: AppCredentials, options: DaemonOptions | None = None
) -> web.Application:
    """The daemon's routes around a started :class:`GatewayClient`."""
    fetching = options or DaemonOptions()
    seen = SeenMacs()

    def check_bearer(request: web.Request) -> None:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(presented, credentials.client_secret.encode()):
            raise _Refused(401, "unauthenticated", "send Authorization: Bearer <client secret>")

    async def body(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as error:
            raise _Refused(400, "invalid_request", f"the body is not JSON: {error}") from error

    async def send(request: web.Request) -> web.Response:
        check_bearer(request)
        value = await body(request)
        if not isinstance(value, dict):
            raise _Refused(400, "invalid_request", "the body must be a JSON object")
        options = _send_options(value)
        to = value.get("to")
        if isinstance(to, list) and to and all(isinstance(t, str) for t in to):
            options.pop("message_id", None)
            sent = await client.send_many(to, **options)
            return web.json_response(
                {"results": [{"to": s.to, **s.result.to_json()} for s in sent]}
            )
        if not isinstance(to, str) or not to:
            raise _Refused(400, "invalid_request", "to must be a recipient or a list of them")
        return web.json_response((await client.send(to, **options)).to_json(), status=202)

    async def status(request: web.Request) -> web.Response:
        check_bearer(request)
        view = await client.status(request.match_info["message_id"])
        return web.json_response(view.to_json())

    async def sandes_multicast(request: web.Request) -> web.Response:
        raw = await request.read()
        _check_sandes(request, raw, credentials, seen)
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise _Refused(400, "invalid_request", f"the body is not JSON: {error}") from error
        if not isinstance(value, dict):
            raise _Refused(400, "invalid_request", "the body must be a JSON object")
        receivers, options = _sandes_options(value)
        file_url = value.get("file_url")
        if not file_url:
            texts = await client.send_many(receivers, **options)
            files: list[Sent | None] = [None] * len(texts)
        else:
            # The file is fetched before anything is sent: if it cannot be had, nothing goes.
            url = _allowed_file_url(str(file_url), fetching.file_urls)
            async with _fetched(client, url, fetching.file_timeout_s) as (
                local,
                name,
                fetched_type,
            ):
                texts = await client.send_many(receivers, **options)
                files = list(
                    await client.send_file_many(
                        receivers,
                        local,
                        media_type=str(value.get("file_content_type") or fetched_type),
                        name=name,
                        priority=options["priority"],
                        ttl_s=options["ttl_s"],
                    )
                )
        results = [_sandes_result(text, file) for text, file in zip(texts, files, strict=True)]
        return web.json_response(
            {
                "status": "success" if all(r["error"] is None for r in results) else "partial",
                "results": results,
            }
        )

    app = web.Application(client_max_size=_MAX_BODY, middlewares=[_errors])
    app.add_routes(
        [
            web.post("/v1/send", send),
            web.get("/v1/messages/{message_id}", status),
            web.post("/v1/api/message/multicast", sandes_multicast),
        ]
    )
    return app


def _sandes_result(text: Sent, file: Sent | None) -> dict[str, object]:
    """One receiver's line of the Sandes-shaped answer: the text message's result, with
    the file message's refusal in its place when only the file was refused."""
    answer = text.result
    refusal = answer if isinstance(answer, Refused) else None
    detail = answer.detail
    if refusal is None and file is not None and isinstance(file.result, Refused):
        refusal, detail = file.result, f"file: {file.result.detail}"
    return {
        "receiver": text.to,
        "message_id": answer.message_id,
        "file_message_id": None if file is None else file.result.message_id,
        "status": "refused" if isinstance(answer, Refused) else answer.status.value,
        "error": None if refusal is None else refusal.error,
        "detail": detail,
    }


def _send_options(value: dict[str, Any]) -> dict[str, Any]:
    text, otp = value.get("text"), value.get("otp")
    if (text is None) == (otp is None) or not isinstance(text or otp, str):
        raise _Refused(400, "invalid_request", "give either text or otp, as a string")
    priority = value.get("priority", "high" if otp is not None else "normal")
    if priority not in tuple(Priority):
        raise _Refused(400, "invalid_request", f"priority must be {Priority.choices()}")
    ttl = value.get("ttl", 600)
    auto_delete = value.get("auto_delete")
    if type(ttl) is not int or not 0 < ttl * 1000 <= MAX_LIFETIME_MS:
        raise _Refused(400, "invalid_request", "ttl must be 1 s to 30 days, in seconds")
    if auto_delete is not None and type(auto_delete) is not int:
        raise _Refused(400, "invalid_request", "auto_delete must be whole seconds")
    options: dict[str, Any] = {
        "text": text,
        "otp": otp,
        "purpose": str(value.get("purpose", "login")),
        "priority": Priority(priority),
        "ttl_s": ttl,
        "auto_delete_s": auto_delete,
    }
    if isinstance(value.get("message_id"), str):
        options["message_id"] = value["message_id"]
    return options


def _check_sandes(
    request: web.Request, raw: bytes, credentials: AppCredentials, seen: SeenMacs
) -> None:
    headers = request.headers
    presented_id = headers.get("clientid", "").encode("utf-8", "surrogateescape")
    presented_secret = headers.get("clientsecret", "").encode("utf-8", "surrogateescape")
    try:
        presented_mac = base64.b64decode(headers.get("hmac", ""), validate=True)
    except ValueError:
        presented_mac = b""
    stamp = headers.get("timestamp")
    signed = raw if stamp is None else stamp.encode("utf-8", "surrogateescape") + b"." + raw
    expected = body_mac(credentials.hmac_key, signed)
    checks = [
        hmac.compare_digest(presented_id, credentials.client_id.encode()),
        hmac.compare_digest(presented_secret, credentials.client_secret.encode()),
        hmac.compare_digest(presented_mac, expected),
    ]
    if not all(checks):
        raise _Refused(401, "unauthenticated", "clientid, clientsecret or hmac is wrong")
    window = UNSTAMPED_REPLAY_WINDOW_S
    if stamp is not None:
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or (
            abs(time.time() - int(stamp)) > TIMESTAMP_WINDOW_S
        ):
            raise _Refused(
                401,
                "unauthenticated",
                f"timestamp must be unix seconds within {TIMESTAMP_WINDOW_S} s of the clock",
            )
        window = 2 * TIMESTAMP_WINDOW_S + 1
    if not seen.first_time(expected, window):
        raise _Refused(401, "unauthenticated", "this request was sent before (a replay)")


def _allowed_file_url(url: str, allowed: tuple[str, ...]) -> yarl.URL:
    """``url`` as it will be fetched, if it lies under one of ``allowed``.

    Raises: _Refused: Not an http(s) URL under an allowed prefix, or none allowed.
    """
    if not allowed:
        raise _Refused(
            400, "invalid_request", "file_url is not enabled here (CMAAS_CLIENT_FILE_URLS)"
        )
    try:
        target = yarl.URL(url)
    except (ValueError, TypeError) as error:
        raise _Refused(400, "invalid_request", "file_url is not a URL") from error
    segments = target.path.split("/")
    if (
        target.user is not None
        or target.password is not None
        or "." in segments
        or ".." in segments
    ):
        raise _Refused(400, "invalid_request", "file_url must not hold credentials or dot segments")
    for prefix in allowed:
        base = yarl.URL(prefix)
        base_path = base.path if base.path.endswith("/") else base.path + "/"
        if (
            target.scheme == base.scheme
            and target.host == base.host
            and target.port == base.port
            and (target.path + "/").startswith(base_path)
        ):
            return target
    raise _Refused(
        403, "file_url_not_allowed", "file_url is not under a prefix in CMAAS_CLIENT_FILE_URLS"
    )


def _sandes_options(value: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Map a Sandes multicast body onto a send: ``type`` ``otp`` sends the message as a
    one-time password (``title`` or ``category`` as its purpose); anything else sends
    ``title`` and ``message`` as text."""
    message, receivers = value.get("message"), value.get("receivers")
    if not isinstance(message, str) or not message:
        raise _Refused(400, "invalid_request", "message is required")
    if (
        not isinstance(receivers, list)
        or not receivers
        or not all(isinstance(r, str) for r in receivers)
    ):
        raise _Refused(400, "invalid_request", "receivers must be a list of emails or mobiles")
    file_url = value.get("file_url")
    if file_url and (
        not isinstance(file_url, str) or not file_url.startswith(("http://", "https://"))
    ):
        raise _Refused(400, "invalid_request", "file_url must be an http(s) URL")
    title = str(value.get("title") or "")
    kind = str(value.get("type") or "").lower()
    options: dict[str, Any] = {"ttl_s": _ttl(value.get("expire_on"))}
    if kind == "otp":
        options |= {
            "otp": message,
            "purpose": title or str(value.get("category") or "otp"),
            "priority": Priority.HIGH,
        }
    else:
        options |= {
            "text": f"{title}\n\n{message}" if title else message,
            "priority": Priority.NORMAL,
        }
    return receivers, options


@contextlib.asynccontextmanager
async def _fetched(
    client: GatewayClient, url: yarl.URL, timeout_s: float
) -> AsyncIterator[tuple[Path, str, str]]:
    """Fetch the app's file from ``url`` (on the app's side, usually this host) into a
    private temporary file, deleted on exit, without following redirects (they could
    lead anywhere) and within ``timeout_s``. Yields its path, name and media type."""
    local = client.config.state_dir / f".incoming-{secrets.token_hex(8)}"
    name = Path(url.path).name or "file"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise _Refused(502, "file_unavailable", f"file_url answered HTTP {response.status}")
            size = 0
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
            with os.fdopen(os.open(local, flags, 0o600), "wb") as out:
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > _MAX_FILE:
                        raise _Refused(
                            413, "payload_too_large", f"file_url is over {_MAX_FILE} bytes"
                        )
                    out.write(chunk)
            media_type = response.headers.get("Content-Type", "application/octet-stream")
        yield local, name, media_type.split(";")[0].strip() or "application/octet-stream"
    except aiohttp.ClientError as error:
        raise _Refused(502, "file_unavailable", f"file_url: {error}") from error
    except TimeoutError as error:
        raise _Refused(
            502, "file_unavailable", f"file_url did not answer within {timeout_s:g} s"
        ) from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            local.unlink()


def _ttl(expire_on: object) -> int:
    """Seconds until ``expire_on`` (ISO 8601, or unix seconds or milliseconds); 600 when
    absent."""
    if expire_on in (None, ""):
        return 600
    now = time.time()
    try:
        if isinstance(expire_on, int | float) or (
            isinstance(expire_on, str) and expire_on.isascii() and expire_on.isdigit()
        ):
            stamp = float(expire_on)
            when = stamp / 1000 if stamp > 1e11 else stamp
        elif isinstance(expire_on, str):
            parsed = datetime.datetime.fromisoformat(expire_on)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            when = parsed.timestamp()
        else:
            raise ValueError(expire_on)
    except (ValueError, OverflowError) as error:
        raise _Refused(400, "invalid_request", "expire_on is not a date") from error
    ttl = int(when - now)
    if not 0 < ttl * 1000 <= MAX_LIFETIME_MS:
        raise _Refused(400, "invalid_request", "expire_on must be in the next 30 days")
    return ttl


class _SignedPoster:
    """POSTs JSON bodies to one of the app's local URLs, each until a 2xx; signed like the
    gateway's webhooks, with the app's HMAC key."""

    def __init__(self, url: str, hmac_key: bytes, session: aiohttp.ClientSession) -> None:
        self._url = url
        self._key = hmac_key
        self._session = session

    async def _post(self, document: dict[str, object]) -> None:
        body = json.dumps(document, separators=(",", ":")).encode()
        delay = 0.5
        while True:
            headers = {
                "Content-Type": "application/json",
                "X-CMAAS-Signature": webhook_signature(self._key, int(time.time()), body),
            }
            try:
                async with self._session.post(self._url, data=body, headers=headers) as answer:
                    if 200 <= answer.status < 300:
                        return
                    reason = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = type(error).__name__
            log.warning("local webhook %s: %s; retrying in %.1f s", self._url, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


class StatusRelay(_SignedPoster):
    """Relays status events to the app's local webhook, in order, each until a 2xx."""

    async def __call__(self, event: StatusEvent) -> None:
        await self._post({"events": [event.to_json()]})


class ReplyRelay(_SignedPoster):
    """Relays what people write back from their OMEMO clients to the app's local reply
    webhook, in order, each until a 2xx."""

    async def __call__(self, reply: OmemoReply) -> None:
        await self._post(
            {
                "replies": [
                    {
                        "seq": reply.seq,
                        "from": reply.sender,
                        "device_id": reply.device_id,
                        "text": reply.text,
                        "received_ms": reply.received_ms,
                    }
                ]
            }
        )
