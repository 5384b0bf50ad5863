"""Ordinary XMPP clients beside a CMaaS device, behaving as real ones do.

Each logs in as another resource of the same account, with its own presence priority,
and answers the chat messages it gets the way a family of clients does: with XEP-0184
receipts addressed to the sender's full JID (Gajim, Conversations, Profanity answer
every request, whether or not they can open the message), with an error stanza (a buggy
client), or not at all. With stream management (XEP-0198) it can vanish as a phone or
a browser tab does, leaving a session the server keeps hibernating.
"""

from __future__ import annotations

import asyncio
import enum

from slixmpp import ClientXMPP, Message, Presence

from cmaas.devservers import XmppServer

from .conftest import PASSWORD


class Answer(enum.Enum):
    RECEIPT = "receipt"
    ERROR = "error"
    NOTHING = "nothing"


class OtherClient:
    """Use as ``async with OtherClient(...) as client:``; ``taken`` holds the ids of the
    chat messages it was handed."""

    def __init__(
        self,
        server: XmppServer,
        user: str,
        resource: str,
        *,
        priority: int,
        answer: Answer = Answer.RECEIPT,
        stream_management: bool = False,
    ) -> None:
        self.xmpp = ClientXMPP(f"{user}@{server.domain}/{resource}", PASSWORD)
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        self.xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
        self.xmpp.register_plugin("xep_0184")
        self.xmpp.plugin["xep_0184"].auto_ack = False  # it answers below, as told
        if stream_management:
            self.xmpp.register_plugin("xep_0198")
        self._server = server
        self._priority = priority
        self._answer = answer
        self._stream_management = stream_management
        self._ready = asyncio.Event()
        self._sm_ready = asyncio.Event()
        if not stream_management:
            self._sm_ready.set()
        self.taken: asyncio.Queue[str] = asyncio.Queue()
        self.gone: asyncio.Queue[str] = asyncio.Queue()
        """Full JIDs of the account's other sessions as they end."""
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("sm_enabled", lambda _: self._sm_ready.set())
        self.xmpp.add_event_handler("message", self._on_message)
        self.xmpp.add_event_handler(
            "presence_unavailable", lambda p: self.gone.put_nowait(str(p["from"]))
        )

    async def __aenter__(self) -> OtherClient:
        self.xmpp.connect(self._server.host, self._server.c2s_port)
        async with asyncio.timeout(15):
            await self._ready.wait()  # available, with its priority
            await self._sm_ready.wait()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.xmpp.transport is not None:
            await self.xmpp.disconnect(wait=2.0)

    async def _on_session_start(self, _event: object) -> None:
        # An interested resource (RFC 6121): the server pushes it subscription changes.
        await self.xmpp.get_roster()
        self.xmpp.send_presence(ppriority=self._priority)
        self._ready.set()

    def _on_message(self, message: Message) -> None:
        if message["type"] != "chat" or not message["id"]:
            return
        self.taken.put_nowait(message["id"])
        if self._answer is Answer.RECEIPT:
            receipt = self.xmpp.make_message(mto=message["from"], mtype="chat")
            receipt["receipt"] = message["id"]
            receipt.send()
        elif self._answer is Answer.ERROR:
            error = self.xmpp.make_message(mto=message["from"], mtype="error")
            error["id"] = message["id"]
            error["error"]["type"] = "cancel"
            error["error"]["condition"] = "undefined-condition"
            error.send()

    async def add_contact(self, jid: str) -> None:
        """Subscribe to ``jid``'s presence, as a person adds an app to their contacts, and
        wait for the approval: the servers archive messages from contacts only. An app
        added by an earlier test on the same server is a contact already."""
        if jid in self.xmpp.client_roster and self.xmpp.client_roster[jid]["subscription"] in (
            "to",
            "both",
        ):
            return
        approved = asyncio.Event()

        def on_subscribed(presence: Presence) -> None:
            if presence["from"].bare == jid:
                approved.set()

        self.xmpp.add_event_handler("presence_subscribed", on_subscribed)
        self.xmpp.send_presence(pto=jid, ptype="subscribe")
        async with asyncio.timeout(15):
            await approved.wait()
        self.xmpp.del_event_handler("presence_subscribed", on_subscribed)

    def vanish(self) -> None:
        """Drop the connection without closing the stream: with stream management, the
        server keeps the session hibernating, still counted as online."""
        assert self.xmpp.transport is not None
        self.xmpp.transport.abort()
