"""The XMPP client that devices, bots and the dev tools build on: it leaves contact
requests to the person's own client."""

from __future__ import annotations

import asyncio

from slixmpp.test import SlixTest
from slixmpp.test import TestTransport as MockTransport

from cmaas.xmpp.commands import command_client

JID = "alice@cmaas.test/device"


class TestContactRequest(SlixTest):
    def setUp(self) -> None:
        # A loop of its own, as in gateway_stanzas.py: SlixTest drives get_event_loop().
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.xmpp = command_client(JID, "secret", plaintext=True)
        self.mode = "client"
        self.xmpp._always_send_everything = True
        self.transport = MockTransport(self.xmpp)
        self.xmpp.connection_made(self.transport)  # type: ignore[arg-type]
        self.xmpp.session_bind_event.set()
        self.xmpp.default_lang = None
        self.xmpp.peer_default_lang = None
        self.xmpp.data_received(self.xmpp.stream_header)
        self.wait_for_send_queue()
        self.xmpp.socket.next_sent()  # type: ignore[union-attr]  # our stream header
        self.xmpp.use_presence_ids = False

    def tearDown(self) -> None:
        self.stream_close()
        self.transport.socket.socket.close()  # slixmpp's mock wraps a real, unused socket
        self.loop.close()

    def test_a_request_is_neither_accepted_nor_refused(self) -> None:
        self.recv(
            "<presence type='subscribe' from='shop@gateway.cmaas.test' to='alice@cmaas.test'/>"
        )
        # Had it answered, its 'subscribed' or 'unsubscribed' presence would be the next
        # thing sent; this probe is instead.
        self.xmpp.send_presence(pto="bob@cmaas.test", ptype="probe")
        self.send("<presence type='probe' to='bob@cmaas.test'/>")
        item = self.xmpp.client_roster["shop@gateway.cmaas.test"]
        assert item["pending_in"] is True
        assert item["subscription"] == "none"
