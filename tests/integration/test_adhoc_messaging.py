"""A bot bound to an app sends through the gateway's ad-hoc commands on real Prosody and
ejabberd: key lookup, a submission signed as the HTTP one (and refused when replayed),
and the message's status."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer
from cmaas.envelope import OtpContent
from cmaas.wire import KeyLookup
from cmaas.wire.signing import request_signature

from .apps import http_session, register_app
from .conftest import connect
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

LOOKUP = "urn:cmaas:cmd:keys-lookup"
SEND = "urn:cmaas:cmd:message-send"
STATUS = "urn:cmaas:cmd:message-status"


async def test_bot_looks_up_submits_and_follows_over_adhoc(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    gw = xmpp_server.component_domain
    alice = f"alice@{xmpp_server.domain}"
    async with http_session() as session, new_device(xmpp_server, tmp_path, "alice", "a") as dev:
        await dev.publish()
        app = await register_app(gateway, session, "botapp", "--jid", f"bot@{xmpp_server.domain}")
        bot = await connect(xmpp_server, "bot")
        try:
            assert {LOOKUP, SEND, STATUS} <= set(await bot.command_nodes(gw))
            looked_up = await bot.run(gw, LOOKUP, {"to": alice})
            assert looked_up.status == "completed", looked_up
            # People read the fields; programs read the whole answer from "json".
            assert looked_up.values["jid"] == [alice]
            lookup = KeyLookup.from_json(json.loads(looked_up.values["json"][0]))
            message_id = app.new_id()
            sealed = app.seal(lookup, OtpContent("271828", "login"), message_id=message_id)
            body = json.dumps(sealed.to_json())

            def signed(signature_key: bytes) -> dict[str, str]:
                timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(16)
                signature = request_signature(
                    signature_key, "POST", "/v1/messages", timestamp, nonce, body.encode()
                )
                return {
                    "request": body,
                    "timestamp": timestamp,
                    "nonce": nonce,
                    "signature": signature,
                }

            forged = await bot.run(gw, SEND, signed(b"k" * 32))
            assert forged.status == "completed"
            assert forged.values["error"] == ["unauthenticated"]
            assert any("unauthenticated" in note for note in forged.error_notes)

            fields = signed(app.credentials.hmac_key)
            sent = await bot.run(gw, SEND, fields)
            assert sent.status == "completed", sent
            assert sent.values["status"] == ["accepted"]
            # Its nonce was claimed with the message: the same form again is a replay.
            replayed = await bot.run(gw, SEND, fields)
            assert replayed.values["error"] == ["unauthenticated"], replayed
            assert any("used before" in note for note in replayed.error_notes), replayed
            async with asyncio.timeout(15):
                received = await dev.next_message()
            assert (received.message_id, received.content) == (
                message_id,
                OtpContent("271828", "login"),
            )
            async with asyncio.timeout(15):
                while True:
                    shown = await bot.run(gw, STATUS, {"message_id": message_id})
                    if shown.values["status"] == ["delivered"]:
                        break
                    await asyncio.sleep(0.2)
            history = [json.loads(event)["status"] for event in shown.values["history"]]
            assert history == ["accepted", "dispatched", "delivered"]
        finally:
            await bot.disconnect()

        # An account not bound to any app may not run them.
        alice_client = await connect(xmpp_server, "alice", "cli")
        try:
            refused = await alice_client.run(gw, LOOKUP, {"to": alice})
            assert (refused.status, refused.error) == ("error", "forbidden")
        finally:
            await alice_client.disconnect()
