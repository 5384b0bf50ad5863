"""The raw receipt responder: a c2s client with no XMPP library.

It answers every message that asks for an XEP-0184 receipt at once, one write per
chunk read, and counts what arrives (the peer measurement only counts).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from xml.etree.ElementTree import Element, ParseError

from bench.xmlstream import StreamClosedError, XmlStream, attr
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE

CLIENT_NS = "jabber:client"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
RECEIPTS_NS = "urn:xmpp:receipts"
_MESSAGE = f"{{{CLIENT_NS}}}message"
_BODY = f"{{{CLIENT_NS}}}body"
_REQUEST = f"{{{RECEIPTS_NS}}}request"
SETUP_TIMEOUT = 10.0


class LoginError(Exception):
    """The server refused a step of the plaintext login."""


async def _open(stream: XmlStream, domain: str) -> Element:
    """Send a stream header and return the server's ``<stream:features/>``."""
    stream.send(
        f"<?xml version='1.0'?><stream:stream to='{attr(domain)}' xmlns='{CLIENT_NS}' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    await stream.wait_header()
    features = await stream.next_element()
    if not features.tag.endswith("}features"):
        raise LoginError(f"expected stream features, got {features.tag}")
    return features


async def _iq(stream: XmlStream, iq_id: str, payload: str) -> Element:
    stream.send(f"<iq type='set' id='{iq_id}'>{payload}</iq>")
    reply = await stream.next_element()
    if reply.get("id") != iq_id or reply.get("type") != "result":
        raise LoginError(f"iq {iq_id} failed: type={reply.get('type')} {list(reply)}")
    return reply


async def login(
    host: str, port: int, domain: str, user: str, password: str, resource: str
) -> tuple[XmlStream, str]:
    """Log in over plaintext (loopback only): SASL PLAIN, bind, session, presence.

    Returns:
        The stream and the full JID the server bound.

    Raises:
        LoginError, TimeoutError, OSError, StreamClosedError: If any step fails.
    """
    async with asyncio.timeout(SETUP_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        stream = XmlStream(reader, writer)
        try:
            return stream, await _negotiate(stream, domain, user, password, resource)
        except BaseException:
            await stream.close()
            raise


async def _negotiate(
    stream: XmlStream, domain: str, user: str, password: str, resource: str
) -> str:
    features = await _open(stream, domain)
    mechanisms = [m.text for m in features.iter(f"{{{SASL_NS}}}mechanism")]
    if "PLAIN" not in mechanisms:
        raise LoginError(f"server offers no PLAIN without TLS: {mechanisms}")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    stream.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
    outcome = await stream.next_element()
    if outcome.tag != f"{{{SASL_NS}}}success":
        raise LoginError(f"SASL PLAIN refused: {[c.tag for c in outcome]}")
    stream.restart()
    features = await _open(stream, domain)
    bound = await _iq(
        stream, "bind1", f"<bind xmlns='{BIND_NS}'><resource>{attr(resource)}</resource></bind>"
    )
    jid = bound.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
    if not jid:
        raise LoginError("bind result without a jid")
    session = features.find(f"{{{SESSION_NS}}}session")
    if session is not None and session.find(f"{{{SESSION_NS}}}optional") is None:
        await _iq(stream, "sess1", f"<session xmlns='{SESSION_NS}'/>")
    stream.send("<presence/>")
    await stream.writer.drain()
    return jid


class ReceiptResponder:
    """Answers receipt requests and counts messages, from :meth:`start` until :meth:`close`.

    ``arrivals`` maps the sequence number at the start of a body to its arrival time
    (``time.perf_counter()``) for messages without a receipt request: that is how the
    peer measurement, whose message ids the server chooses, gets per-message latency.

    ``device``, when set, is the CMaaS device id announced on each receipt, as a device
    does: the gateway records a receipt only from a device the message is sealed to.

    ``watched`` holds the stanza ids whose arrival to note in ``arrived_ms`` (unix
    milliseconds, the clock the gateway's events use): where an OTP's time between its
    dispatch and its receipt goes, on the way to the client or on the way back.
    """

    def __init__(self, stream: XmlStream, jid: str) -> None:
        self.stream = stream
        self.jid = jid
        self.received = 0
        self.answered = 0
        self.arrivals: dict[int, float] = {}
        self.expected = 0
        self.all_arrived = asyncio.Event()
        self.error: BaseException | None = None
        self.stopped = asyncio.Event()
        # The CMaaS device id announced in each receipt ("" for none: raw stanzas); the
        # gateway counts a receipt only from a device the message was sealed to.
        self.device = ""
        self.watched: frozenset[str] = frozenset()
        self.arrived_ms: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def reset(self, expected: int) -> None:
        """Start counting afresh; ``all_arrived`` is set after ``expected`` (0: never)."""
        self.received = 0
        self.answered = 0
        self.arrivals = {}
        self.expected = expected
        self.all_arrived.clear()

    def start(self, lifetime: float) -> None:
        """Run the responder in the background for at most ``lifetime`` seconds."""
        self._task = asyncio.create_task(self._run(lifetime))

    async def _run(self, lifetime: float) -> None:
        try:
            async with asyncio.timeout(lifetime):
                await self._pump()
        except (StreamClosedError, ParseError, OSError, TimeoutError) as exc:
            self.error = exc
        finally:
            # Nobody waiting for the count may hang on a dead responder.
            self.all_arrived.set()
            self.stopped.set()

    async def _pump(self) -> None:
        stream = self.stream
        self._answer(stream.take_pending(), time.perf_counter())
        while True:
            data = await stream.read_chunk()
            self._answer(stream.feed(data), time.perf_counter())

    def _answer(self, stanzas: list[Element], now: float) -> None:
        """Count the messages among ``stanzas`` and send one receipt for each request."""
        own = attr(self.jid)
        device = ""
        if self.device:
            device = f"<device xmlns='{DEVICE_NAMESPACE}' id='{attr(self.device)}'/>"
        replies: list[str] = []
        for elem in stanzas:
            if elem.tag != _MESSAGE or elem.get("type") == "error":
                continue
            self.received += 1
            if self.watched and (stanza_id := elem.get("id", "")) in self.watched:
                self.arrived_ms[stanza_id] = time.time_ns() // 1_000_000
            if elem.find(_REQUEST) is not None:
                replies.append(
                    f"<message to='{attr(elem.get('from', ''))}' from='{own}'>"
                    f"<received xmlns='{RECEIPTS_NS}' id='{attr(elem.get('id', ''))}'/>"
                    f"{device}</message>"
                )
            else:
                body = elem.findtext(_BODY) or ""
                with contextlib.suppress(ValueError):
                    self.arrivals[int(body[:10])] = now
        if replies:
            self.answered += len(replies)
            # Never wait here for the server to read: a server that stops reading while
            # it cannot write to this client (an Erlang process blocked on a busy
            # socket) would wait for this client as it waits for the server, and both
            # would stop for good. The likeliest cause of item f stalling on ejabberd
            # after the outage: 94,479 messages read and answered here, the gateway had
            # written all 105,000 and recorded 70,785 receipts, and nothing moved for
            # 30 s. What the server has not read yet waits in the transport's buffer.
            self.stream.writer.write("".join(replies).encode())
        if self.expected and self.received >= self.expected:
            self.all_arrived.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.stream.close()
