"""The gateway's ad-hoc commands as the client's transport, for bots: an
XMPP account bound to the app runs them, and statuses arrive as XMPP notices.

It offers what :class:`~cmaas.clientservice.GatewayClient` needs of
:class:`~cmaas.clientservice.GatewayApi`, so the client seals, pins and retries the
same way over either. Files need the HTTP transport (blobs are not carried over XMPP).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from slixmpp import Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.clientservice.api import ApiError, AppCredentials
from cmaas.clientservice.errors import ClientServiceError, GatewayUnavailable
from cmaas.wire import (
    Accepted,
    AppInfo,
    BlobReceipt,
    EventsPage,
    KeyLookup,
    KeyTransportRequest,
    MessageView,
    OmemoBundle,
    OmemoDevices,
    OmemoInboundPage,
    Refused,
    SigningKeyRequest,
    StatusEvent,
    Submission,
    SubmissionResult,
    WireError,
    parse_json_body,
)
from cmaas.wire.adhoc import ANSWER_FIELD, COMMAND_NODE_PREFIX
from cmaas.wire.signing import request_signature
from cmaas.xmpp.commands import CommandCaller, CommandReply, command_client
from cmaas.xmpp.link import LinkState, XmppLink
from cmaas.xmpp.stanzas import STATUS_NAMESPACE

__all__ = ["XmppTransport"]

_INBOUND_POLL_S = 3.0


class XmppTransport:
    """Commands to ``gateway`` (the component domain) from a bound bot account.

    Use as ``async with XmppTransport(...)``; it keeps the session up (reconnecting with
    backoff) until closed.
    """

    def __init__(
        self,
        jid: str,
        password: str,
        gateway: str,
        credentials: AppCredentials,
        *,
        host: str,
        port: int = 5222,
        plaintext: bool = False,
    ) -> None:
        self.gateway = gateway
        self._credentials = credentials
        self.xmpp = command_client(jid, password, plaintext=plaintext)
        self._commands = CommandCaller(self.xmpp)
        self._link = XmppLink(self.xmpp, host, port, name="bot session")
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._notices: list[StatusEvent] = []
        self._arrived = asyncio.Event()
        self._app_jid = ""
        self.xmpp.add_event_handler("session_start", lambda _: self.xmpp.send_presence())
        self.xmpp.register_handler(
            Callback(
                "cmaas status notices",
                MatchXPath(f"{{jabber:client}}message/{{{STATUS_NAMESPACE}}}status"),
                self._on_notice,  # type: ignore[arg-type]
            )
        )

    async def __aenter__(self) -> XmppTransport:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def start(self, within: float = 30.0) -> None:
        """Raises: GatewayUnavailable: No session within ``within`` seconds."""
        self._running = asyncio.create_task(self._link.run(self._stop))
        deadline = time.monotonic() + within
        while self._link.state is not LinkState.CONNECTED:
            if time.monotonic() > deadline or self._running.done():
                raise GatewayUnavailable(f"no XMPP session for {self.xmpp.boundjid.bare}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._stop.set()
        if self._running is not None:
            await self._running

    def _on_notice(self, message: Message) -> None:
        if self._app_jid and str(message["from"].bare) != self._app_jid:
            return  # only the app's own notices, never another sender's
        status = message.xml.find(f"{{{STATUS_NAMESPACE}}}status")
        if status is None:
            return
        at = status.get("at", "0")
        try:
            event = StatusEvent.from_json(
                {
                    "event_id": int(status.get("event", "")),
                    "message_id": status.get("message", ""),
                    "status": status.get("status", ""),
                    "at_ms": int(at) if at.isascii() and at.isdigit() else 0,
                    "device": status.get("device", ""),
                    "detail": status.get("detail", ""),
                }
            )
        except (ValueError, WireError):
            return  # not a notice of this contract: nothing to hand on
        self._notices.append(event)
        self._arrived.set()

    async def _run(self, command: str, values: dict[str, str] | None = None) -> object:
        """The command's answer, as the HTTP API would give it.

        Raises: ApiError (a refusal), GatewayUnavailable, WireError.
        """
        node = COMMAND_NODE_PREFIX + command
        try:
            reply = await (
                self._commands.run(self.gateway, node, values)
                if values is not None
                else self._commands.execute(self.gateway, node)
            )
        except TimeoutError as error:
            raise GatewayUnavailable(f"{node}: no answer") from error
        return _answer(node, reply)

    def _signed(self, path: str, body: dict[str, object], method: str = "POST") -> dict[str, str]:
        text = json.dumps(body, separators=(",", ":"))
        timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
        signature = request_signature(
            self._credentials.hmac_key, method, path, timestamp, nonce, text.encode()
        )
        return {"request": text, "timestamp": timestamp, "nonce": nonce, "signature": signature}

    async def describe(self) -> AppInfo:
        described = AppInfo.from_json(await self._run("app-describe"))
        self._app_jid = described.app_jid
        return described

    async def register_signing_key(self, public_key_b64url: str) -> str:
        body = SigningKeyRequest(public_key_b64url).to_json()
        answer = await self._run("signing-key-register", self._signed("/v1/signing-keys", body))
        fingerprint = answer.get("fingerprint") if isinstance(answer, dict) else None
        if not isinstance(fingerprint, str):
            raise WireError("signing-key-register answered without a fingerprint")
        return fingerprint

    async def lookup(self, to: str) -> KeyLookup:
        return KeyLookup.from_json(await self._run("keys-lookup", {"to": to}))

    async def submit(self, message: Submission) -> Accepted:
        signed = self._signed("/v1/messages", message.to_json())
        return Accepted.from_json(await self._run("message-send", signed))

    async def submit_batch(self, messages: Sequence[Submission]) -> list[SubmissionResult]:
        results: list[SubmissionResult] = []
        for message in messages:
            try:
                results.append(await self.submit(message))
            except ApiError as error:
                results.append(Refused(error.status, error.code, error.detail, message.message_id))
        return results

    async def status(self, message_id: str) -> MessageView:
        return MessageView.from_json(await self._run("message-status", {"message_id": message_id}))

    async def events(self, after: int = 0, wait: int = 0) -> EventsPage:
        """Notices received since ``after``; notices sent while the bot was offline come
        from the server's offline storage at login."""
        deadline = time.monotonic() + wait
        while True:
            found = sorted(
                (event for event in self._notices if event.event_id > after),
                key=lambda event: event.event_id,
            )
            if found or time.monotonic() >= deadline:
                return EventsPage(tuple(found), found[-1].event_id if found else after)
            self._arrived.clear()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._arrived.wait()
            except TimeoutError:
                continue

    async def upload_blob(self, path: Path, digest: str, expires_in: int) -> BlobReceipt:
        raise ClientServiceError("files travel as blobs over HTTP; use the HTTP transport")

    async def omemo_devices(self) -> OmemoDevices:
        return OmemoDevices.from_json(await self._run("omemo-device-list"))

    async def publish_omemo_device(self, bundle: OmemoBundle) -> None:
        path = f"/v1/omemo/devices/{bundle.device_id}"
        values = self._signed(path, bundle.to_json(), method="PUT")
        await self._run("omemo-device-publish", {"device_id": str(bundle.device_id), **values})

    async def retire_omemo_device(self, device_id: int) -> None:
        raise ClientServiceError("retiring an OMEMO device needs the HTTP transport")

    async def omemo_inbound(self, after: int = 0, wait: int = 0) -> OmemoInboundPage:
        """Polls the ad-hoc command every few seconds until something came or ``wait``
        passed: XMPP has no long-poll for it."""
        deadline = time.monotonic() + wait
        while True:
            page = OmemoInboundPage.from_json(
                await self._run("omemo-inbound", {"after": str(after)})
            )
            left = deadline - time.monotonic()
            if page.items or left <= 0:
                return page
            await asyncio.sleep(min(_INBOUND_POLL_S, left))

    async def send_key_transport(self, request: KeyTransportRequest) -> None:
        signed = self._signed("/v1/omemo/key-transports", request.to_json())
        await self._run("omemo-key-transport", signed)


def _answer(node: str, reply: CommandReply) -> object:
    """A completed command's answer, or its refusal as an :class:`ApiError`.

    Raises: ApiError, GatewayUnavailable, WireError.
    """
    if reply.status == "error":
        if reply.error in ("forbidden", "item-not-found"):
            raise ApiError(403, "forbidden", f"{node}: this account is not bound to an app", None)
        raise GatewayUnavailable(f"{node}: <{reply.error}/>")
    if reply.status != "completed":
        problems = "; ".join(reply.error_notes) or "the form was not accepted"
        raise ApiError(400, "invalid_request", f"{node}: {problems}", None)
    texts = reply.values.get(ANSWER_FIELD) or [""]
    answer = parse_json_body(texts[0])
    if isinstance(answer, dict) and "error" in answer:
        refusal = Refused.from_json(answer)
        raise ApiError(
            refusal.status_code,
            refusal.error,
            refusal.detail,
            None if refusal.retry_after is None else float(refusal.retry_after),
        )
    return answer
