"""The HTTP API's routes. Handlers translate HTTP into calls on the delivery engine and
back; :func:`error_middleware` is the one place refusals become HTTP answers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from cmaas.api.addresses import ClientAddresses
from cmaas.api.door import Door, DoorLimits
from cmaas.delivery.auth import RequestAuthenticator, SignedRequest
from cmaas.delivery.blobs import BlobService
from cmaas.delivery.errors import (
    ForbiddenAddress,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Refusal,
)
from cmaas.delivery.metrics import CONTENT_TYPE, GatewayMetrics
from cmaas.delivery.omemo import parse_device_id
from cmaas.delivery.service import MAX_WAIT_S, Messaging
from cmaas.delivery.submission import submission_result
from cmaas.identifiers import IpNetwork
from cmaas.keystore import App, AuthenticatedApp, BlobMissing, RequestNonce
from cmaas.wire import BlobReceipt, SigningKeyRequest, WireError, parse_json_body
from cmaas.wire.http import refusal_response, router_refusal

__all__ = ["api_routes", "error_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Operation = Callable[[web.Request, App, bytes], Awaitable[web.StreamResponse]]
Submitting = Callable[[web.Request, App, bytes, RequestNonce], Awaitable[web.StreamResponse]]
"""An operation that stores messages, and claims the request's nonce as it does."""
Verified = Callable[[web.Request, AuthenticatedApp, bytes], Awaitable[web.StreamResponse]]

T = TypeVar("T")

log = logging.getLogger(__name__)


def _error_response(error: Refusal) -> web.Response:
    return refusal_response(error.status, error.code, error.detail, error.retry_after)


