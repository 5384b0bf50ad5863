"""People's clients fetch an app's legacy OMEMO device list and bundles from its JID's
PEP through real Prosody and ejabberd, and get what the app published over HTTP and
ad-hoc."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from slixmpp import Iq
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient
from cmaas.wire.signing import request_signature
from tests.omemo_bundles import bundle_json

from .apps import http_session, register_app
from .conftest import connect
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

PUBSUB = "http://jabber.org/protocol/pubsub"
AXOLOTL = "eu.siacs.conversations.axolotl"
PUBLISH = "urn:cmaas:cmd:omemo-device-publish"
LIST = "urn:cmaas:cmd:omemo-device-list"


async def items(client: AdhocClient, to: str, node: str) -> ET.Element:
    """The ``<items/>`` of the answer to a PEP query, as any OMEMO client sends it.

    Raises: IqError.
    """
    iq: Iq = client.xmpp.make_iq_get(ito=to)
    iq.xml.append(ET.fromstring(f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"))
    reply = await iq.send(timeout=15)
    found: ET.Element | None = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    assert found is not None and found.get("node") == node, reply
    return found


def device_ids(answer: ET.Element) -> list[str]:
    return [d.get("id", "") for d in answer.iter(f"{{{AXOLOTL}}}device")]


async def test_a_user_fetches_the_device_list_and_bundles_an_app_published(
    xmpp_server: XmppServer, gateway: GatewayProcess
) -> None:
    domain = xmpp_server.domain
    async with http_session() as session:
        app = await register_app(gateway, session, "pepapp", "--jid", f"bot@{domain}")
        alice = await connect(xmpp_server, "alice")
        bot = await connect(xmpp_server, "bot")
        try:
            empty = await items(alice, app.app_jid, f"{AXOLOTL}.devicelist")
            assert device_ids(empty) == [] and empty.find(f".//{{{AXOLOTL}}}list") is not None

            published = bundle_json(3)
            await app.api.request("PUT", "/v1/omemo/devices/31337", published)
            bundle = await items(alice, app.app_jid, f"{AXOLOTL}.bundles:31337")
            (item,) = bundle.findall(f"{{{PUBSUB}}}item")
            assert item.get("id") == "current"
            spk = item.find(f"{{{AXOLOTL}}}bundle/{{{AXOLOTL}}}signedPreKeyPublic")
            assert spk is not None and spk.get("signedPreKeyId") == "1"
            assert spk.text == published["signed_prekey"]
            assert item.findtext(f".//{{{AXOLOTL}}}identityKey") == published["identity_key"]
            signature = item.findtext(f".//{{{AXOLOTL}}}signedPreKeySignature")
            assert signature == published["signed_prekey_signature"]
            prekeys = [
                {"id": int(p.get("preKeyId", "0")), "key": p.text}
                for p in item.iter(f"{{{AXOLOTL}}}preKeyPublic")
            ]
            assert prekeys == published["prekeys"]

            # The bot bound to the app publishes a second device over ad-hoc.
            body = json.dumps(bundle_json(1))
            timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(16)
            signature = request_signature(
                app.credentials.hmac_key,
                "PUT",
                "/v1/omemo/devices/42",
                timestamp,
                nonce,
                body.encode(),
            )
            form = {
                "device_id": "42",
                "request": body,
                "timestamp": timestamp,
                "nonce": nonce,
                "signature": signature,
            }
            gw = xmpp_server.component_domain
            forged = await bot.run(gw, PUBLISH, {**form, "device_id": "43"})
            assert forged.values["error"] == ["unauthenticated"], forged
            done = await bot.run(gw, PUBLISH, form)
            assert done.status == "completed" and not done.error_notes, done
            shown = await bot.run(gw, LIST)
            listed_json = json.loads(shown.values["json"][0])
            assert sorted(d["device_id"] for d in listed_json["devices"]) == [42, 31337]
            listed = await items(alice, app.app_jid, f"{AXOLOTL}.devicelist")
            # Both in the same second: the order within it is by id, no promise to test.
            assert sorted(device_ids(listed)) == ["31337", "42"]

            # Retired over HTTP: gone from the list, and its bundle node with it.
            await app.api.request("DELETE", "/v1/omemo/devices/31337")
            assert device_ids(await items(alice, app.app_jid, f"{AXOLOTL}.devicelist")) == ["42"]
            with pytest.raises(IqError) as refused:
                await items(alice, app.app_jid, f"{AXOLOTL}.bundles:31337")
            assert refused.value.condition == "item-not-found"
            with pytest.raises(IqError) as unknown:
                await items(
                    alice, f"nosuchapp@{xmpp_server.component_domain}", f"{AXOLOTL}.devicelist"
                )
            assert unknown.value.condition == "item-not-found"
        finally:
            await alice.disconnect()
            await bot.disconnect()
