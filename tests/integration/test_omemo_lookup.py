"""The key lookup relays recipients' legacy OMEMO devices: a real account publishes its
device list and a bundle to its own PEP, and the app's ``GET /v1/keys`` returns them, read
by the gateway from the account's server as the app's JID; a list the server will not show
the app comes back as a reason, on real Prosody and ejabberd."""

from __future__ import annotations

import pytest
from slixmpp.xmlstream import ET, tostring

from cmaas.clientservice.api import ApiError
from cmaas.devservers import XmppServer
from cmaas.wire import KeyLookup, OmemoBundle, UnreadableReason
from cmaas.xmpp.omemo import bundle_element, device_list_element
from tests.omemo_bundles import bundle_json

from .apps import http_session, register_app
from .conftest import connect
from .gateway_process import GatewayProcess
from .omemo_pep import publish

pytestmark = pytest.mark.integration

AXOLOTL = "eu.siacs.conversations.axolotl"


def canonical(xml: str) -> str:
    return ET.canonicalize(xml)


async def test_the_lookup_returns_the_omemo_devices_a_user_published(
    xmpp_server: XmppServer, gateway: GatewayProcess
) -> None:
    domain = xmpp_server.domain
    dana = await connect(xmpp_server, "dana")
    try:
        device_list = device_list_element([1234, 5678]).xml
        bundle = bundle_element(OmemoBundle.from_json(bundle_json(2), device_id=1234)).xml
        await publish(dana.xmpp, f"{AXOLOTL}.devicelist", device_list, "open")
        await publish(dana.xmpp, f"{AXOLOTL}.bundles:1234", bundle, "open")
        async with http_session() as session:
            app = await register_app(gateway, session, "omemoapp")
            found = KeyLookup.from_json(await app.api.request("GET", f"/v1/keys?to=dana@{domain}"))
    finally:
        await dana.disconnect()
    # Dana has no CMaaS device: her OMEMO devices alone make her a recipient.
    assert found.jid == f"dana@{domain}" and found.devices == ()
    assert found.omemo is not None and found.omemo.unreadable is None
    assert found.omemo.device_list is not None
    assert canonical(found.omemo.device_list) == canonical(tostring(device_list))
    # 5678 is listed without a bundle: left out, as clients leave stale devices out.
    assert [b.device_id for b in found.omemo.bundles] == [1234]
    assert canonical(found.omemo.bundles[0].xml) == canonical(tostring(bundle))


async def test_a_list_the_server_hides_from_the_app_is_a_reason_not_a_silent_no_device(
    xmpp_server: XmppServer, gateway: GatewayProcess
) -> None:
    domain = xmpp_server.domain
    bot = await connect(xmpp_server, "bot")
    dana = await connect(xmpp_server, "dana")
    try:
        # Shown to contacts only, and the app's JID is none of the bot's.
        await publish(bot.xmpp, f"{AXOLOTL}.devicelist", device_list_element([42]).xml, "presence")
        async with http_session() as session:
            app = await register_app(gateway, session, "omemoapp")
            with pytest.raises(ApiError) as hidden:
                await app.api.request("GET", f"/v1/keys?to=bot@{domain}")
            with pytest.raises(ApiError) as unpublished:
                await app.api.request("GET", f"/v1/keys?to=alice@{domain}")
            # The later positive signal on the same path: an open list is read.
            bundle = bundle_element(OmemoBundle.from_json(bundle_json(1), device_id=7)).xml
            await publish(dana.xmpp, f"{AXOLOTL}.devicelist", device_list_element([7]).xml, "open")
            await publish(dana.xmpp, f"{AXOLOTL}.bundles:7", bundle, "open")
            shown = KeyLookup.from_json(await app.api.request("GET", f"/v1/keys?to=dana@{domain}"))
    finally:
        await bot.disconnect()
        await dana.disconnect()
    assert shown.omemo is not None and [b.device_id for b in shown.omemo.bundles] == [7]
    assert (hidden.value.status, hidden.value.code) == (404, "not_found")
    assert f"{UnreadableReason.FORBIDDEN.value}: " in hidden.value.detail, hidden.value.detail
    assert "must accept the app as a contact first" in hidden.value.detail
    # Prosody 0.12 refuses a non-contact even a node that does not exist; ejabberd says so.
    never = (
        UnreadableReason.FORBIDDEN
        if xmpp_server.kind == "prosody"
        else UnreadableReason.ITEM_NOT_FOUND
    )
    assert (unpublished.value.status, unpublished.value.code) == (404, "not_found")
    assert f"{never.value}: " in unpublished.value.detail, unpublished.value.detail
