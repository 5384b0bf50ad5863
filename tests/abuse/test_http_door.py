"""The HTTP front door under attack, on a real loopback socket: the gateway's routes
behind :class:`~cmaas.api.door.Door` with tight limits, over a real SQLite keystore.
Half-sent heads and bodies, compressed bodies, connection floods, long-poll hoarding,
bytes that are not text where credentials go, and bodies whose reading is ambiguous."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from cmaas.api import ClientAddresses, error_middleware
from cmaas.api.door import Door, DoorLimits
from cmaas.delivery.auth import RequestAuthenticator, SignedRequest
from cmaas.delivery.errors import Unauthenticated
from cmaas.envelope import b64url, generate_private_key, point_bytes
from cmaas.identifiers import parse_network
from cmaas.keystore import IssuedCredentials, MasterKeyring, NewApp, NewMessage, SqliteKeystore
from cmaas.keystore import issue_credentials as issue
from cmaas.lifecycle import Priority
from cmaas.wire.signing import request_headers, request_signature
from tests.api_harness import idle_metrics, routes_over

from .tally import CASES

DOMAIN = "gateway.cmaas.test"
LIMITS = DoorLimits(
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    max_connections=40,
    max_connections_per_ip=12,
    max_requests_per_app=3,
    max_long_polls_per_app=2,
    max_bodies_in_flight=4,
)


@dataclass
class Front:
    door: Door
    keystore: SqliteKeystore
    port: int
    apps: dict[str, IssuedCredentials]
    session: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signed(self, app: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        credentials = self.apps[app]
        return request_headers(
            credentials.client_id,
            credentials.client_secret,
            credentials.hmac_key,
            method,
            path,
            body,
            timestamp=str(int(time.time())),
            nonce=f"nonce-{time.monotonic_ns()}",
        )

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            headers=headers,
            data=body,
            skip_auto_headers={"Content-Type"},
        ) as response:
            return response.status, json.loads(await response.read())

    async def raw(self, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        return reader, writer


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    keystore = await SqliteKeystore.open(tmp_path / "door.sqlite3", MasterKeyring(bytes(32)))
    apps = {}
    for name in ("first", "second"):
        apps[name] = issue(f"cid-{name}")
        await keystore.create_app(
            NewApp(name, name, "default", networks=(parse_network("127.0.0.0/8"),)), apps[name]
        )
    metrics = idle_metrics()
    door = Door(LIMITS)
    app = web.Application(
        client_max_size=8 * 1024 * 1024, middlewares=[error_middleware(metrics), door.middleware]
    )
    app.add_routes(routes_over(keystore, metrics, door=door))
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    listener = await door.serve(runner, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        yield Front(door, keystore, port, apps, session)
    listener.close()
    await runner.cleanup()
    await keystore.close()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before it closed the connection, waiting at most ``within``."""
    async with asyncio.timeout(within):
        return await reader.read()


async def test_no_body_is_read_before_the_credentials_are_checked(front: Front) -> None:
    # A stranger announces 8 MiB and sends ten bytes: refused from the headers at once,
    # not held waiting for a body.
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "X-CMAAS-Client-Id: cid-first\r\n"
        "X-CMAAS-Client-Secret: wrong\r\nContent-Length: 8388608\r\n\r\n"
    )
    reader, writer = await front.raw(head.encode() + b"0123456789")
    async with asyncio.timeout(LIMITS.body_timeout_s / 2):
        status_line = await reader.readline()
    writer.close()
    CASES["http door"] += 1
    assert status_line.startswith(b"HTTP/1.1 401"), status_line


async def test_a_compressed_body_is_refused_even_when_signed(front: Front) -> None:
    inner = json.dumps({"messages": [{"message_id": "x"}]}).encode()
    body = gzip.compress(inner)
    headers = {**front.signed("first", "POST", "/v1/messages:batch", body)}
    headers["Content-Encoding"] = "gzip"
    status, answer = await front.call("POST", "/v1/messages:batch", headers, body)
    CASES["http door"] += 1
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    assert "Content-Encoding" in answer["detail"]


