"""A signed client of the gateway's HTTP API.

Every request carries the app's client id and secret, a timestamp, a fresh nonce and
the HMAC over them and the body; every refusal becomes an :class:`ApiError` with the
gateway's code and detail.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from cmaas.clientservice.errors import ClientServiceError
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
    OmemoInboundPage,
    SigningKeyRequest,
    Submission,
    SubmissionResult,
    submission_result,
)
from cmaas.wire.signing import request_headers

__all__ = ["IDLE_CONNECTION_S", "ApiError", "AppCredentials", "GatewayApi", "gateway_session"]

# The gateway closes a connection that brings no request head within 10 s
# (``header_timeout_s``); aiohttp keeps an idle one 15 s by default, so a request after a
# pause of 10 to 15 s met a closing connection and failed once. Let go of it earlier.
IDLE_CONNECTION_S = 5.0


def gateway_session() -> aiohttp.ClientSession:
    """An HTTP session for the gateway's API, which lets go of idle connections before
    the gateway closes them."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(keepalive_timeout=IDLE_CONNECTION_S)
    )


class ApiError(ClientServiceError):
    """The gateway refused a request.

    Attributes:
        status: The HTTP status.
        code: The gateway's error code (``unauthenticated``, ``rate_limited``, ...).
        detail: Its explanation.
        retry_after: Seconds to wait before trying again, when the gateway said.
    """

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """What ``app-register`` shows once."""

    client_id: str
    client_secret: str = field(repr=False)
    hmac_key: bytes = field(repr=False)

    @classmethod
    def from_issued(cls, issued: dict[str, Any]) -> AppCredentials:
        """From ``cmaas admin --json app-register`` output (the HMAC key in base64)."""
        return cls(
            issued["client_id"], issued["client_secret"], base64.b64decode(issued["hmac_key"])
        )


class GatewayApi:
    """Signed requests to one gateway as one app."""

    def __init__(
        self,
        base_url: str,
        credentials: AppCredentials,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._session = session
        self._clock = clock

    def signed_headers(self, method: str, path: str, body: bytes | str) -> dict[str, str]:
        """The five authentication headers for one request to ``path`` (with its query);
        ``body`` is the body, or its SHA-256 in hex for a body streamed from a file."""
        credentials = self._credentials
        return request_headers(
            credentials.client_id,
            credentials.client_secret,
            credentials.hmac_key,
            method,
            path,
            body,
            timestamp=str(int(self._clock())),
            nonce=secrets.token_urlsafe(18),
        )

    async def request(self, method: str, path: str, payload: object = None) -> Any:
        """Send one signed request; returns the decoded JSON answer (``None`` for 204).

        Raises:
            ApiError: The gateway answered with an error.
            aiohttp.ClientError: The gateway could not be reached.
        """
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = self.signed_headers(method, path, body)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        # encoded=True: the path goes out byte for byte as signed, never re-quoted.
        url = URL(self.base_url + path, encoded=True)
        async with self._session.request(method, url, data=body, headers=headers) as response:
            if response.status == 204:
                return None
            answer = await response.json(content_type=None)
            if response.status >= 400:
                raise _refusal(response.status, answer, response.headers.get("Retry-After"))
            return answer

    async def describe(self) -> AppInfo:
        """``GET /v1/app``: this app's id, the JID it sends as, and its settings."""
        return AppInfo.from_json(await self.request("GET", "/v1/app"))

    async def upload_blob(self, path: Path, digest: str, expires_in: int) -> BlobReceipt:
        """``POST /v1/blobs``: stream an encrypted blob from ``path`` (``digest``: its
        SHA-256 in hex, which the signature covers). Returns the blob's capability URL.

        Raises: ApiError, aiohttp.ClientError, WireError.
        """
        target = f"/v1/blobs?expires_in={expires_in}"
        headers = self.signed_headers("POST", target, digest)
        headers["Content-Type"] = "application/octet-stream"
        url = URL(self.base_url + target, encoded=True)
        with path.open("rb") as blob:
            async with self._session.post(url, data=blob, headers=headers) as response:
                answer = await response.json(content_type=None)
                if response.status >= 400:
                    raise _refusal(response.status, answer, None)
                return BlobReceipt.from_json(answer)

    async def lookup(self, to: str) -> KeyLookup:
        """``GET /v1/keys``: the recipient's JID and one bundle per active device."""
        return KeyLookup.from_json(await self.request("GET", f"/v1/keys?to={quote(to, safe='')}"))

    async def register_signing_key(self, public_key_b64url: str) -> str:
        """``POST /v1/signing-keys``; returns the key's fingerprint."""
        body = SigningKeyRequest(public_key_b64url).to_json()
        answer = await self.request("POST", "/v1/signing-keys", body)
        return str(answer["fingerprint"])

    async def submit(self, message: Submission) -> Accepted:
        """``POST /v1/messages``: answered once the message is durably stored."""
        return Accepted.from_json(await self.request("POST", "/v1/messages", message.to_json()))

    async def submit_batch(self, messages: Sequence[Submission]) -> list[SubmissionResult]:
        """``POST /v1/messages:batch``: one result per message, in order."""
        body = {"messages": [message.to_json() for message in messages]}
        answer = await self.request("POST", "/v1/messages:batch", body)
        return [submission_result(result) for result in answer["results"]]

    async def status(self, message_id: str) -> MessageView:
        """``GET /v1/messages/{id}``: status, per-device progress and history."""
        return MessageView.from_json(await self.request("GET", f"/v1/messages/{message_id}"))

    async def events(self, after: int = 0, wait: int = 0) -> EventsPage:
        """``GET /v1/events``: the app's status events after a cursor (long-poll)."""
        return EventsPage.from_json(
            await self.request("GET", f"/v1/events?after={after}&wait={wait}")
        )

    async def omemo_devices(self) -> OmemoDevices:
        """``GET /v1/omemo/devices``: the app's OMEMO devices with their bundles."""
        return OmemoDevices.from_json(await self.request("GET", "/v1/omemo/devices"))

    async def publish_omemo_device(self, bundle: OmemoBundle) -> None:
        """``PUT /v1/omemo/devices/{id}``: publish or replace one device's bundle."""
        await self.request("PUT", f"/v1/omemo/devices/{bundle.device_id}", bundle.to_json())

    async def retire_omemo_device(self, device_id: int) -> None:
        """``DELETE /v1/omemo/devices/{id}``."""
        await self.request("DELETE", f"/v1/omemo/devices/{device_id}")

    async def omemo_inbound(self, after: int = 0, wait: int = 0) -> OmemoInboundPage:
        """``GET /v1/omemo/inbound``: what people's clients sent to the app's JID (long-poll)."""
        return OmemoInboundPage.from_json(
            await self.request("GET", f"/v1/omemo/inbound?after={after}&wait={wait}")
        )

    async def send_key_transport(self, request: KeyTransportRequest) -> None:
        """``POST /v1/omemo/key-transports``: sent at once from the app's JID."""
        await self.request("POST", "/v1/omemo/key-transports", request.to_json())


def _refusal(status: int, answer: object, retry: str | None) -> ApiError:
    fields = answer if isinstance(answer, dict) else {}
    return ApiError(
        status,
        str(fields.get("error", "")),
        str(fields.get("detail", "")),
        float(retry) if retry and retry.isascii() and retry.isdigit() else None,
    )
