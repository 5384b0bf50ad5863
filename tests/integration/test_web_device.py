"""The web device in Debian's headless Chromium, on real Prosody and ejabberd: it
publishes; an OTP, a text and a 1 MiB file are shown and reported delivered then read; a
reload keeps its keys; tampered, expired and re-keyed messages are not shown; an OTP
leaves at its expiry; a closed tab gets what came meanwhile; two tabs do not fight.

``cmaas device web`` serves the built page; a person signs in through its form; an app
sends through the real client service (sealed at the source, over the HTTP API of an
in-process gateway) and follows its statuses. Everything the tests know about the page
they read from its DOM (the structure docs/device.md describes) and from the app's side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from cmaas.assembly import Gateway
from cmaas.clientservice import AppCredentials, ClientConfig, GatewayClient
from cmaas.delivery.tracker import FeedbackKind
from cmaas.devservers import XmppServer
from cmaas.envelope import OtpContent, TextContent, fingerprint, point_bytes
from cmaas.lifecycle import Priority
from cmaas.wire import StatusEvent

from .browser import (
    WebDevice,
    chromium,
    message,
    record_states,
    screenshot,
    sign_in,
    states_seen,
)
from .conftest import PASSWORD
from .direct_sender import DirectSender
from .live_gateway import FeedbackLog, live_gateway_with_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

APP = "bank"
SHOWN_WITHIN_MS = 20_000
MESSAGES = "ol#messages > li.message"

_accounts = itertools.count(1)


class StatusLog:
    """The app's status events, by message, as the client service follows them."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        self._changed = asyncio.Condition()

    async def add(self, event: StatusEvent) -> None:
        async with self._changed:
            self.seen.setdefault(event.message_id, []).append(str(event.status))
            self._changed.notify_all()

    async def wait_for(self, message_id: str, status: str, within: float = 30.0) -> list[str]:
        """Returns: the message's statuses so far, once ``status`` is among them."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: status in self.seen.get(message_id, []))
        return list(self.seen[message_id])


@dataclass
class Scene:
    jid: str
    gateway: Gateway
    feedback: FeedbackLog
    client: GatewayClient
    statuses: StatusLog
    web: WebDevice
    browser: BrowserContext

    async def open(self) -> Page:
        page = await self.browser.new_page()
        await page.goto(self.web.url)
        return page


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture
def account(xmpp_server: XmppServer) -> str:
    """An account of its own for each test: nothing another test left in its offline
    storage or archive reaches it."""
    user = f"web{next(_accounts)}"
    xmpp_server.register_user(user, PASSWORD)
    return f"{user}@{xmpp_server.domain}"


@pytest_asyncio.fixture(loop_scope="module")
async def scene(
    xmpp_server: XmppServer, account: str, browser: BrowserContext, tmp_path: Path
) -> AsyncIterator[Scene]:
    async with AsyncExitStack() as stack:
        gateway, feedback, issued = await stack.enter_async_context(
            live_gateway_with_app(
                xmpp_server, tmp_path / "gateway", app_id=APP, networks=["127.0.0.0/8"]
            )
        )
        issued_credentials = issued.credentials
        credentials = AppCredentials(
            issued_credentials.client_id,
            issued_credentials.client_secret,
            issued_credentials.hmac_key,
        )
        client = await stack.enter_async_context(
            GatewayClient(ClientConfig(gateway.http_url, credentials, tmp_path / "app"))
        )
        statuses = StatusLog()
        stop = asyncio.Event()
        following = asyncio.create_task(client.follow(statuses.add, stop))

        async def stop_following() -> None:
            stop.set()
            await following

        stack.push_async_callback(stop_following)
        web = await stack.enter_async_context(WebDevice(xmpp_server, gateway.http_url))
        yield Scene(account, gateway, feedback, client, statuses, web, browser)
        # Every page a test opened is closed before the gateway goes.
        for page in browser.pages:
            await page.close()


def _read_after_delivered(statuses: list[str]) -> None:
    assert "failed" not in statuses, statuses
    assert statuses.index("delivered") < statuses.index("read"), statuses


async def test_the_page_publishes_and_shows_an_otp_a_text_and_a_file(
    scene: Scene, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    page = await scene.open()
    device_id = await sign_in(page, scene.jid, PASSWORD)
    listed = {record.device_id for record in await scene.gateway.directory.devices(scene.jid)}
    assert listed == {int(device_id)}

    otp = await scene.client.send(scene.jid, otp="482913", purpose="login")
    text = await scene.client.send(scene.jid, text="Your parcel is on its way")
    data = os.urandom(1 << 20)
    (tmp_path / "statement.pdf").write_bytes(data)
    file = await scene.client.send_file(
        scene.jid, tmp_path / "statement.pdf", media_type="application/pdf"
    )

    shown = message(page, otp.message_id)
    await expect(shown).to_have_attribute("data-kind", "otp", timeout=SHOWN_WITHIN_MS)
    await expect(shown).to_have_attribute("data-app", f"{APP}@{xmpp_server.component_domain}")
    await expect(shown).to_contain_text("Example Bank")
    await expect(shown.locator(".otp-code")).to_have_text("482913")
    countdown = shown.locator("time.countdown")
    await expect(countdown).to_have_text(re.compile(r"^valid for (9|10):[0-5]\d$"))
    expires = await countdown.get_attribute("datetime")
    assert expires is not None and expires.endswith("Z")

    shown_text = message(page, text.message_id)
    await expect(shown_text).to_have_attribute("data-kind", "text", timeout=SHOWN_WITHIN_MS)
    await expect(shown_text.locator(".body")).to_have_text("Your parcel is on its way")

    shown_file = message(page, file.message_id)
    await expect(shown_file).to_have_attribute("data-kind", "file", timeout=SHOWN_WITHIN_MS)
    link = shown_file.locator("a.file-download")
    await expect(link).to_have_attribute("data-file-name", "statement.pdf")
    await expect(link).to_have_attribute("data-size", str(len(data)))
    await expect(link).to_have_attribute("href", re.compile(r"^blob:"))
    async with page.expect_download() as downloading:
        await link.click()
    download = await downloading.value
    assert download.suggested_filename == "statement.pdf"
    assert Path(await download.path()).read_bytes() == data

    for sent in (otp, text, file):
        _read_after_delivered(await scene.statuses.wait_for(sent.message_id, "read"))
        await expect(message(page, sent.message_id)).to_have_attribute("data-received", "true")
        await expect(message(page, sent.message_id)).to_have_attribute("data-read", "true")
    await expect(page.locator(MESSAGES)).to_have_count(3)
    await screenshot(page, f"web-device-otp-{xmpp_server.kind}")

    # A reload keeps the keys: the same device, and what is sealed to it still opens.
    await page.reload()
    assert await sign_in(page, scene.jid, PASSWORD) == device_id
    again = await scene.client.send(scene.jid, text="Still the same device")
    await expect(message(page, again.message_id).locator(".body")).to_have_text(
        "Still the same device", timeout=SHOWN_WITHIN_MS
    )
    # The earlier messages came back from the archive as duplicates: not shown twice.
    await expect(page.locator(MESSAGES)).to_have_count(1)


def _flip_payload(envelope: str) -> str:
    """The envelope with one character of its ciphertext changed, the encoding still
    canonical: only the signature can tell."""
    payload = json.loads(envelope)["payload"]
    flipped = payload[:3] + ("B" if payload[3] == "A" else "A") + payload[4:]
    return envelope.replace(payload, flipped, 1)


async def test_a_tampered_envelope_and_an_expired_otp_are_not_shown(scene: Scene) -> None:
    page = await scene.open()
    await sign_in(page, scene.jid, PASSWORD)
    sender = DirectSender(scene.gateway, APP, app_key=scene.client.app_key)
    tampered = await sender.send(scene.jid, TextContent("send your PIN"), tamper=_flip_payload)
    expired = await sender.send(scene.jid, OtpContent("111111", "login"), lifetime_ms=-1)
    good = await scene.client.send(scene.jid, otp="222222", priority=Priority.HIGH)

    # The good one was sent last, on the same stream, and the page handles messages in
    # order: once it is shown and acknowledged, the bad ones were handled before it.
    await expect(message(page, good.message_id).locator(".otp-code")).to_have_text(
        "222222", timeout=SHOWN_WITHIN_MS
    )
    acknowledged = []
    while (receipt := await scene.feedback.next(FeedbackKind.DELIVERED)).message_id != (
        good.message_id
    ):
        acknowledged.append(receipt.message_id)
    assert tampered not in acknowledged and expired not in acknowledged
    for refused in (tampered, expired):
        await expect(message(page, refused)).to_have_count(0)
    await expect(page.locator(MESSAGES)).to_have_count(1)


async def test_an_otp_leaves_at_its_expiry_and_a_message_at_its_auto_delete_time(
    scene: Scene,
) -> None:
    page = await scene.open()
    await sign_in(page, scene.jid, PASSWORD)
    otp = await scene.client.send(scene.jid, otp="313131", ttl_s=6)
    note = await scene.client.send(scene.jid, text="gone in a moment", auto_delete_s=1)
    shown_otp, shown_note = message(page, otp.message_id), message(page, note.message_id)
    await expect(shown_otp.locator("time.countdown")).to_have_text(
        re.compile(r"^valid for 0:0[0-6]$"), timeout=SHOWN_WITHIN_MS
    )
    await expect(shown_note).to_have_attribute("data-received", "true")
    await expect(shown_note).to_have_count(0, timeout=10_000)
    await expect(shown_otp).to_have_count(0, timeout=15_000)
    assert await page.locator(MESSAGES).count() == 0


async def test_an_otp_sent_while_the_tab_was_closed_shows_on_reopening(scene: Scene) -> None:
    page = await scene.open()
    device_id = await sign_in(page, scene.jid, PASSWORD)
    await page.close()
    sent = await scene.client.send(scene.jid, otp="735190", purpose="login")
    await scene.statuses.wait_for(sent.message_id, "dispatched")

    reopened = await scene.open()
    assert await sign_in(reopened, scene.jid, PASSWORD) == device_id
    await expect(message(reopened, sent.message_id).locator(".otp-code")).to_have_text(
        "735190", timeout=SHOWN_WITHIN_MS
    )
    statuses = await scene.statuses.wait_for(sent.message_id, "read")
    assert statuses == ["accepted", "dispatched", "delivered", "read"]


async def test_two_tabs_do_not_fight(scene: Scene) -> None:
    first = await scene.open()
    device_id = await sign_in(first, scene.jid, PASSWORD)
    await record_states(first)
    second = await scene.open()
    await expect(second.locator("#state")).to_have_attribute("data-state", "other-tab")
    await record_states(second)
    # Signing in there too is remembered until the device is free.
    await second.get_by_label("Account").fill(scene.jid)
    await second.get_by_label("Password").fill(PASSWORD)
    await second.locator("form#sign-in").get_by_role("button", name="Sign in").click()

    sent = await scene.client.send(scene.jid, otp="604418")
    await expect(message(first, sent.message_id)).to_be_visible(timeout=SHOWN_WITHIN_MS)
    await scene.statuses.wait_for(sent.message_id, "delivered")
    # Through a whole message both stayed as they were: no session knocked another off.
    assert await states_seen(first) == ["online"]
    assert await states_seen(second) == ["other-tab"]
    await expect(message(second, sent.message_id)).to_have_count(0)

    await first.close()
    await expect(second.locator("#state")).to_have_attribute(
        "data-state", "online", timeout=SHOWN_WITHIN_MS
    )
    await expect(second.locator("#device")).to_have_attribute("data-device-id", device_id)
    after = await scene.client.send(scene.jid, otp="990011")
    await expect(message(second, after.message_id).locator(".otp-code")).to_have_text(
        "990011", timeout=SHOWN_WITHIN_MS
    )
    assert "failed" not in await scene.statuses.wait_for(after.message_id, "delivered")


async def test_a_changed_app_key_is_asked_about_and_the_device_can_revoke_itself(
    scene: Scene,
) -> None:
    page = await scene.open()
    device_id = await sign_in(page, scene.jid, PASSWORD)
    first = await scene.client.send(scene.jid, text="pins the app's key")
    await expect(message(page, first.message_id)).to_be_visible(timeout=SHOWN_WITHIN_MS)

    rotated = DirectSender(scene.gateway, APP)  # the same app JID, another signing key
    offered = fingerprint(point_bytes(rotated.app_key.public_key()))
    refused = await rotated.send(scene.jid, TextContent("signed with the new key"))
    alert = page.locator("div.key-change[role=alert]")
    await expect(alert).to_have_attribute("data-fingerprint", offered, timeout=SHOWN_WITHIN_MS)
    await expect(alert).to_contain_text(rotated.app_jid)
    await expect(message(page, refused)).to_have_count(0)
    await alert.get_by_role("button", name="Trust new key").click()
    await expect(alert).to_have_count(0)
    accepted = await rotated.send(scene.jid, TextContent("trusted now"))
    await expect(message(page, accepted).locator(".body")).to_have_text(
        "trusted now", timeout=SHOWN_WITHIN_MS
    )

    await page.get_by_role("button", name="Revoke this device").click()
    dialog = page.locator("dialog#confirm-revoke")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Revoke", exact=True).click()
    await expect(page.locator("#state")).to_have_attribute(
        "data-state", "revoked", timeout=SHOWN_WITHIN_MS
    )
    (record,) = await scene.gateway.directory.devices(scene.jid)
    assert record.device_id == int(device_id)
    assert record.revoked_at is not None


async def _tab_to(page: Page, selector: str, presses: int = 15) -> None:
    """Press Tab until ``selector`` has the focus, as someone without a mouse does."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    pytest.fail(f"{selector} is not reached with the Tab key")


async def test_the_page_is_used_from_the_keyboard(scene: Scene) -> None:
    page = await scene.open()
    await expect(page.locator("form#sign-in")).to_be_visible()
    await _tab_to(page, "#jid")
    await page.keyboard.type(scene.jid)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#state")).to_have_attribute(
        "data-state", "online", timeout=SHOWN_WITHIN_MS
    )
    await _tab_to(page, "#revoke")
    await page.keyboard.press("Enter")
    dialog = page.locator("dialog#confirm-revoke")
    await expect(dialog).to_be_visible()
    # The focus moves into the dialog, on the choice that changes nothing.
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#revoke")).to_be_focused()
    await expect(page.locator("#state")).to_have_attribute("data-state", "online")
