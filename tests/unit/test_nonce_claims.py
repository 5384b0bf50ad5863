"""A request that submits messages claims its nonce in the transaction that stores
them, on both backends, through the real API routes: a replay is refused, a request
whose messages could not be stored may be retried with its nonce, a body refused
before storing claims it alone, and no separate write is paid for it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cmaas.api import error_middleware
from cmaas.clientservice import AppCredentials, GatewayApi
from cmaas.envelope import fingerprint, generate_private_key, point_bytes, seal
from cmaas.identifiers import parse_network
from cmaas.keystore import IssuedCredentials, NewApp, RequestNonce, issue_credentials
from tests.api_harness import idle_metrics, routes_over

from .conftest import AnyKeystore
from .envelope_fixtures import TEXT, make_keyring, sender_bundle

DOMAIN = "gateway.cmaas.test"


@pytest.fixture
def keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    return any_keystore


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    credentials: IssuedCredentials
    separate_claims: list[RequestNonce]
    app_key: Any

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """A request's headers, with a fresh nonce: the same again is a replay."""
        credentials = AppCredentials(
            self.credentials.client_id, self.credentials.client_secret, self.credentials.hmac_key
        )
        return GatewayApi("http://unused", credentials, self.client.session).signed_headers(
            method, path, body
        )

    async def call(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        response = await self.client.request(method, path, headers=headers, data=body)
        async with response:
            return response.status, await response.json(content_type=None)

    def message(self, message_id: str) -> bytes:
        now_ms = int(time.time() * 1000)
        envelope = seal(
            TEXT,
            message_id=message_id,
            app_jid=f"shop@{DOMAIN}",
            recipient_jid="alice@cmaas.test",
            bundles=[sender_bundle(make_keyring("alice@cmaas.test"))],
            app_key=self.app_key,
            created_ms=now_ms,
            expires_ms=now_ms + 3_600_000,
        )
        item = {
            "message_id": message_id,
            "to": "alice@cmaas.test",
            "priority": "normal",
            "envelope": envelope.to_bytes().decode(),
        }
        return json.dumps(item).encode()


@pytest.fixture
async def api(keystore: AnyKeystore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    credentials = issue_credentials("cid-shop")
    await keystore.create_app(
        NewApp("shop", "Shop", "default", networks=(parse_network("127.0.0.0/8"),)), credentials
    )
    app_key = generate_private_key()
    public = app_key.public_key()
    await keystore.add_signing_key("shop", fingerprint(public), point_bytes(public))
    metrics = idle_metrics()
    separate_claims: list[RequestNonce] = []
    claim = keystore.messages.claim_nonce

    async def counted_claim(nonce: RequestNonce) -> bool:
        separate_claims.append(nonce)
        return await claim(nonce)

    monkeypatch.setattr(keystore.messages, "claim_nonce", counted_claim)
    http = web.Application(middlewares=[error_middleware(metrics)])
    http.add_routes(routes_over(keystore, metrics))
    async with TestClient(TestServer(http)) as client:
        yield Api(client, credentials, separate_claims, app_key)


async def test_a_submission_claims_its_nonce_with_its_messages_and_a_replay_is_refused(
    api: Api, keystore: AnyKeystore
) -> None:
    body = api.message("m1")
    headers = api.headers("POST", "/v1/messages", body)
    status, answer = await api.call("POST", "/v1/messages", body, headers)
    assert status == 202, answer
    assert api.separate_claims == []  # no write of its own
    status, answer = await api.call("POST", "/v1/messages", body, headers)
    assert (status, answer["error"]) == (401, "unauthenticated")
    assert "used before" in answer["detail"]
    # A batch, too.
    batch = json.dumps({"messages": [json.loads(api.message("m2"))]}).encode()
    headers = api.headers("POST", "/v1/messages:batch", batch)
    status, answer = await api.call("POST", "/v1/messages:batch", batch, headers)
    assert status == 200 and answer["results"][0]["message_id"] == "m2", answer
    status, answer = await api.call("POST", "/v1/messages:batch", batch, headers)
    assert (status, "used before" in answer["detail"]) == (401, True)
    assert api.separate_claims == []
    assert (await keystore.app_counters("shop")).submitted_today == 2


async def test_a_submission_that_was_not_stored_may_be_retried_with_its_nonce(
    api: Api, keystore: AnyKeystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit = keystore.messages.submit

    async def failing(*args: Any, **kwargs: Any) -> Sequence[object]:
        raise OSError("the database went away")

    monkeypatch.setattr(keystore.messages, "submit", failing)
    body = api.message("m1")
    headers = api.headers("POST", "/v1/messages", body)
    response = await api.client.post("/v1/messages", headers=headers, data=body)
    assert response.status == 500
    monkeypatch.setattr(keystore.messages, "submit", submit)
    status, answer = await api.call("POST", "/v1/messages", body, headers)
    assert status == 202, answer


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", b"{not json"),
        ("/v1/messages:batch", b'{"messages": {}}'),
        ("/v1/messages:batch", b'{"messages": []}'),  # refused by the submission service
    ],
)
async def test_a_submission_refused_before_storing_claims_its_nonce_alone(
    api: Api, path: str, body: bytes
) -> None:
    headers = api.headers("POST", path, body)
    status, answer = await api.call("POST", path, body, headers)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert len(api.separate_claims) == 1
    status, answer = await api.call("POST", path, body, headers)
    assert (status, "used before" in answer["detail"]) == (401, True)


async def test_a_request_that_stores_no_message_claims_its_nonce_first(api: Api) -> None:
    headers = api.headers("GET", "/v1/app", b"")
    status, _ = await api.call("GET", "/v1/app", b"", headers)
    assert (status, len(api.separate_claims)) == (200, 1)
    status, answer = await api.call("GET", "/v1/app", b"", headers)
    assert (status, "used before" in answer["detail"]) == (401, True)
