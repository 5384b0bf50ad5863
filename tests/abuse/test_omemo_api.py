"""The OMEMO publishing routes over the real API and a real SQLite keystore: what an app
publishes is listed back, and hostile bundles, ids and counts get clear refusals that
store nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cmaas.delivery.omemo import OmemoLimits
from tests.omemo_bundles import bundle_json, public_key

from .test_api_abuse import Api, assert_refused


@pytest.fixture
def api() -> Iterator[Api]:
    harness = Api()
    yield harness
    harness.close()


def call(api: Api, method: str, path: str, body: object = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()

    async def send() -> tuple[int, Any]:
        response = await api.client.request(
            method,
            path,
            headers=api.signed(method, path, raw),
            data=raw,
            skip_auto_headers={"Content-Type"},
        )
        async with response:
            text = await response.read()
            return response.status, json.loads(text) if text else None

    return api.loop.run_until_complete(send())


def devices(api: Api) -> list[int]:
    status, answer = call(api, "GET", "/v1/omemo/devices")
    assert status == 200, answer
    return [device["device_id"] for device in answer["devices"]]


def test_publish_list_replace_and_retire(api: Api) -> None:
    assert devices(api) == []
    body = bundle_json(3)
    assert call(api, "PUT", "/v1/omemo/devices/31337", body) == (201, None)
    status, answer = call(api, "GET", "/v1/omemo/devices")
    assert status == 200
    assert answer == {"devices": [{"device_id": 31337, **body}]}
    again = {**bundle_json(1, spk_id=2), "identity_key": body["identity_key"]}
    assert call(api, "PUT", "/v1/omemo/devices/31337", again) == (204, None)
    assert call(api, "GET", "/v1/omemo/devices")[1]["devices"][0]["signed_prekey_id"] == 2
    assert call(api, "DELETE", "/v1/omemo/devices/31337") == (204, None)
    assert devices(api) == []
    status, answer = call(api, "DELETE", "/v1/omemo/devices/31337")
    assert status == 404 and answer["error"] == "not_found", answer


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/v1/omemo/devices/0", bundle_json(), "a whole number from 1 to 2147483647"),
        ("/v1/omemo/devices/2147483648", bundle_json(), "a whole number from 1 to"),
        ("/v1/omemo/devices/-5", bundle_json(), "a whole number from 1 to"),
        ("/v1/omemo/devices/99999999999999999999", bundle_json(), "a whole number from 1"),
        ("/v1/omemo/devices/1", {**bundle_json(), "identity_key": "***"}, "not base64"),
        (
            "/v1/omemo/devices/1",
            {**bundle_json(), "signed_prekey": base64.b64encode(bytes(33)).decode()},
            "type byte 0x05",
        ),
        ("/v1/omemo/devices/1", bundle_json(101), "101 prekeys; the limit is 100"),
        # A bundle past the contract's ceiling is past this door's body size as well.
        ("/v1/omemo/devices/1", bundle_json(1001), "Maximum request body size"),
        (
            "/v1/omemo/devices/1",
            {**bundle_json(), "prekeys": [{"id": 2**31, "key": public_key()}]},
            "must be between 1 and 2147483647",
        ),
        ("/v1/omemo/devices/1", [], "bundle must be a JSON object"),
        ("/v1/omemo/devices/1", {**bundle_json(), "device_id": 2}, "not the path's 1"),
    ],
)
def test_hostile_publications_are_refused(api: Api, path: str, body: object, detail: str) -> None:
    status, answer = call(api, "PUT", path, body)
    assert_refused(status, answer)
    assert status == (413 if "body size" in detail else 400), answer
    assert detail in answer["detail"], answer
    # Nothing was stored, and the same route takes a good bundle right after.
    assert devices(api) == []
    assert call(api, "PUT", "/v1/omemo/devices/1", bundle_json())[0] == 201


def test_too_many_devices_and_a_changed_identity_are_refused(api: Api) -> None:
    limit = OmemoLimits().max_devices
    first = bundle_json()
    for device_id in range(1, limit + 1):
        body = first if device_id == 1 else bundle_json(1)
        assert call(api, "PUT", f"/v1/omemo/devices/{device_id}", body)[0] == 201
    status, answer = call(api, "PUT", f"/v1/omemo/devices/{limit + 1}", bundle_json())
    assert status == 400, answer
    assert f"has {limit} OMEMO devices; the limit is {limit}" in answer["detail"]
    status, answer = call(api, "PUT", "/v1/omemo/devices/1", bundle_json())
    assert status == 400 and "has another identity key" in answer["detail"], answer
    assert devices(api) == list(range(1, limit + 1))
    # Retiring one makes room again.
    assert call(api, "DELETE", "/v1/omemo/devices/3")[0] == 204
    assert call(api, "PUT", f"/v1/omemo/devices/{limit + 1}", bundle_json())[0] == 201


def test_the_routes_need_a_signed_request(api: Api) -> None:
    async def unsigned() -> int:
        response = await api.client.request("GET", "/v1/omemo/devices")
        async with response:
            return response.status

    assert api.loop.run_until_complete(unsigned()) == 401
