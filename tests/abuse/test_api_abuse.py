"""Hostile HTTP requests against the real API routes over a real SQLite keystore: forged
or malformed authentication, and correctly signed but hostile bodies and queries. Each
gets a JSON error or a per-message refusal; nothing crashes; nothing is stored."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmaas.api import error_middleware
from cmaas.identifiers import parse_network
from cmaas.keystore import (
    MasterKeyring,
    NewApp,
    OutboxEntry,
    SqliteKeystore,
    issue_credentials,
)
from cmaas.wire.signing import request_signature
from tests.api_harness import idle_metrics, routes_over

from .tally import CASES

DOMAIN = "gateway.cmaas.test"
# Every refusal is one of the API's own codes, in the JSON error form.
CODES = {
    "invalid_request",
    "unknown_signing_key",
    "unauthenticated",
    "forbidden_address",
    "app_suspended",
    "priority_not_allowed",
    "not_found",
    "message_id_conflict",
    "payload_too_large",
    "rate_limited",
    "quota_exceeded",
    "backpressure",
    "method_not_allowed",
}


class Api:
    """The API's routes in-process, on one event loop kept across examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._tmp = tempfile.TemporaryDirectory()
        self.database = Path(self._tmp.name) / "abuse.sqlite3"
        self.enqueued: list[OutboxEntry] = []
        self.loop.run_until_complete(self._open())

    async def _open(self) -> None:
        self.keystore = await SqliteKeystore.open(self.database, MasterKeyring(bytes(32)))
        issued = issue_credentials("cid-abuse")
        await self.keystore.create_app(
            NewApp("abuse", "Abuse", "default", networks=(parse_network("127.0.0.0/8"),)), issued
        )
        self.credentials = issued
        metrics = idle_metrics()
        app = web.Application(client_max_size=64 * 1024, middlewares=[error_middleware(metrics)])
        app.add_routes(routes_over(self.keystore, metrics, enqueue=self.enqueued.extend))
        self.client = TestClient(TestServer(app))
        await self.client.start_server()

    def close(self) -> None:
        async def shut() -> None:
            await self.client.close()
            await self.keystore.close()

        self.loop.run_until_complete(shut())
        self.loop.close()
        self._tmp.cleanup()

    def signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        nonce = f"nonce-{time.monotonic_ns()}"
        return {
            "X-CMAAS-Client-Id": self.credentials.client_id,
            "X-CMAAS-Client-Secret": self.credentials.client_secret,
            "X-CMAAS-Timestamp": timestamp,
            "X-CMAAS-Nonce": nonce,
            "X-CMAAS-Signature": request_signature(
                self.credentials.hmac_key, method, path, timestamp, nonce, body
            ),
        }

    def call(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, Any]:
        async def send() -> tuple[int, Any]:
            response = await self.client.request(
                method, path, headers=headers, data=body, skip_auto_headers={"Content-Type"}
            )
            async with response:
                return response.status, json.loads(await response.read())

        return self.loop.run_until_complete(send())

    def stored_messages(self) -> int:
        with sqlite3.connect(self.database) as raw:
            return int(raw.execute("SELECT count(*) FROM messages").fetchone()[0])


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    harness = Api()
    yield harness
    harness.close()


def assert_refused(status: int, answer: Any) -> None:
    assert 400 <= status < 600 and status != 500, (status, answer)
    assert set(answer) == {"error", "detail"}, answer
    assert answer["error"] in CODES and answer["detail"], answer


