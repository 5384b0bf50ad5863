"""The XMPP link supervisor: capped exponential backoff, reset after a stable link."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from cmaas.xmpp.link import LinkState, XmppLink


class FakeComponent:
    """Stands in for ComponentXMPP: each connect() is answered by a scripted outcome."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.transport: object | None = None
        self.connect_calls = 0
        self.boundjid = type("J", (), {"bare": "gw.example.org"})()

    def add_event_handler(self, name: str, handler: Callable[[Any], None]) -> None:
        self.handlers[name] = handler

    def connect(self, host: str, port: int) -> None:
        self.connect_calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "fail"
        loop = asyncio.get_running_loop()
        if outcome == "fail":
            loop.call_soon(self.handlers["connection_failed"], "refused")
        elif outcome == "up-then-drop":
            loop.call_soon(self.handlers["session_start"], None)
            loop.call_later(0.05, self.handlers["disconnected"], "server restart")
        elif outcome == "up":
            loop.call_soon(self.handlers["session_start"], None)

    def cancel_connection_attempt(self) -> None:
        pass


def delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(m) for m in re.findall(r"in ([0-9.]+) s", caplog.text)]


async def run_until(link: XmppLink, done: Callable[[], bool]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    for _ in range(500):
        if done():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_backoff_doubles_up_to_the_cap(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cmaas.xmpp.link.random.uniform", lambda a, b: 1.0)
    fake = FakeComponent(["fail"] * 6)
    link = XmppLink(fake, "127.0.0.1", 5347, initial_delay=0.1, max_delay=0.4)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "cmaas.xmpp.link"):
        await run_until(link, lambda: fake.connect_calls >= 6)
    assert delays(caplog)[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert link.state is LinkState.STOPPED
    assert link.connects == 0


async def test_reconnects_after_a_drop_and_resets_after_a_stable_link(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cmaas.xmpp.link.random.uniform", lambda a, b: 1.0)
    fake = FakeComponent(["fail", "fail", "up-then-drop", "up"])
    link = XmppLink(
        fake,  # type: ignore[arg-type]
        "127.0.0.1",
        5347,
        initial_delay=0.1,
        max_delay=1,
        stable_after=0.0,
    )
    with caplog.at_level(logging.INFO, "cmaas.xmpp.link"):
        await run_until(link, lambda: link.connects == 2)
    assert link.connects == 2
    assert "component link lost (server restart); reconnecting in 0.1 s" in caplog.text
    # Two failures doubled the delay; the stable link reset it to the initial one.
    assert delays(caplog) == [0.1, 0.2, 0.1]
    assert link.state is LinkState.STOPPED
