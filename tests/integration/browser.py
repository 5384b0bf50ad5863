"""Debian's Chromium, driven headless through Playwright, and the web device served to it
by the real ``cmaas device web`` process.

One Chromium per test module (its profile in a temporary directory, so IndexedDB lives on
disk as in a person's browser). Each test serves the page on a port of its own: another
origin, so another device, with storage of its own, in the same browser. A reload or a
reopened tab on the same origin finds the same keys.

A missing browser or a page that was not built fails the test; nothing skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Locator, Page, async_playwright, expect

from cmaas.devservers import XmppServer, cmaas_executable, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Screenshots for people to look at; git-ignored.
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts"
# Long enough for a busy machine's first key generation and publish.
ONLINE_WITHIN_MS = 30_000


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a persistent profile in ``profile``.

    Raises: pytest.fail.Exception: Debian's Chromium is not installed.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the web device's tests need Debian's Chromium"
            " (scripts/bootstrap installs it: apt-get install chromium chromium-driver)"
        )
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": 900, "height": 1000},
        )
        try:
            yield context
        finally:
            await context.close()


class WebDevice:
    """``cmaas device web`` serving the built page for ``server`` on a port of its own."""

    def __init__(self, server: XmppServer, blob_origin: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._command = [
            cmaas_executable(),
            "--env-file",
            os.devnull,
            "device",
            "web",
            "--websocket",
            server.websocket_url,
            "--gateway",
            server.component_domain,
            "--blob-origin",
            blob_origin,
            "--port",
            str(self.port),
        ]
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> WebDevice:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMAAS_")}
        self._process = await asyncio.create_subprocess_exec(
            *self._command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        async with asyncio.timeout(20):
            line = (await self._process.stdout.readline()).decode()
        if not line:
            error = (await self._process.stderr.read()).decode()
            pytest.fail(f"cmaas device web did not start: {error}")
        assert line == f"web device: open {self.url}\n", line
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        status = await self._process.wait()
        assert status == 0, f"cmaas device web ended with {status}"


async def sign_in(page: Page, jid: str, password: str) -> str:
    """Sign in through the form and wait until the device is published and online.

    Returns: the device id the page shows.
    """
    form = page.locator("form#sign-in")
    await expect(form).to_be_visible()
    await page.get_by_label("Account").fill(jid)
    await page.get_by_label("Password").fill(password)
    await form.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#state")).to_have_attribute(
        "data-state", "online", timeout=ONLINE_WITHIN_MS
    )
    device = page.locator("#device")
    await expect(device).to_have_attribute("data-published", "true")
    await expect(device).to_contain_text(re.compile(r"([0-9a-f]{8} ){7}[0-9a-f]{8}"))
    device_id = await device.get_attribute("data-device-id")
    assert device_id is not None and device_id.isdigit()
    return device_id


def message(page: Page, message_id: str) -> Locator:
    """The ``li`` of one message in the page's list."""
    return page.locator(f'ol#messages > li.message[data-message-id="{message_id}"]')


async def record_states(page: Page) -> None:
    """Keep every ``data-state`` the page's ``#state`` takes from now on, for
    :func:`states_seen`; test instrumentation, set from outside the page."""
    await page.evaluate(
        """() => {
            const state = document.getElementById("state");
            const seen = [state.dataset.state];
            document.documentElement.dataset.testStates = JSON.stringify(seen);
            new MutationObserver(() => {
                if (seen.at(-1) !== state.dataset.state) seen.push(state.dataset.state);
                document.documentElement.dataset.testStates = JSON.stringify(seen);
            }).observe(state, {attributes: true, attributeFilter: ["data-state"]});
        }"""
    )


async def states_seen(page: Page) -> list[str]:
    seen: list[str] = await page.evaluate(
        "() => JSON.parse(document.documentElement.dataset.testStates)"
    )
    return seen


async def screenshot(page: Page, name: str) -> Path:
    """Save what the page shows as ``build/artifacts/NAME.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    return path
