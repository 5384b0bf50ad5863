"""The gateway's XEP-0114 component: disco, ping, presence, ad-hoc commands, sealed
messages out and their receipts, markers and bounces back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any

from slixmpp import JID, Iq, Message, Presence
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.exceptions import XMPPError
from slixmpp.plugins.xep_0030 import DiscoInfo, DiscoItems
from slixmpp.plugins.xep_0050.stanza import Command as CommandStanza
from slixmpp.stanza import StreamError
from slixmpp.stanza.rootstanza import RootStanza
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath
from slixmpp.xmlstream.xmlstream import NotConnectedError

from cmaas.component.adhoc.engine import AdhocEngine
from cmaas.component.contacts import AppContacts, ContactState
from cmaas.component.feedback import FeedbackHandlers
from cmaas.component.omemo_inbound import OmemoInboundHandler
from cmaas.component.outbound import (
    key_transport_xml,
    prekeys_low_message,
    sealed_message_xml,
    status_message,
    xml_attribute,
)
from cmaas.component.pep import PepClient, PepResponder
from cmaas.component.ping_replies import PingReplies
from cmaas.component.presence import PresenceResponder
from cmaas.delivery.dispatcher import OutgoingSealed
from cmaas.keydirectory import DeviceLimits
from cmaas.keystore import DeviceKeys, StatusEvent
from cmaas.xmpp.stanzas import APP_RESOURCE, register_stanzas

__all__ = ["GatewayComponent"]

log = logging.getLogger(__name__)

_COMMANDS = CommandStanza.namespace
_BARRIER_TIMEOUT = 10.0
_PING = "<iq type='get' id={id} from={sender} to={to}><ping xmlns='urn:xmpp:ping'/></iq>"
_ANSWER_TYPES = ("result", "error")
_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"
_DOCTYPE = b"<!DOCTYPE"
# Bytes of the stream parsed per turn of the event loop. A read may bring 256 KiB (about
# 1,300 receipts while a backlog drains); parsed at once, they would hold the loop for
# tens of milliseconds while an OTP's HTTP request waits to be read.
READ_SLICE = 16 * 1024
DEFAULT_MAX_DEPTH = 32
# How deep a stanza the lean feedback path takes may nest: the message and its children.
_LEAN_DEPTH = 2
# Linux only; elsewhere acknowledgements keep the kernel's own timing.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class GatewayComponent(ComponentXMPP):
    """One component connection to the IM server.

    Translates stanzas into calls on the ad-hoc engine and the app directory, and
    back; it decides nothing itself.
    """

    def __init__(
        self,
        domain: str,
        secret: str,
        contacts: AppContacts,
        *,
        server: str | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        ping_replies: PingReplies | None = None,
    ) -> None:
        """Args:
        max_depth: Deepest element nesting accepted in a stanza (the stanza is 1);
            a deeper request gets ``<not-acceptable/>``, anything else is dropped.
        ping_replies: This instance's own reply host, when several instances share
            the domain; ``None``: pings go from the domain and come back here.

        Attributes:
            pings_answered: Barrier pings the IM server answered.
            pings_unanswered: Barrier pings that timed out or could not be written.
        """
        super().__init__(domain, secret, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.domain = domain
        self.domain_jid = JID(domain)
        # The IM server itself, which answers the dispatcher's pings.
        self._server_jid = JID(server or (domain.split(".", 1)[1] if "." in domain else domain))
        self._ping_replies = ping_replies
        self._pings: dict[str, asyncio.Future[None]] = {}
        # Unique on this stream, without slixmpp's uuid per id; its answerers are checked.
        prefix = f"b{secrets.token_hex(4)}-"
        self._ping_ids = (f"{prefix}{n}" for n in itertools.count())
        # Who may answer a ping, as slixmpp's own matcher allows for an iq's result.
        self._ping_answerers = frozenset(
            {"", self._server_jid.full, self._server_jid.bare, self._server_jid.domain, domain}
        )
        self._iq_tag = f"{{{self.default_ns}}}iq"
        self.pings_answered = 0
        self.pings_unanswered = 0
        self._engine: AdhocEngine | None = None
        self._contacts = contacts
        self._max_depth = max_depth
        self._unread_tail = b""
        self._refusing = False
        # Why the socket is not read: the rest of a large read waits to be parsed slice
        # by slice, or too much feedback is still being recorded (the server holds the
        # rest meanwhile). ``_reading_paused`` is what the transport was last told.
        self._slicing = False
        self._unparsed: tuple[bytes, int] | None = None
        self._feedback_backlogged = False
        self._reading_paused = False
        self._acks_at_once: Callable[[], bool] = _never
        # First of the filters: stanza handlers copy and serialise recursively, so a
        # stanza nested thousands deep would end in RecursionError and go unanswered.
        self.add_filter("in", self._refuse_deep, order=0)  # type: ignore[arg-type]
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0199")
        self._drop_roster_handlers()
        register_stanzas()
        PresenceResponder(self, contacts).attach()
        PepResponder(self, contacts).attach()
        self.pep = PepClient(self, self.app_sender)
        self.feedback = FeedbackHandlers(self, on_backlog=self._feedback_backlog)
        self.feedback.attach()
        self.omemo_inbound = OmemoInboundHandler(self, contacts)
        self.omemo_inbound.attach()
        self._describe()
        for query in ("disco_info", "disco_items"):
            self.register_handler(
                Callback(
                    f"cmaas {query} set",
                    StanzaPath(f"iq@type=set/{query}"),
                    self._refuse_disco_set,  # type: ignore[arg-type]
                )
            )
        self.add_filter("out", self._stamp_from)  # type: ignore[arg-type]

    def serve(self, engine: AdhocEngine) -> None:
        """Answer ad-hoc commands with ``engine``, and list its commands in disco. Built
        after the component, since the commands' services send through it."""
        self._engine = engine
        self.add_event_handler("presence_unavailable", self._forget_sessions)
        for stream in (self, self._ping_replies):
            if stream is not None:
                # The instance's own host too: a session's step sent there reaches
                # this instance, whichever instance took the step before.
                stream.register_handler(
                    CoroutineCallback(
                        "cmaas ad-hoc",
                        StanzaPath("iq@type=set/command"),
                        engine.handle,  # type: ignore[arg-type]
                    )
                )
        disco = self.plugin["xep_0030"]
        for node, command in engine.commands.items():
            disco.add_identity(
                category="automation",
                itype="command-node",
                name=command.name,
                node=node,
                jid=self.domain_jid,
            )
            disco.add_feature(_COMMANDS, node=node, jid=self.domain_jid)
            disco.add_feature("jabber:x:data", node=node, jid=self.domain_jid)

    def send_sealed(
        self,
        app_id: str,
        recipient: str,
        message_id: str,
        envelope_json: str | None,
        omemo_xml: str | None = None,
    ) -> bool:
        """Write one sealed message from ``app_id``'s JID to ``recipient``'s bare JID: its
        envelope, its legacy-OMEMO element, or both, in one stanza.

        What happens to it comes back through :attr:`feedback`.

        Returns: ``False`` when the link is down and nothing was written.
        """
        return self.send_sealed_many(
            [OutgoingSealed(app_id, recipient, message_id, envelope_json, omemo_xml)]
        )

    def send_sealed_many(self, messages: Sequence[OutgoingSealed]) -> bool:
        """Write several sealed messages, in order, in one write to the link.

        Returns: ``False`` when the link is down and nothing was written.
        """
        try:
            self.send_raw(
                "".join(
                    sealed_message_xml(
                        self.app_sender(m.app_id),
                        m.recipient,
                        m.message_id,
                        m.envelope_json,
                        m.omemo_xml,
                    )
                    for m in messages
                )
            )
        except NotConnectedError:
            return False
        return True

    def ask_subscription(self, app_id: str, jid: str) -> None:
        """Ask ``jid`` to accept ``app_id``'s JID as a contact: servers show PEP nodes with
        the default access model only to contacts, and several clients send receipts
        only to them."""
        try:
            self.send_presence(pto=jid, pfrom=f"{app_id}@{self.domain}", ptype="subscribe")
        except NotConnectedError:
            log.info("not connected: could not ask %s to accept app %s", jid, app_id)

    def on_subscribed(self, accepted: Callable[[str, str], None]) -> None:
        """Call ``accepted(app_id, jid)`` when ``jid`` accepts an app JID as a contact."""

        def subscribed(presence: Presence) -> None:
            app_jid = presence["to"]
            if app_jid.user and app_jid.domain == self.domain:
                accepted(app_jid.user, str(presence["from"].bare))

        self.add_event_handler("presence_subscribed", subscribed)

    def send_key_transport(self, app_id: str, recipient: str, omemo_xml: str) -> bool:
        """Write one legacy-OMEMO key transport from ``app_id``'s JID to ``recipient``.

        Returns: ``False`` when the link is down and nothing was written.
        """
        try:
            self.send_raw(key_transport_xml(self.app_sender(app_id), recipient, omemo_xml))
        except NotConnectedError:
            return False
        return True

    async def barrier(self) -> None:
        """Return once the IM server has answered a ping (XEP-0199) written after
        everything sent so far. An error answer counts as well: the server has read the
        stream that far. A timeout returns too; the caller bounds the wait, not this."""
        if self._ping_replies is not None:
            answered = await self._ping_replies.ping(self, self._server_jid, _BARRIER_TIMEOUT)
        else:
            answered = await self._ping_from_domain()
        if answered:
            self.pings_answered += 1
        else:
            self.pings_unanswered += 1
            log.debug("ping to %s: no answer", self._server_jid)

    async def _ping_from_domain(self) -> bool:
        """Written and read back here (:meth:`_ping_answered`), not by slixmpp's stanza
        objects, handlers and send queue: one goes with every round the dispatcher
        writes, and that way cost a tenth of the event loop's time in a drain."""
        ping_id = next(self._ping_ids)
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = answer
        try:
            self.send_raw(
                _PING.format(
                    id=xml_attribute(ping_id),
                    sender=xml_attribute(self.domain),
                    to=xml_attribute(self._server_jid.full),
                )
            )
            await asyncio.wait_for(answer, _BARRIER_TIMEOUT)
        except (NotConnectedError, TimeoutError):
            return False
        finally:
            self._pings.pop(ping_id, None)
        return True

    def _ping_answered(self, xml: ET.Element) -> bool:
        """Whether ``xml`` answers one of :meth:`_ping_from_domain`'s pings (a result or
        an error, from the server, with its id); if so, the ping's wait is over."""
        if xml.tag != self._iq_tag or xml.get("type") not in _ANSWER_TYPES:
            return False
        answer = self._pings.get(xml.get("id", ""))
        if answer is None or xml.get("from", "") not in self._ping_answerers:
            return False
        if not answer.done():
            answer.set_result(None)
        return True

    def send_status(self, app_id: str, to: str, event: StatusEvent) -> None:
        """Tell a JID bound to ``app_id`` about one of its messages' status events."""
        status_message(self, JID(self.app_sender(app_id)), JID(to), event).send()

    def app_sender(self, app_id: str) -> str:
        """The full JID ``app_id`` sends from."""
        return f"{app_id}@{self.domain}/{APP_RESOURCE}"

    async def notify_prekeys_low(self, device: DeviceKeys, limits: DeviceLimits) -> None:
        """Ask a device to publish more one-time prekeys."""
        prekeys_low_message(
            self,
            self.domain_jid,
            JID(device.jid),
            device.device_id,
            device.prekeys_left,
            limits.max_prekeys,
        ).send()

    def _drop_roster_handlers(self) -> None:
        """Unhook slixmpp's roster bookkeeping for presence.

        It answers from an in-memory roster per app JID, which grows with every user
        and forgets on restart; the gateway answers from the keystore instead.
        """
        for event in (
            "presence_available",
            "presence_dnd",
            "presence_xa",
            "presence_chat",
            "presence_away",
        ):
            self.del_event_handler(event, self._handle_available)
        self.del_event_handler("presence_unavailable", self._handle_unavailable)
        self.del_event_handler("presence_subscribe", self._handle_subscribe)
        self.del_event_handler("presence_subscribed", self._handle_subscribed)
        self.del_event_handler("presence_unsubscribe", self._handle_unsubscribe)
        self.del_event_handler("presence_unsubscribed", self._handle_unsubscribed)
        self.del_event_handler("roster_subscription_request", self._handle_new_subscription)
        self.del_event_handler("presence_probe", self._handle_probe)
        # slixmpp's own presence handler makes a roster node for every sender before
        # it raises the events, and its roster records every presence sent, per
        # recipient: one entry per user, never freed. Raise the events without them.
        self.del_filter("out", self.roster._save_last_status)
        self.remove_handler("Presence")
        self.register_handler(
            Callback(
                "cmaas presence",
                MatchXPath(f"{{{self.default_ns}}}presence"),
                self._raise_presence_events,  # type: ignore[arg-type]
            )
        )

    def _raise_presence_events(self, presence: Presence) -> None:
        self.event("presence", presence)
        self.event(f"presence_{presence['type']}", presence)

    async def _forget_sessions(self, presence: Presence) -> None:
        """A user's server tells the component a resource went offline when the user
        shares presence with an app JID or sent the component directed presence; its
        open ad-hoc sessions go with it, on every instance. Others end by the session
        limits."""
        if self._engine is not None:
            dropped = await self._engine.forget(presence["from"])
            if dropped:
                log.debug("%d ad-hoc sessions of an offline resource dropped", dropped)

    def _describe(self) -> None:
        disco = self.plugin["xep_0030"]
        disco.add_identity(
            category="component", itype="generic", name="CMaaS gateway", jid=self.domain_jid
        )
        disco.add_identity(
            category="automation",
            itype="command-list",
            name="Commands",
            node=_COMMANDS,
            jid=self.domain_jid,
        )
        for feature in (
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            _COMMANDS,
            "urn:xmpp:ping",
            "jabber:x:data",
        ):
            disco.add_feature(feature, jid=self.domain_jid)
        disco.api.register(self._command_items, "get_items", self.domain_jid, _COMMANDS)
        # App JIDs are dynamic, so their disco#info comes from the keystore.
        self._static_info = disco.static.get_info
        disco.api.register(self._info, "get_info")

    async def _command_items(
        self, jid: JID | None, node: str | None, ifrom: JID | None, data: Any
    ) -> DiscoItems:
        items = DiscoItems()
        items["node"] = _COMMANDS  # XEP-0030: a result echoes the node it answers
        if ifrom is None or self._engine is None:
            return items
        for command in await self._engine.visible_commands(ifrom):
            items.add_item(self.domain_jid, command.node, command.name)
        return items

    async def _info(
        self, jid: JID | None, node: str | None, ifrom: JID | None, data: Any
    ) -> DiscoInfo:
        if jid is None or not jid.user:
            return self._static_info(jid, node, ifrom, data) or DiscoInfo()
        contact = await self._contacts.contact(jid)
        if contact.state is ContactState.UNKNOWN or node:
            raise XMPPError("item-not-found")
        info = DiscoInfo()
        info.add_identity("client", "bot", name=contact.display_name)
        for feature in ("http://jabber.org/protocol/disco#info", _RECEIPTS, _MARKERS):
            info.add_feature(feature)
        return info

    def _refuse_disco_set(self, iq: Iq) -> None:
        """Disco is read-only. slixmpp's disco handler matches type 'set' too but never
        answers it, which would leave the requester waiting: RFC 6120 wants a reply."""
        reply = iq.reply(clear=True)
        reply["error"]["condition"] = "bad-request"
        reply["error"]["type"] = "modify"
        reply["error"]["text"] = "service discovery queries use type 'get'"
        reply.send()

    def init_parser(self) -> None:
        super().init_parser()
        self._unread_tail = b""
        self._refusing = False
        # A new stream: its transport reads until told otherwise, and what was left
        # unparsed of the old one is gone with it.
        self._slicing = False
        self._unparsed = None
        self._reading_paused = False
        self._update_reading()

    def acknowledge_at_once_while(self, urgent: Callable[[], bool]) -> None:
        """While ``urgent()`` is true, acknowledge what the IM server writes as soon as
        it is read, rather than when the kernel's delayed-ACK timer fires.

        An IM server that leaves Nagle's algorithm on (Prosody's default) holds a small
        write, such as an OTP's receipt, until what it wrote before is acknowledged; and
        the kernel delays that acknowledgement while the gateway has nothing to send back
        to carry it, which is the case exactly while other rounds wait for the OTP's
        receipt. A third of the OTPs behind a backlog got their receipt 16 to 26 ms late
        that way. Acknowledging at once all the time cost throughput instead (smaller
        writes, smaller batches), hence only while ``urgent()``.
        """
        self._acks_at_once = urgent

    def _acknowledge_now(self) -> None:
        if _TCP_QUICKACK is None or self.transport is None or not self._acks_at_once():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # the link closing meanwhile
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def data_received(self, data: bytes | str) -> None:
        """Refuse a DTD anywhere on the link, as RFC 6120 requires (``<restricted-xml/>``).

        The XML parser refuses one inside the stream as not well-formed, but before the
        stream's root it would accept it and expand the entities it declares.
        """
        self._acknowledge_now()
        chunk = data.encode() if isinstance(data, str) else data
        # A declaration split between two reads is found with the end of the first.
        seen = self._unread_tail + chunk
        self._unread_tail = seen[-(len(_DOCTYPE) - 1) :]
        if _DOCTYPE in seen:
            log.error("the IM server sent a DTD; closing the component stream")
            error = StreamError()
            error["condition"] = "restricted-xml"
            self.send(error)
            self.disconnect()
            self._refusing = True
        if self._refusing:
            return  # nothing more is read from a stream being closed
        if len(chunk) <= READ_SLICE or self.transport is None:
            super().data_received(chunk)
            return
        # The rest waits for later turns; the socket is not read meanwhile, so the
        # stream stays in order.
        self._slicing = True
        self._update_reading()
        self._parse_slices(chunk, 0)

    def _parse_slices(self, chunk: bytes, start: int) -> None:
        if self.transport is None or self.transport.is_closing() or self._refusing:
            return
        if self._feedback_backlogged:
            self._unparsed = (chunk, start)  # parsed on once the feedback is recorded
            return
        end = start + READ_SLICE
        super().data_received(chunk[start:end])
        if end < len(chunk):
            self.loop.call_soon(self._parse_slices, chunk, end)
        else:
            self._slicing = False
            self._update_reading()

    def _feedback_backlog(self, backlogged: bool) -> None:
        """Stop reading the stream while too much feedback waits to be recorded: what
        is not read stays with the IM server instead of in the gateway's memory."""
        self._feedback_backlogged = backlogged
        if not backlogged and self._unparsed is not None:
            chunk, start = self._unparsed
            self._unparsed = None
            self.loop.call_soon(self._parse_slices, chunk, start)
        self._update_reading()

    def _update_reading(self) -> None:
        paused = self._slicing or self._feedback_backlogged
        if paused == self._reading_paused or self.transport is None:
            return
        if self.transport.is_closing():
            return
        self._reading_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _spawn_event(self, xml: ET.Element) -> None:
        """Hand a receipt or marker of the usual shape straight to :attr:`feedback`, an
        answer to a barrier ping to its wait, everything else to slixmpp's stanza
        objects and handlers.

        While a backlog drains, a receipt comes back for every message sent; building
        its stanza object and matching it against every handler cost more than the rest
        of its handling. A stanza the lean path takes has no element below its
        children, so the depth limit, checked first on the usual path, holds for it.
        """
        xml = self.incoming_filter(xml)  # type: ignore[no-untyped-call]
        if self._max_depth >= _LEAN_DEPTH and self.feedback.take(xml):
            return
        self.feedback.flush()  # the feedback that came before it, first
        if self._pings and self._ping_answered(xml):
            return
        super()._spawn_event(xml)

    def _refuse_deep(self, stanza: RootStanza) -> RootStanza | None:
        if _depth_exceeds(stanza.xml, self._max_depth):
            log.warning("a %s nested deeper than %d refused", stanza.name, self._max_depth)
            if isinstance(stanza, Iq) and stanza["type"] in ("get", "set"):
                # Built afresh: a reply copies the request, which is what must not happen.
                self.make_iq_error(  # type: ignore[no-untyped-call]
                    stanza["id"],
                    type="modify",
                    condition="not-acceptable",
                    text=f"elements nested deeper than {self._max_depth}",
                    ito=stanza["from"],
                    ifrom=stanza["to"],
                ).send()
            return None
        return stanza

    def _stamp_from(self, stanza: RootStanza) -> RootStanza:
        """Last line of defence: ejabberd closes the stream on a stanza without ``from``."""
        if isinstance(stanza, Message | Presence | Iq) and not stanza["from"]:
            log.error("stanza without 'from' stamped with the component domain: %s", stanza.name)
            stanza["from"] = self.domain
        return stanza


def _never() -> bool:
    return False


def _depth_exceeds(root: ET.Element, limit: int) -> bool:
    """Whether elements nest more than ``limit`` deep (``root`` is 1), without recursion."""
    pending = [(root, 1)]
    while pending:
        element, depth = pending.pop()
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in element)
    return False
