"""A user's other clients beside their CMaaS device, on real Prosody and ejabberd.

People run several clients. Whatever those do with a sealed message (take it, answer it
with a receipt they cannot honour, return it with an error, vanish while holding it),
the device still gets it and the app sees the truth: ``delivered`` only once a device
able to open it received it, and ``failed`` only when the IM server returns the message
for the account.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from cmaas.device.client import DeviceClient
from cmaas.devservers import XmppServer
from cmaas.envelope import TextContent
from cmaas.wire import MessageView

from .apps import http_session, register_app
from .devices import device_config, new_device
from .gateway_process import GatewayProcess
from .other_clients import Answer, OtherClient

pytestmark = pytest.mark.integration


async def _sent_beside(
    xmpp_server: XmppServer,
    gateway: GatewayProcess,
    tmp_path: Path,
    other: str,
    priority: int,
    answer: Answer,
) -> tuple[MessageView, str]:
    """One message to dana, whose device (priority 0) is online beside ``other``: that
    client is handed the message and the device gets it too. Returns the message's view
    once delivered, and the device's id."""
    dana = f"dana@{xmpp_server.domain}"
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        app = await register_app(gateway, session, "shop")
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "dana", "d"))
        await device.publish()
        client = await stack.enter_async_context(
            OtherClient(xmpp_server, "dana", other, priority=priority, answer=answer)
        )
        sent = await app.send(dana, TextContent(f"beside {other}"))
        async with asyncio.timeout(15):
            assert await client.taken.get() == sent.message_id
            assert (await device.next_message()).message_id == sent.message_id
        view = await app.wait_status(sent.message_id, lambda v: v.status == "delivered")
        assert device.keyring is not None
        return view, str(device.keyring.device_id)


async def test_an_online_device_gets_what_a_higher_priority_client_takes(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    # Ahead of the device, answering every receipt request, as Gajim does; the device
    # gets its carbon copy.
    view, device_id = await _sent_beside(
        xmpp_server, gateway, tmp_path, "gajim", priority=10, answer=Answer.RECEIPT
    )
    # Only the device's receipt counts: Gajim's, which reached the app's full JID,
    # names no device the message is sealed to.
    assert set(view.devices) == {device_id}


async def test_an_offline_device_catches_up_on_what_another_client_took(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    dana = f"dana@{xmpp_server.domain}"
    config = device_config(xmpp_server, tmp_path / "dana-away", "dana", "away")
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        app = await register_app(gateway, session, "shop")
        async with new_device(xmpp_server, tmp_path, "dana", "away") as device:
            await device.publish()  # and its first session marks where catching up starts
        profanity = await stack.enter_async_context(
            OtherClient(xmpp_server, "dana", "profanity", priority=0, answer=Answer.RECEIPT)
        )
        await profanity.add_contact(app.app_jid)  # the servers archive contacts' messages
        sent = await app.send(dana, TextContent("taken while the device was away"))
        async with asyncio.timeout(15):
            assert await profanity.taken.get() == sent.message_id
        # Online elsewhere, so the server kept no offline copy; the archive has it.
        async with DeviceClient(config) as back:
            async with asyncio.timeout(20):
                received = await back.next_message()
        assert received.message_id == sent.message_id
        await app.wait_status(sent.message_id, lambda v: v.status == "delivered")


async def test_a_client_that_returns_every_copy_fails_nothing(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    view, _ = await _sent_beside(
        xmpp_server, gateway, tmp_path, "buggy", priority=5, answer=Answer.ERROR
    )
    # The error came back before the device's receipt (same client, same link, and
    # the buggy client answers at once): it failed nothing.
    assert "failed" not in [e.status for e in view.history]


async def test_a_message_held_by_a_hibernating_session_reaches_the_person(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    dana = f"dana@{xmpp_server.domain}"
    config = device_config(xmpp_server, tmp_path / "dana-later", "dana", "later")
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(http_session())
        app = await register_app(gateway, session, "shop")
        async with new_device(xmpp_server, tmp_path, "dana", "later") as device:
            await device.publish()
        # Another session of the account, told when the tab's session ends; with a
        # negative priority it is never handed a message itself.
        watcher = await stack.enter_async_context(
            OtherClient(xmpp_server, "dana", "watcher", priority=-1, answer=Answer.NOTHING)
        )
        await watcher.add_contact(app.app_jid)
        # A browser tab with stream management, closed: its session hibernates (4 s on
        # the test servers) and still counts as online, so it is handed the message.
        tab = OtherClient(
            xmpp_server, "dana", "tab", priority=0, answer=Answer.NOTHING, stream_management=True
        )
        await tab.__aenter__()
        tab.vanish()
        sent = await app.send(dana, TextContent("sent to a closed tab"))
        await app.wait_status(sent.message_id, lambda v: v.status == "dispatched")
        # When the hibernation times out, the copy it held comes back (Prosody) or is
        # kept offline (ejabberd); either way the person gets it when the device returns.
        async with asyncio.timeout(30):
            while await watcher.gone.get() != f"{dana}/tab":
                pass
        async with DeviceClient(config) as back:
            async with asyncio.timeout(30):
                received = await back.next_message()
            assert received.message_id == sent.message_id
            view = await app.wait_status(
                sent.message_id, lambda v: v.status == "delivered", within=30
            )
        assert "failed" not in [e.status for e in view.history]