text = st.text(max_size=80)
# Latin-1 digits such as '²' pass str.isdigit() but not int(): they once caused a 500.
odd_digits = st.sampled_from("\u00b2\u00b3\u00b9")
header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | odd_digits, max_size=60
)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "message_id": st.one_of(text, st.integers(), st.from_regex(r"[A-Za-z0-9._:~-]{1,140}")),
        "to": st.one_of(
            text,
            st.just("alice@cmaas.test"),
            st.just("+919876543210"),
            st.just("x@elsewhere.example"),
        ),
        "priority": st.one_of(st.sampled_from(["high", "normal", "bulk", "urgent"]), json_leaf),
        "expires_at": st.one_of(st.integers(), json_leaf),
        "envelope": st.one_of(text, json_value, st.just('{"v":1}')),
        "extra": json_value,
    },
)
PATHS = ["/v1/keys?to=alice%40cmaas.test", "/v1/events", "/v1/signing-keys", "/v1/messages/m1"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(PATHS),
    st.dictionaries(
        st.sampled_from(
            [
                "X-CMAAS-Client-Id",
                "X-CMAAS-Client-Secret",
                "X-CMAAS-Timestamp",
                "X-CMAAS-Nonce",
                "X-CMAAS-Signature",
            ]
        ),
        header_value,
    ),
    st.booleans(),
)
def test_forged_authentication(
    api: Api, path: str, forged: dict[str, str], keep_the_rest: bool
) -> None:
    headers = {**api.signed("GET", path, b""), **forged} if keep_the_rest else forged
    if keep_the_rest and not forged:
        headers["X-CMAAS-Signature"] = "AAAA"
    status, answer = api.call("GET", path, headers)
    CASES["http authentication"] += 1
    assert_refused(status, answer)
    assert status == 401


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(message_like, json_value), st.booleans())
def test_hostile_signed_submissions(api: Api, item: Any, batch: bool) -> None:
    path = "/v1/messages:batch" if batch else "/v1/messages"
    body = json.dumps({"messages": [item, item]} if batch else item).encode()
    status, answer = api.call("POST", path, api.signed("POST", path, body), body)
    CASES["http submissions"] += 1
    if batch and status == 200:
        for result in answer["results"]:
            assert 400 <= result["status_code"] < 500, result
            assert result["error"] in CODES and result["detail"], result
    else:
        assert_refused(status, answer)
    assert api.stored_messages() == 0
    assert api.enqueued == []


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["/v1/keys?to=", "/v1/events?after=", "/v1/events?wait=", "/v1/messages/"]),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#")
        | odd_digits
        | st.sampled_from("\u0663\u06f2\U0001d7d7"),
        max_size=40,
    ),
    st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_hostile_queries_and_methods(api: Api, prefix: str, value: str, method: str) -> None:
    path = prefix + value
    status, answer = api.call(method, path, api.signed(method, path, b""))
    CASES["http queries"] += 1
    if status == 200:
        assert method == "GET" and ("events" in answer or "jid" in answer), answer
    else:
        assert_refused(status, answer)
    assert api.stored_messages() == 0


def test_oversized_body(api: Api) -> None:
    body = b"[" + b"0," * 40_000 + b"0]"
    status, answer = api.call(
        "POST", "/v1/messages", api.signed("POST", "/v1/messages", body), body
    )
    CASES["http submissions"] += 1
    assert (status, answer["error"]) == (413, "payload_too_large")


ODD_NUMBERS = ["\u00b2", "\uff11\uff12", "\u0663", "\U0001d7d7", "9" * 30, "-1", "", " 1"]


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize("name", ["after", "wait"])
def test_odd_numbers_in_queries(api: Api, name: str, value: str) -> None:
    path = f"/v1/events?{name}={quote(value)}"
    status, answer = api.call("GET", path, api.signed("GET", path, b""))
    CASES["http queries"] += 1
    assert_refused(status, answer)
    assert status == 400


@pytest.mark.parametrize("value", [v for v in ODD_NUMBERS if v.isascii() or v == "\u00b2"])
def test_odd_numbers_as_timestamps(api: Api, value: str) -> None:
    headers = {**api.signed("GET", "/v1/events", b""), "X-CMAAS-Timestamp": value}
    status, answer = api.call("GET", "/v1/events", headers)
    CASES["http authentication"] += 1
    assert_refused(status, answer)
    assert status == 401
