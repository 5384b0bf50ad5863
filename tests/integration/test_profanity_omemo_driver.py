"""The Profanity driver as a legacy OMEMO recipient, checked without the gateway: a plain
client account seals with the client service's :class:`OmemoSender`, reading and
publishing OMEMO through its own PEP, and a real Profanity 0.13 on Prosody and on ejabberd
shows the text decrypted, answers with a receipt, and never shows a tampered one.

On Prosody the sender is refused Profanity's bundle until the person allows the sender's
subscription; on ejabberd it reads it as a stranger (see :mod:`.profanity`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from slixmpp import Message
from slixmpp.exceptions import IqError

from cmaas.clientservice.omemo import OmemoSender
from cmaas.devservers import XmppServer
from cmaas.devservers.client import AdhocClient
from cmaas.xmpp.omemo import bundle_node

from .conftest import PASSWORD, connect
from .omemo_pep import (
    PepDirectory,
    chat_message,
    read_item,
    tampered,
    wait_for_listed_device,
    wait_for_readable_device,
)
from .profanity import ChatLogEntry, Profanity

pytestmark = pytest.mark.integration

PERSON = "olivia"  # uses Profanity
SENDER = "sam"  # a plain client account sealing with OmemoSender
_WITHIN = 20.0


@pytest.fixture
def profanity(xmpp_server: XmppServer, tmp_path: Path) -> Iterator[Profanity]:
    for user in (PERSON, SENDER):
        xmpp_server.register_user(user, PASSWORD)
    client = Profanity(tmp_path / "profanity")
    try:
        client.start()
        client.log_in(xmpp_server, PERSON, PASSWORD)
        yield client
    finally:
        client.stop()


@pytest.fixture
async def sender(xmpp_server: XmppServer, profanity: Profanity) -> AsyncIterator[AdhocClient]:
    client = await connect(xmpp_server, SENDER, "omemo")
    client.xmpp.register_plugin("xep_0184")
    client.xmpp.plugin["xep_0184"].auto_ack = False
    yield client
    await client.disconnect()


async def test_profanity_shows_sealed_text_answers_receipts_and_hides_tampered_text(
    xmpp_server: XmppServer, profanity: Profanity, sender: AdhocClient, tmp_path: Path
) -> None:
    person = f"{PERSON}@{xmpp_server.domain}"
    sender_jid = sender.xmpp.boundjid
    await profanity.send_receipts()
    device_id = await profanity.generate_omemo_keys(xmpp_server, PERSON, PASSWORD)

    if xmpp_server.kind == "prosody":
        # The list is open (the workaround's node), the bundle shown to contacts only.
        await wait_for_listed_device(sender.xmpp, person, device_id)
        with pytest.raises(IqError) as hidden:
            await read_item(sender.xmpp, person, bundle_node(device_id), "bundle")
        assert hidden.value.condition == "forbidden"
        sender.xmpp.send_presence(pto=person, ptype="subscribe")
        await profanity.allow_subscription(sender_jid.bare)
    # On ejabberd the sender reads both as a stranger: it never asked to subscribe.
    await wait_for_readable_device(sender.xmpp, person, device_id)

    receipts: asyncio.Queue[Message] = asyncio.Queue()
    sender.xmpp.add_event_handler("receipt_received", receipts.put_nowait)
    async with OmemoSender(tmp_path / "omemo", sender_jid.bare, PepDirectory(sender.xmpp)) as omemo:

        async def send(text: str, fallback: str, *, tamper: bool = False) -> str:
            sealed = await omemo.encrypt(person, text.encode())
            assert sealed.device_ids == {device_id}
            xml = tampered(sealed.xml) if tamper else sealed.xml
            message = chat_message(sender.xmpp, person, xml, fallback)
            message.send()
            return str(message["id"])

        first = await send("your code is 482913", "OMEMO fallback 1")
        assert await profanity.wait_for_chat_message(first) == ChatLogEntry(
            sender_jid.bare, sender_jid.resource, "your code is 482913", first, "omemo"
        )
        bad = await send("tampered code 000000", "OMEMO fallback 2", tamper=True)
        later = await send("your code is 730155", "OMEMO fallback 3")
        assert (await profanity.wait_for_chat_message(later)).text == "your code is 730155"

    # Profanity handles stanzas in order: the later message is logged, so the tampered one
    # was handled, and only its fallback body shows.
    log = profanity.chat_log()
    assert [(e.stanza_id, e.text, e.encryption) for e in log if e.stanza_id == bad] == [
        (bad, "OMEMO fallback 2", "none")
    ]
    assert not any("tampered code" in entry.text for entry in log)
    # A receipt for each message, the tampered one too, to the sender's full JID.
    answered: list[str] = []
    async with asyncio.timeout(_WITHIN):
        while len(answered) < 3:
            receipt = await receipts.get()
            assert receipt["to"] == sender_jid
            answered.append(receipt["receipt"])
    assert sorted(answered) == sorted([first, bad, later])
