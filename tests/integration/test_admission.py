"""What the gateway refuses, over real HTTP against the gateway process: every
authentication failure class, the allow-list, suspension, rate plans and quotas changed
at runtime through the ad-hoc commands, malformed and oversized bodies."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from cmaas.clientservice import ApiError, GatewayApi
from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient
from cmaas.envelope import TextContent
from cmaas.lifecycle import Priority
from cmaas.wire import Accepted, submission_result

from .apps import (
    RegisteredApp,
    accepted,
    http_session,
    metrics_text,
    register_app,
    roomy_plan,
    seal_flood,
)
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


async def _raw(
    session: aiohttp.ClientSession,
    gateway: GatewayProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    url = URL(f"http://127.0.0.1:{gateway.http_port}{path}", encoded=True)
    data = io.BytesIO(body) if len(body) > 1024 * 1024 else body
    async with session.request(method, url, data=data, headers=headers) as response:
        answer = await response.json(content_type=None)
        return response.status, answer, dict(response.headers)


async def test_every_authentication_failure_class(
    gateway: GatewayProcess, xmpp_server: XmppServer
) -> None:
    path = "/v1/signing-keys"
    async with http_session() as session:
        app = await register_app(gateway, session, "guarded")

        def signed(**changes: str) -> dict[str, str]:
            return {**app.api.signed_headers("GET", path, b""), **changes}

        def at(offset: float) -> dict[str, str]:
            skewed = GatewayApi(
                app.api.base_url, app.credentials, session, clock=lambda: time.time() + offset
            )
            return skewed.signed_headers("GET", path, b"")

        good = signed()
        cases = {
            "no credentials": {},
            "unknown client id": signed(**{"X-CMAAS-Client-Id": "no-such-client"}),
            "wrong secret": signed(**{"X-CMAAS-Client-Secret": "x" * 43}),
            "bad signature": signed(**{"X-CMAAS-Signature": good["X-CMAAS-Signature"][::-1]}),
            "other path signed": {
                **app.api.signed_headers("GET", "/v1/events", b""),
            },
            "timestamp too old": at(-400),
            "timestamp too new": at(+400),
            "malformed nonce": signed(**{"X-CMAAS-Nonce": "short"}),
        }
        for case, headers in cases.items():
            status, answer, _ = await _raw(session, gateway, "GET", path, headers)
            assert (status, answer["error"]) == (401, "unauthenticated"), case
            assert answer["detail"], case

        # A body other than the one signed.
        headers = app.api.signed_headers("POST", path, b'{"public_key": "a"}')
        status, answer, _ = await _raw(
            session, gateway, "POST", path, headers, b'{"public_key": "b"}'
        )
        assert (status, answer["error"]) == (401, "unauthenticated")

        status, _, _ = await _raw(session, gateway, "GET", path, good)
        assert status == 200
        status, answer, _ = await _raw(session, gateway, "GET", path, good)
        assert (status, answer["error"]) == (401, "unauthenticated")
        assert "used before" in answer["detail"]

        # The nonce is remembered across a restart: replaying it still fails.
        fresh = signed()
        assert (await _raw(session, gateway, "GET", path, fresh))[0] == 200
        assert gateway.stop() == 0
        gateway.start()
        status, answer, _ = await _raw(session, gateway, "GET", path, fresh)
        assert (status, answer["error"]) == (401, "unauthenticated")


async def test_allow_list_and_suspension_change_at_runtime(
    gateway: GatewayProcess, xmpp_server: XmppServer, admin: AdhocClient
) -> None:
    gw = xmpp_server.component_domain
    async with http_session() as session:
        app = await register_app(gateway, session, "listed")

        async def update(**changes: object) -> None:
            values: dict[str, object] = {
                "display_name": "Listed",
                "plan": "default",
                "networks": ["127.0.0.0/8"],
                "callback_url": "",
                "jids": [],
                "suspended": False,
                **changes,
            }
            reply = await admin.run(
                gw,
                "urn:cmaas:cmd:app-update",
                {"app_id": "listed"},
                values,  # type: ignore[arg-type]
            )
            assert reply.status == "completed", reply

        assert await app.api.request("GET", "/v1/signing-keys")
        await update(networks=["203.0.113.0/24", "2001:db8::/32"])
        with pytest.raises(ApiError) as refused:
            await app.api.request("GET", "/v1/signing-keys")
        assert (refused.value.status, refused.value.code) == (403, "forbidden_address")
        await update(networks=[])
        with pytest.raises(ApiError) as xmpp_only:
            await app.api.request("GET", "/v1/signing-keys")
        assert (xmpp_only.value.status, xmpp_only.value.code) == (403, "forbidden_address")
        assert "XMPP" in xmpp_only.value.detail
        await update(networks=["203.0.113.0/24", "127.0.0.0/8"])
        assert await app.api.request("GET", "/v1/signing-keys")
        await update(suspended=True)
        with pytest.raises(ApiError) as suspended:
            await app.api.request("GET", "/v1/signing-keys")
        assert (suspended.value.status, suspended.value.code) == (403, "app_suspended")
        await update(suspended=False)
        assert await app.api.request("GET", "/v1/signing-keys")


async def _plan(admin: AdhocClient, server: XmppServer, **values: Any) -> None:
    reply = await admin.run(
        server.component_domain,
        "urn:cmaas:cmd:plan-set",
        {"name": "tight", "daily_quota": "", "priorities": ["high", "normal"], **values},
    )
    assert reply.status == "completed", reply


async def test_plan_exceeded_then_raised_at_runtime(
    gateway: GatewayProcess, xmpp_server: XmppServer, admin: AdhocClient, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    await _plan(admin, xmpp_server, sustained_per_second="0.1", burst="2")
    async with http_session() as session, new_device(xmpp_server, tmp_path, "alice", "d") as dev:
        await dev.publish()
        app = await register_app(gateway, session, "metered", "--plan", "tight")
        # One lookup serves every submission here: nothing needs to open them.
        keys = await app.api.lookup(alice)
        with pytest.raises(ApiError) as bulk:
            await app.send(alice, TextContent("bulk"), priority=Priority.BULK, lookup=keys)
        assert (bulk.value.status, bulk.value.code) == (403, "priority_not_allowed")
        for _ in range(2):
            answer = await app.send(alice, TextContent("ok"), lookup=keys)
            assert answer.status == "accepted"
        with pytest.raises(ApiError) as limited:
            await app.send(alice, TextContent("one too many"), lookup=keys)
        assert (limited.value.status, limited.value.code) == (429, "rate_limited")
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1

        await _plan(admin, xmpp_server, sustained_per_second="50", burst="50", daily_quota="4")
        await asyncio.sleep(0.2)
        for _ in range(2):  # the 3rd and 4th message of the day
            answer = await app.send(alice, TextContent("faster now"), lookup=keys)
            assert answer.status == "accepted"
        with pytest.raises(ApiError) as quota:
            await app.send(alice, TextContent("over the day's quota"), lookup=keys)
        assert (quota.value.status, quota.value.code) == (429, "quota_exceeded")
        assert quota.value.retry_after is not None


async def test_batch_answers_each_message_and_limits_hold(
    gateway: GatewayProcess, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    async with http_session() as session, new_device(xmpp_server, tmp_path, "alice", "b") as dev:
        await dev.publish()
        app = await register_app(gateway, session, "batcher")
        lookup = await app.api.lookup(alice)
        good_id = app.new_id()
        good = app.seal(lookup, TextContent("hi"), message_id=good_id).to_json()
        # Sent as raw JSON: the typed client could not even spell most of these.
        answer = await app.api.request(
            "POST",
            "/v1/messages:batch",
            {
                "messages": [
                    good,
                    {**good, "message_id": "other-id"},  # the envelope names another id
                    {"message_id": "x", "to": alice},
                    "not an object",
                    {**good, "message_id": "ghost", "to": "nobody@mail.example"},
                ]
            },
        )
        results = [submission_result(result) for result in answer["results"]]
        assert [r.status_code for r in results] == [202, 400, 400, 400, 400]
        assert isinstance(results[0], Accepted)
        assert results[0].status == "accepted"
        assert "message_id" in results[1].detail
        assert results[1].message_id == "other-id"

        # Malformed, oversized and misdirected requests answer in the same JSON form.
        for body in (b"not json", b'{"a": 1, "a": 2}', b"[]"):
            headers = app.api.signed_headers("POST", "/v1/messages", body)
            status, answer, _ = await _raw(session, gateway, "POST", "/v1/messages", headers, body)
            assert (status, answer["error"]) == (400, "invalid_request"), body
        huge = b"0" * (8 * 1024 * 1024 + 1)
        headers = app.api.signed_headers("POST", "/v1/messages", huge)
        status, answer, _ = await _raw(session, gateway, "POST", "/v1/messages", headers, huge)
        assert (status, answer["error"]) == (413, "payload_too_large")
        status, answer, _ = await _raw(session, gateway, "GET", "/v1/nothing-here", {})
        assert (status, answer["error"]) == (404, "not_found")
        status, answer, _ = await _raw(session, gateway, "GET", f"/v1/messages/{good_id}", {})
        assert (status, answer["error"]) == (401, "unauthenticated")
        with pytest.raises(ApiError) as missing:
            await app.api.status("never-sent")
        assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_unknown_recipient_and_missing_signing_key(
    gateway: GatewayProcess, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    alice = f"alice@{xmpp_server.domain}"
    async with http_session() as session, new_device(xmpp_server, tmp_path, "alice", "u") as dev:
        await dev.publish()
        app = await register_app(gateway, session, "careful")
        with pytest.raises(ApiError) as unknown:
            await app.api.lookup("nobody@mail.example")
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
        assert "unknown recipient" in unknown.value.detail

        # A message to an address nobody has: accepted, then failed with the reason.
        lookup = await app.api.lookup(alice)
        message_id = app.new_id()
        answer = await app.api.submit(
            app.seal(lookup, TextContent("hi"), message_id=message_id, to="+919876543210")
        )
        assert answer.status == "failed"
        assert answer.detail.startswith("unknown recipient")
        view = await app.api.status(message_id)
        assert [e.status for e in view.history] == ["accepted", "failed"]

        # An envelope signed with a key the app never registered is refused outright.
        stranger = RegisteredApp(gateway, "careful", app.credentials, session)
        other_id = stranger.new_id()
        sealed = stranger.seal(lookup, TextContent("hi"), message_id=other_id)
        with pytest.raises(ApiError) as unsigned:
            await app.api.submit(sealed)
        assert (unsigned.value.status, unsigned.value.code) == (400, "unknown_signing_key")


async def test_a_killed_admission_worker_costs_no_message(
    gateway: GatewayProcess, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    """SIGKILL to an envelope worker: what it held is checked elsewhere, batches
    submitted meanwhile are accepted and delivered, and a new worker takes its place."""
    alice = f"alice@{xmpp_server.domain}"
    async with http_session() as session, new_device(xmpp_server, tmp_path, "alice", "w") as dev:
        await dev.publish()
        await roomy_plan(gateway)
        app = await register_app(gateway, session, "resilient")
        sealed = await seal_flood(app, alice, 200, Priority.NORMAL)
        workers = gateway.children()
        running = f"cmaas_admission_workers {float(len(workers))}"
        assert workers and running in await metrics_text(gateway)
        worker = workers[0]
        os.kill(worker, signal.SIGKILL)
        for start in range(0, len(sealed), 50):
            results = await app.api.submit_batch(sealed[start : start + 50])
            assert accepted(results), results
        # A bad signature is still refused, whoever checks it.
        stranger = RegisteredApp(gateway, "resilient", app.credentials, session)
        lookup = await app.api.lookup(alice)
        with pytest.raises(ApiError) as unsigned:
            await app.api.submit(stranger.seal(lookup, TextContent("x"), message_id="s"))
        assert unsigned.value.code == "unknown_signing_key"
        async with asyncio.timeout(30):
            while "cmaas_admission_workers_replaced_total 1.0" not in await metrics_text(gateway):
                await asyncio.sleep(0.1)
        assert running in await metrics_text(gateway)
        replaced = gateway.children()
        assert len(replaced) == len(workers) and worker not in replaced
        assert f"envelope worker {worker} ended" in gateway.log()
        for message in sealed:
            await app.wait_status(message.message_id, lambda v: v.status == "delivered")
