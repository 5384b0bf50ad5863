"""Incremental parsing of one XMPP stream, shared by the raw component and the raw client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast
from xml.etree.ElementTree import Element, XMLPullParser

STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERROR = f"{{{STREAMS_NS}}}error"
READ_SIZE = 1 << 18


class StreamClosedError(Exception):
    """The peer ended the stream, closed the socket or sent a stream error."""


def attr(value: str) -> str:
    """``value`` escaped for an attribute in single quotes."""
    # Nearly every value is a plain JID or id: skip the replace chain for those.
    if not any(c in value for c in "&<'>\""):
        return value
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


class XmlStream:
    """One direction of an XMPP stream: yields its top-level elements as they complete.

    ``start``/``end`` events give the depth, which is what tells a stanza from its
    children; completed stanzas are dropped from the root so memory stays flat over a
    long run.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.header: Element | None = None
        self._pending: list[Element] = []
        self._parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
        self._depth = 0

    def restart(self) -> None:
        """Forget the current stream (after SASL success the server opens a new one)."""
        self.header = None
        self._pending = []
        self._parser = XMLPullParser(events=("start", "end"))
        self._depth = 0

    def feed(self, data: bytes) -> list[Element]:
        """Parse ``data`` and return the stanzas it completes.

        Raises:
            StreamClosedError: On ``</stream:stream>`` or a stream error.
            xml.etree.ElementTree.ParseError: On malformed XML.
        """
        self._parser.feed(data)
        done: list[Element] = []
        depth = self._depth
        # Only start/end were asked for, so every item is an element (one cast per chunk,
        # not a check per event).
        events = cast("Iterator[tuple[str, Element]]", self._parser.read_events())
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    self.header = elem
            else:
                depth -= 1
                if depth == 1:
                    done.append(elem)
                elif depth == 0:
                    raise StreamClosedError("the server closed the stream")
        self._depth = depth
        if self.header is not None and done:
            del self.header[:]
        for elem in done:
            if elem.tag == STREAM_ERROR:
                raise StreamClosedError(f"stream error: {[child.tag for child in elem]}")
        return done

    async def read_chunk(self) -> bytes:
        """The next bytes from the socket (as many as are buffered).

        Raises:
            StreamClosedError: If the socket is closed.
        """
        data = await self.reader.read(READ_SIZE)
        if not data:
            raise StreamClosedError("the server closed the connection")
        return data

    async def wait_header(self) -> Element:
        """The server's stream header, once it has arrived (callers bound the wait).

        Raises:
            StreamClosedError: If the stream ends first.
        """
        while self.header is None:
            self._pending.extend(self.feed(await self.read_chunk()))
        return self.header

    async def next_element(self) -> Element:
        """The next top-level element (negotiation only: the hot paths call :meth:`feed`).

        Callers bound the wait.

        Raises:
            StreamClosedError: If the stream ends first.
        """
        while not self._pending:
            self._pending.extend(self.feed(await self.read_chunk()))
        return self._pending.pop(0)

    def take_pending(self) -> list[Element]:
        """Stanzas parsed during negotiation but not yet returned (a message can arrive in
        the same read as the last negotiation answer)."""
        pending, self._pending = self._pending, []
        return pending

    def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def close(self, footer: str = "</stream:stream>") -> None:
        """Close politely, but never wait more than a second for the peer."""
        try:
            if not self.writer.is_closing():
                self.writer.write(footer.encode())
            self.writer.close()
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            pass