def error_middleware(metrics: GatewayMetrics | None = None) -> Any:
    """Every refusal as ``{"error": CODE, "detail": TEXT}`` with its status, including
    aiohttp's own (unknown path, wrong method, body too large)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as error:
            if metrics is not None:
                metrics.on_refused(error)
            return _error_response(error)
        except WireError as error:
            refusal = InvalidRequest(str(error))
            if metrics is not None:
                metrics.on_refused(refusal)
            return _error_response(refusal)
        except web.HTTPRequestEntityTooLarge as error:
            return _error_response(PayloadTooLarge(error.text or "the body is too large"))
        except web.HTTPException as error:
            return router_refusal(request, error)

    return middleware


def _integer(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name, str(default))
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) > high:
        raise InvalidRequest(f"{name} must be a whole number from 0 to {high}")
    return int(text)


def _batch_items(body: bytes) -> list[object]:
    """Raises: InvalidRequest, WireError: Not ``{"messages": [...]}``."""
    value = parse_json_body(body)
    if not isinstance(value, dict) or set(value) != {"messages"}:
        raise InvalidRequest('the body must be {"messages": [...]}')
    items = value["messages"]
    if not isinstance(items, list):
        raise InvalidRequest("messages must be a list")
    return items


def api_routes(
    messaging: Messaging,
    authenticator: RequestAuthenticator,
    addresses: ClientAddresses,
    metrics: GatewayMetrics,
    metrics_networks: Sequence[IpNetwork] = (),
    blobs: BlobService | None = None,
    door: Door | None = None,
) -> list[web.RouteDef]:
    """The API's routes; ``/metrics`` answers only clients in ``metrics_networks``.
    ``door`` holds the per-app caps and body deadlines (default limits when ``None``);
    its middleware belongs on the application too."""
    door = door or Door(DoorLimits())

    def signed_request(request: web.Request, body: bytes | str) -> SignedRequest:
        headers = request.headers
        return SignedRequest(
            method=request.method,
            path=request.raw_path,
            body=body,
            client_id=headers.get("X-CMAAS-Client-Id", ""),
            client_secret=headers.get("X-CMAAS-Client-Secret", ""),
            timestamp=headers.get("X-CMAAS-Timestamp", ""),
            nonce=headers.get("X-CMAAS-Nonce", ""),
            signature=headers.get("X-CMAAS-Signature", ""),
            peer=addresses.client(request),
        )

    async def precheck(request: web.Request) -> AuthenticatedApp:
        """Raises: Unauthenticated, ForbiddenAddress, AppSuspended, InvalidRequest."""
        if len(request.query) != len(set(request.query)):
            # The signature covers the query as sent, but which of two values counts
            # differs between parsers; refused rather than guessed.
            raise InvalidRequest("a query parameter is repeated")
        headers = request.headers
        return await authenticator.precheck(
            headers.get("X-CMAAS-Client-Id", ""),
            headers.get("X-CMAAS-Client-Secret", ""),
            addresses.client(request),
        )

    def behind_door(verified: Verified) -> Handler:
        """The checks in the order that costs least: the credentials, address and
        standing from the headers; the app's share of requests in flight; then the
        body (within its deadline), which ``verified`` checks the signature of."""

        async def handler(request: web.Request) -> web.StreamResponse:
            authenticated = await precheck(request)
            with door.app_request(authenticated.app.app_id):
                body = await door.read_body(request)
                return await verified(request, authenticated, body)

        return handler

    def signed(operation: Operation) -> Handler:
        """An operation behind the whole check, its nonce claimed before it runs."""

        async def verified(
            request: web.Request, authenticated: AuthenticatedApp, body: bytes
        ) -> web.StreamResponse:
            await authenticator.verify(authenticated, signed_request(request, body))
            return await operation(request, authenticated.app, body)

        return behind_door(verified)

    def signed_submission(operation: Submitting) -> Handler:
        """An operation that stores messages, behind the whole check: its nonce is
        claimed in the transaction that stores them (a replay is refused; a request
        that failed to be stored may be retried with the same nonce)."""

        async def verified(
            request: web.Request, authenticated: AuthenticatedApp, body: bytes
        ) -> web.StreamResponse:
            nonce = await authenticator.verify_pending(authenticated, signed_request(request, body))
            return await operation(request, authenticated.app, body, nonce)

        return behind_door(verified)

    async def parsed(nonce: RequestNonce, parse: Callable[[], T]) -> T:
        """What ``parse`` makes of a submission's body; a body it refuses stores
        nothing, and claims the request's nonce on its own (a replay of it is refused
        as a replay).

        Raises: InvalidRequest, WireError; Unauthenticated: A replay.
        """
        try:
            return parse()
        except (Refusal, WireError):
            await authenticator.claim(nonce)
            raise

    async def whoami(request: web.Request, app: App, body: bytes) -> web.Response:
        return web.json_response(messaging.describe(app).to_json())

    async def keys(request: web.Request, app: App, body: bytes) -> web.Response:
        to = request.query.get("to", "")
        if not to:
            raise InvalidRequest("give the recipient as ?to=JID, email or +E.164 number")
        return web.json_response((await messaging.lookup(app, to)).to_json())

    async def submit(
        request: web.Request, app: App, body: bytes, nonce: RequestNonce
    ) -> web.Response:
        item = await parsed(nonce, lambda: parse_json_body(body))
        (outcome,) = await messaging.submit(app, [item], nonce=nonce)
        if isinstance(outcome, Refusal):
            raise outcome
        return web.json_response(submission_result(outcome).to_json(), status=202)

    async def submit_batch(
        request: web.Request, app: App, body: bytes, nonce: RequestNonce
    ) -> web.Response:
        items = await parsed(nonce, lambda: _batch_items(body))
        outcomes = await messaging.submit(app, items, nonce=nonce)
        return web.json_response(
            {
                "results": [
                    submission_result(outcome, item).to_json()
                    for outcome, item in zip(outcomes, items, strict=True)
                ]
            }
        )

    async def status(request: web.Request, app: App, body: bytes) -> web.Response:
        view = await messaging.status(app, request.match_info["message_id"])
        return web.json_response(view.to_json())

    async def events(request: web.Request, app: App, body: bytes) -> web.Response:
        after = _integer(request, "after", 0, 2**63 - 1)
        wait = _integer(request, "wait", 0, int(MAX_WAIT_S))
        if not wait:
            return web.json_response((await messaging.events(app, after, wait)).to_json())
        with door.long_poll(app.app_id):
            return web.json_response((await messaging.events(app, after, wait)).to_json())

    async def add_signing_key(request: web.Request, app: App, body: bytes) -> web.Response:
        key = SigningKeyRequest.from_json(parse_json_body(body))
        digest, added = await messaging.register_signing_key(app, key)
        return web.json_response({"fingerprint": digest}, status=201 if added else 200)

    async def list_signing_keys(request: web.Request, app: App, body: bytes) -> web.Response:
        return web.json_response({"fingerprints": await messaging.signing_keys(app)})

    async def retire_signing_key(request: web.Request, app: App, body: bytes) -> web.Response:
        await messaging.retire_signing_key(app, request.match_info["fingerprint"])
        return web.Response(status=204)

    async def publish_omemo_device(request: web.Request, app: App, body: bytes) -> web.Response:
        device_id = parse_device_id(request.match_info["device_id"])
        added = await messaging.omemo.publish(app, device_id, parse_json_body(body))
        return web.Response(status=201 if added else 204)

    async def retire_omemo_device(request: web.Request, app: App, body: bytes) -> web.Response:
        await messaging.omemo.retire(app, parse_device_id(request.match_info["device_id"]))
        return web.Response(status=204)

    async def list_omemo_devices(request: web.Request, app: App, body: bytes) -> web.Response:
        return web.json_response((await messaging.omemo.devices(app)).to_json())

    async def omemo_inbound(request: web.Request, app: App, body: bytes) -> web.Response:
        after = _integer(request, "after", 0, 2**63 - 1)
        wait = _integer(request, "wait", 0, int(MAX_WAIT_S))
        if not wait:
            return web.json_response((await messaging.omemo.inbound(app, after, 0)).to_json())
        with door.long_poll(app.app_id):
            page = await messaging.omemo.inbound(app, after, wait)
        return web.json_response(page.to_json())

    async def send_key_transport(request: web.Request, app: App, body: bytes) -> web.Response:
        await messaging.omemo.send_key_transport(app, parse_json_body(body))
        return web.json_response({"sent": True}, status=202)

    async def upload_blob(request: web.Request) -> web.Response:
        if blobs is None:
            raise NotFound("this gateway stores no blobs")
        # Credentials and standing first, so that no stranger can make the gateway write.
        authenticated = await precheck(request)
        app = authenticated.app
        lifetime = _integer(request, "expires_in", 86_400, 30 * 86_400)
        with door.app_request(app.app_id):
            await blobs.admit(app)
            staged = await blobs.stage(door.chunks(request))
            try:
                await authenticator.verify(authenticated, signed_request(request, staged.sha256))
            except Refusal:
                blobs.discard(staged.path)
                raise
            blob_id, expires_ms = await blobs.accept(app.app_id, staged, lifetime)
        url = f"{request.url.origin()}/v1/blobs/{blob_id}"
        receipt = BlobReceipt(blob_id, url, staged.size, expires_ms)
        return web.json_response(receipt.to_json(), status=201)

    async def download_blob(request: web.Request) -> web.StreamResponse:
        if blobs is None:
            raise NotFound("this gateway stores no blobs")
        blob = await blobs.find(request.match_info["blob_id"])
        body = request.method != "HEAD"
        # Closed however the answer ends (a client gone midway included): the bytes'
        # file or connection is let go now, not when the generator is collected.
        async with contextlib.aclosing(blob.chunks) as chunks:
            return await _send_blob(request, blob.size, chunks, body)

    async def _send_blob(
        request: web.Request, size: int, chunks: AsyncGenerator[bytes, None], body: bool
    ) -> web.StreamResponse:
        try:
            # Read before answering: bytes gone already (expired since) are still a 404.
            first = await anext(chunks) if size and body else b""
        except BlobMissing as error:
            raise NotFound("no such blob, or it expired") from error
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Cache-Control": "no-store",
                # The one route any origin may read (the web device's page): the blob is
                # ciphertext behind a capability URL, and no credentials are involved.
                "Access-Control-Allow-Origin": "*",
            }
        )
        response.content_length = size
        await response.prepare(request)
        try:
            if body:
                await response.write(first)
                async for chunk in chunks:
                    await response.write(chunk)
        except BlobMissing:
            # Expired mid-download: the connection ends short of the announced length,
            # which the client sees as a broken download.
            log.info("a blob expired during its download; the answer was cut short")
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def metrics_text(request: web.Request) -> web.Response:
        client = addresses.client(request)
        if not any(client in network for network in metrics_networks):
            raise ForbiddenAddress(f"/metrics is not served to {client} (CMAAS_METRICS_NETWORKS)")
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return [
        web.get("/v1/app", signed(whoami)),
        web.get("/v1/keys", signed(keys)),
        web.post("/v1/messages", signed_submission(submit)),
        web.post("/v1/messages:batch", signed_submission(submit_batch)),
        web.get("/v1/messages/{message_id}", signed(status)),
        web.get("/v1/events", signed(events)),
        web.post("/v1/signing-keys", signed(add_signing_key)),
        web.get("/v1/signing-keys", signed(list_signing_keys)),
        web.delete("/v1/signing-keys/{fingerprint}", signed(retire_signing_key)),
        web.get("/v1/omemo/devices", signed(list_omemo_devices)),
        web.put("/v1/omemo/devices/{device_id}", signed(publish_omemo_device)),
        web.delete("/v1/omemo/devices/{device_id}", signed(retire_omemo_device)),
        web.get("/v1/omemo/inbound", signed(omemo_inbound)),
        web.post("/v1/omemo/key-transports", signed(send_key_transport)),
        web.post("/v1/blobs", upload_blob),
        web.get("/v1/blobs/{blob_id}", download_blob),
        web.get("/metrics", metrics_text),
    ]