async def test_a_half_sent_head_is_closed_at_its_deadline(front: Front) -> None:
    reader, writer = await front.raw(b"GET /v1/app HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    assert await closed_by_server(reader, within=LIMITS.header_timeout_s * 6) == b""
    CASES["http door"] += 1
    assert time.monotonic() - started >= LIMITS.header_timeout_s * 0.9
    assert front.door.expired == 1
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_an_answer(front: Front) -> None:
    path = "/v1/app"
    head = "".join(f"{k}: {v}\r\n" for k, v in front.signed("first", "GET", path).items())
    reader, writer = await front.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    answer = await closed_by_server(reader, within=LIMITS.header_timeout_s * 6)
    CASES["http door"] += 1
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    writer.close()


async def test_a_stalled_body_is_refused_at_its_deadline(front: Front) -> None:
    body = b'{"messages": []}'
    headers = front.signed("first", "POST", "/v1/messages:batch", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await front.raw(
        (
            "POST /v1/messages:batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode()
        + body[:5]
    )
    answer = await closed_by_server(reader, within=LIMITS.body_timeout_s * 6)
    writer.close()
    CASES["http door"] += 1
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"did not arrive" in answer


async def test_connections_from_one_address_are_capped(front: Front) -> None:
    held = [await front.raw(b"") for _ in range(LIMITS.max_connections_per_ip)]
    reader, writer = await front.raw(b"")
    # The one over the cap is closed at once, before it sends anything...
    assert await closed_by_server(reader, within=2.0) == b""
    writer.close()
    assert front.door.refused_connections == 1
    # ...while the ones held still get an answer, then, once they are gone, a new one.
    path = "/v1/app"
    head = "".join(f"{k}: {v}\r\n" for k, v in front.signed("first", "GET", path).items())
    first_reader, first_writer = held[0]
    first_writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    async with asyncio.timeout(5):
        assert (await first_reader.readline()).startswith(b"HTTP/1.1 200")
    for _, held_writer in held:
        held_writer.close()
    for _ in range(100):
        if front.door.open_connections == 0:
            break
        await asyncio.sleep(0.02)
    status, _ = await front.call("GET", path, front.signed("first", "GET", path))
    CASES["http door"] += 2
    assert status == 200


async def test_one_app_cannot_hold_more_long_polls_than_its_share(front: Front) -> None:
    path = "/v1/events?wait=3"
    polls = [
        asyncio.create_task(front.call("GET", path, front.signed("first", "GET", path)))
        for _ in range(LIMITS.max_long_polls_per_app)
    ]
    for _ in range(100):
        if front.door._long_polls["first"] == LIMITS.max_long_polls_per_app:
            break
        await asyncio.sleep(0.02)
    status, answer = await front.call("GET", path, front.signed("first", "GET", path))
    assert (status, answer["error"]) == (429, "rate_limited"), answer
    # Another app is not affected, and a poll without waiting neither.
    quick = "/v1/events"
    assert (await front.call("GET", quick, front.signed("first", "GET", quick)))[0] == 200
    other = await front.call("GET", quick, front.signed("second", "GET", quick))
    assert other[0] == 200
    for poll in polls:
        poll.cancel()
    CASES["http door"] += 3


async def stalled_body(front: Front, app: str) -> asyncio.StreamWriter:
    """A signed request whose announced body never comes (until its deadline)."""
    body = b"{}" * 10
    headers = front.signed(app, "POST", "/v1/signing-keys", body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    _, writer = await front.raw(
        (
            "POST /v1/signing-keys HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode()
    )
    return writer


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def test_one_app_cannot_hold_more_requests_than_its_share(front: Front) -> None:
    writers = [await stalled_body(front, "first") for _ in range(LIMITS.max_requests_per_app)]
    await until(lambda: front.door._requests["first"] == LIMITS.max_requests_per_app)
    status, answer = await front.call("GET", "/v1/app", front.signed("first", "GET", "/v1/app"))
    assert (status, answer.get("error")) == (429, "rate_limited"), answer
    assert (await front.call("GET", "/v1/app", front.signed("second", "GET", "/v1/app")))[0] == 200
    # The bodies in flight are capped across apps too (bodies read before a signature).
    writers.append(await stalled_body(front, "second"))
    await until(lambda: front.door._bodies == LIMITS.max_bodies_in_flight)
    body = b"{}"
    path = "/v1/signing-keys"
    status, answer = await front.call(
        "POST", path, front.signed("second", "POST", path, body), body
    )
    assert (status, answer.get("error")) == (503, "backpressure"), answer
    for writer in writers:
        writer.close()
    CASES["http door"] += 3


async def test_a_secret_that_is_not_text_is_refused_not_a_crash(front: Front) -> None:
    head = (
        b"GET /v1/app HTTP/1.1\r\nHost: x\r\nX-CMAAS-Client-Id: cid-first\r\n"
        b"X-CMAAS-Client-Secret: \xff\xfe\xc3\x28secret\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await front.raw(head)
    answer = await closed_by_server(reader, within=5)
    writer.close()
    CASES["http authentication"] += 1
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"Traceback" not in answer


AMBIGUOUS_BODIES = {
    "utf-8 BOM": b"\xef\xbb\xbf" + json.dumps({"messages": [{}]}).encode(),
    "utf-16": json.dumps({"messages": [{}]}).encode("utf-16-le"),
    "utf-32": json.dumps({"messages": [{}]}).encode("utf-32"),
    "5000 digits": b'{"messages": [{"message_id": ' + b"9" * 5000 + b"}]}",
    "NaN": b'{"messages": [{"message_id": NaN}]}',
    "duplicate key": b'{"messages": [], "messages": [{}]}',
    "lone surrogate": b'{"messages": [{"message_id": "\\ud800"}]}',
    "lone surrogate in the envelope": (
        b'{"messages": [{"message_id": "m1", "to": "a@cmaas.test", "envelope": "\\ud800"}]}'
    ),
    "lone surrogate in the omemo element": (
        b'{"messages": [{"message_id": "m1", "to": "a@cmaas.test", "expires_at": 2000000000,'
        b' "omemo": "<encrypted xmlns=\'eu.siacs.conversations.axolotl\'>\\ud800</encrypted>"}]}'
    ),
    "lone surrogate in the recipient": (
        b'{"messages": [{"message_id": "m1", "to": "\\udc00@cmaas.test", "envelope": "{}"}]}'
    ),
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS_BODIES))
async def test_a_body_has_one_reading_or_is_refused(front: Front, name: str) -> None:
    body = AMBIGUOUS_BODIES[name]
    path = "/v1/messages:batch"
    status, answer = await front.call("POST", path, front.signed("first", "POST", path, body), body)
    CASES["http submissions"] += 1
    assert (status, answer["error"]) == (400, "invalid_request"), answer


@pytest.mark.parametrize(
    "path", ["/v1/events?after=0&after=5", "/v1/keys?to=a%40cmaas.test&to=b%40cmaas.test"]
)
async def test_a_repeated_query_parameter_is_refused(front: Front, path: str) -> None:
    status, answer = await front.call("GET", path, front.signed("first", "GET", path))
    CASES["http queries"] += 1
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    assert "repeated" in answer["detail"]


TWISTS = ["%2F", "%2f", "/.", "//", "/%2e", "?", "?x=1", "%00", "%20", "/../app", ";x"]


@pytest.mark.parametrize("twist", TWISTS)
@pytest.mark.parametrize("path", ["/v1/app", "/v1/signing-keys", "/v1/events"])
async def test_a_signature_covers_the_path_exactly_as_sent(
    front: Front, path: str, twist: str
) -> None:
    """A request signed for one spelling of a path is refused under any other (sent
    byte for byte, as no client library would normalise it)."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in front.signed("first", "GET", path).items())
    reader, writer = await front.raw(
        f"GET {path}{twist} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    )
    answer = await closed_by_server(reader, within=5)
    writer.close()
    CASES["http authentication"] += 1
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 401", b"HTTP/1.1 404", b"HTTP/1.1 405"), (
        path + twist,
        answer[:200],
    )


def test_the_accept_loop_error_is_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        undo = Door(LIMITS).quiet_accept_errors(loop)
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(10_000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
        undo()
        assert loop.get_exception_handler() is None
    finally:
        loop.close()
    exhausted = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    CASES["http door"] += 1
    assert len(exhausted) == 1


def _request_from(peer: str, headers: Any) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 1234) if name == "peername" else default
    )
    return make_mocked_request("GET", "/v1/app", headers=headers, transport=transport)


UNKNOWN = str(ipaddress.IPv4Address(0))  # what ClientAddresses answers when it cannot tell
FORWARDED_CASES = [
    # (trusted proxies, peer, headers, the client the gateway must see)
    ((), "203.0.113.9", {"X-Forwarded-For": "127.0.0.1"}, "203.0.113.9"),
    ((), "203.0.113.9", {"Forwarded": "for=127.0.0.1"}, "203.0.113.9"),
    ((), "::ffff:203.0.113.9", {}, "203.0.113.9"),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "127.0.0.1, 198.51.100.7"}, "198.51.100.7"),
    (("10.0.0.0/8",), "10.0.0.2", {"Forwarded": "for=127.0.0.1"}, "10.0.0.2"),
    (("10.0.0.0/8",), "::ffff:10.0.0.2", {"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "not-an-address"}, UNKNOWN),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "2001:db8::1"}, "2001:db8::1"),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "::ffff:127.0.0.1"}, "127.0.0.1"),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "10.0.0.3, 10.0.0.4"}, "10.0.0.2"),
    (("10.0.0.0/8",), "10.0.0.2", {"X-Forwarded-For": "[2001:db8::1]:80"}, UNKNOWN),
]


@pytest.mark.parametrize(("trusted", "peer", "headers", "expected"), FORWARDED_CASES)
def test_the_client_address_cannot_be_claimed(
    trusted: tuple[str, ...], peer: str, headers: dict[str, str], expected: str
) -> None:
    addresses = ClientAddresses([parse_network(n) for n in trusted])
    CASES["http addresses"] += 1
    assert str(addresses.client(_request_from(peer, headers))) == expected


def test_several_forwarded_for_headers_are_one_chain() -> None:
    """Two X-Forwarded-For headers read as one chain (RFC 9110 list semantics): the
    right-most untrusted hop wins whichever header the client put its claim in."""
    addresses = ClientAddresses([parse_network("10.0.0.0/8")])
    request = _request_from(
        "10.0.0.2",
        CIMultiDict([("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "198.51.100.7")]),
    )
    CASES["http addresses"] += 1
    assert str(addresses.client(request)) == "198.51.100.7"


async def test_apps_cannot_see_or_touch_each_other(front: Front) -> None:
    signing_key = generate_private_key().public_key()
    body = json.dumps({"public_key": b64url(point_bytes(signing_key))}).encode()
    path = "/v1/signing-keys"
    status, answer = await front.call("POST", path, front.signed("first", "POST", path, body), body)
    assert status == 201, answer
    digest = answer["fingerprint"]
    # The second app neither lists nor retires the first's key...
    status, answer = await front.call("GET", path, front.signed("second", "GET", path))
    assert (status, answer["fingerprints"]) == (200, [])
    retire = f"/v1/signing-keys/{digest}"
    status, answer = await front.call("DELETE", retire, front.signed("second", "DELETE", retire))
    assert (status, answer["error"]) == (404, "not_found"), answer
    # ...and a message id of the first's is unknown to the second.
    await front.keystore.messages.submit(
        [
            NewMessage(
                app_id="first",
                message_id="shared-id",
                recipient="alice@cmaas.test",
                recipient_jid="alice@cmaas.test",
                priority=Priority.NORMAL,
                request_sha256=bytes(32),
                envelope=b"{}",
                expires_ms=int(time.time() * 1000) + 60_000,
            )
        ],
        daily_quota=None,
    )
    status_path = "/v1/messages/shared-id"
    assert (await front.call("GET", status_path, front.signed("first", "GET", status_path)))[
        0
    ] == 200
    status, answer = await front.call(
        "GET", status_path, front.signed("second", "GET", status_path)
    )
    assert (status, answer["error"]) == (404, "not_found"), answer
    events = "/v1/events"
    status, answer = await front.call("GET", events, front.signed("second", "GET", events))
    assert (status, answer["events"]) == (200, []), answer
    status, answer = await front.call("GET", events, front.signed("first", "GET", events))
    assert status == 200 and [e["message_id"] for e in answer["events"]] == ["shared-id"]
    # The first's key is still there, listed for the first only.
    status, answer = await front.call("GET", path, front.signed("first", "GET", path))
    assert answer["fingerprints"] == [digest]
    CASES["http isolation"] += 6


async def test_a_nonce_is_refused_after_a_restart(tmp_path: Path) -> None:
    database = tmp_path / "nonces.sqlite3"
    issued = issue("cid-nonce")
    request = None
    for attempt in range(2):
        keystore = await SqliteKeystore.open(database, MasterKeyring(bytes(32)))
        try:
            if attempt == 0:
                await keystore.create_app(
                    NewApp("n", "N", "default", networks=(parse_network("127.0.0.0/8"),)), issued
                )
                timestamp = str(int(time.time()))
                request = SignedRequest(
                    method="GET",
                    path="/v1/app",
                    body=b"",
                    client_id=issued.client_id,
                    client_secret=issued.client_secret,
                    timestamp=timestamp,
                    nonce="nonce-across-restarts",
                    signature=request_signature(
                        issued.hmac_key, "GET", "/v1/app", timestamp, "nonce-across-restarts", b""
                    ),
                    peer=ipaddress.ip_address("127.0.0.1"),
                )
                await RequestAuthenticator(keystore).authenticate(request)
            else:
                assert request is not None
                with pytest.raises(Unauthenticated, match="used before"):
                    await RequestAuthenticator(keystore).authenticate(request)
        finally:
            await keystore.close()
    CASES["http authentication"] += 1


# A minute past the 300 s window on either side: a second ticking between the test's
# clock read and the gateway's must not bring the timestamp back inside.
@pytest.mark.parametrize("skew", [-360, 360, 10**9])
async def test_a_timestamp_outside_the_window_is_refused(front: Front, skew: int) -> None:
    path = "/v1/app"
    credentials = front.apps["first"]
    timestamp = str(int(time.time()) + skew) if int(time.time()) + skew > 0 else "0"
    nonce = f"skew-{skew}-nonce"
    headers = {
        "X-CMAAS-Client-Id": credentials.client_id,
        "X-CMAAS-Client-Secret": credentials.client_secret,
        "X-CMAAS-Timestamp": timestamp,
        "X-CMAAS-Nonce": nonce,
        "X-CMAAS-Signature": request_signature(
            credentials.hmac_key, "GET", path, timestamp, nonce, b""
        ),
    }
    status, answer = await front.call("GET", path, headers)
    CASES["http authentication"] += 1
    assert (status, answer["error"]) == (401, "unauthenticated"), answer
    assert "clock" in answer["detail"]
