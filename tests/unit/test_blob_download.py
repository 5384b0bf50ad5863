"""``GET /v1/blobs/{id}`` on both backends: a blob streamed out whole with its length,
a blob whose bytes are gone answered 404, as an expired one is, and the one CORS header
of the API, on this download only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cmaas.api import routes as routes_module
from cmaas.api.addresses import ClientAddresses
from cmaas.api.routes import api_routes, error_middleware
from cmaas.delivery.auth import RequestAuthenticator
from cmaas.delivery.blobs import BlobLimits, BlobService
from cmaas.delivery.metrics import GatewayMetrics
from cmaas.delivery.service import Messaging
from cmaas.keystore import NewApp, issue_credentials
from cmaas.keystore.blobs import BLOB_CHUNK_BYTES

from .conftest import AnyKeystore, Database


@pytest.fixture
async def blobs(any_keystore: AnyKeystore) -> BlobService:
    await any_keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    return BlobService(any_keystore.blobs, BlobLimits(4 * BLOB_CHUNK_BYTES, 10**9))


@pytest.fixture
async def client(blobs: BlobService) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    # Downloads use none of the other routes' collaborators.
    unused = object()
    app = web.Application(middlewares=[error_middleware()])
    app.add_routes(
        api_routes(
            cast(Messaging, unused),
            cast(RequestAuthenticator, unused),
            ClientAddresses([]),
            cast(GatewayMetrics, unused),
            blobs=blobs,
        )
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _upload(blobs: BlobService, data: bytes) -> str:
    async def body() -> AsyncIterator[bytes]:
        yield data

    blob_id, _ = await blobs.accept("shop", await blobs.stage(body()), 600)
    return blob_id


async def test_a_blob_is_streamed_out_whole_with_its_length(
    blobs: BlobService, client: TestClient[web.Request, web.Application]
) -> None:
    data = os.urandom(BLOB_CHUNK_BYTES * 2 + 7)
    blob_id = await _upload(blobs, data)
    response = await client.get(f"/v1/blobs/{blob_id}")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.read() == data
    empty = await client.get(f"/v1/blobs/{await _upload(blobs, b'')}")
    assert (empty.status, await empty.read()) == (200, b"")


async def test_a_blob_whose_bytes_are_gone_is_not_found(
    blobs: BlobService,
    client: TestClient[web.Request, web.Application],
    any_keystore: AnyKeystore,
    database: Database,
) -> None:
    blob_id = await _upload(blobs, b"ciphertext")
    # Behind the store's back, as an expiry between the lookup and the read would.
    if database.backend == "sqlite":
        (any_keystore.blobs.staging / blob_id).unlink()
    else:
        database.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (blob_id,))
    response = await client.get(f"/v1/blobs/{blob_id}")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_only_the_blob_download_may_be_read_by_another_origin(
    blobs: BlobService, client: TestClient[web.Request, web.Application]
) -> None:
    blob_id = await _upload(blobs, b"ciphertext")
    download = await client.get(f"/v1/blobs/{blob_id}", headers={"Origin": "http://127.0.0.1:5290"})
    assert download.status == 200
    assert download.headers["Access-Control-Allow-Origin"] == "*"
    # The page's fetch is a simple GET: no preflight, and none is answered.
    answers = [
        await client.options(f"/v1/blobs/{blob_id}"),
        await client.get("/v1/blobs/" + "A" * 43),
        await client.delete(f"/v1/blobs/{blob_id}"),
        await client.get("/metrics"),
        await client.get("/v1/no-such-route"),
    ]
    assert [answer.status for answer in answers] == [405, 404, 405, 403, 404]
    for answer in answers:
        assert not any(name.lower().startswith("access-control-") for name in answer.headers)
    # The header is written in exactly one place: no other route can carry it.
    sources = Path(routes_module.__file__).parent.parent.rglob("*.py")
    writers = [path for path in sources if "Access-Control-Allow" in path.read_text()]
    assert writers == [Path(routes_module.__file__)]
    assert Path(routes_module.__file__).read_text().count("Access-Control-Allow-Origin") == 1
