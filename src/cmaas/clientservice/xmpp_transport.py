"""The gateway's ad-hoc commands (SPEC section 3) as the client's transport, for bots: an
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
from typing import Any

from slixmpp import Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.clientservice.api import ApiError, AppCredentials
from cmaas.clientservice.errors import ClientServiceError, GatewayUnavailable
from cmaas.delivery.signing import request_signature
from cmaas.xmpp.commands import CommandCaller, CommandReply, command_client
from cmaas.xmpp.link import LinkState, XmppLink
from cmaas.xmpp.stanzas import STATUS_NAMESPACE

__all__ = ["XmppTransport"]

_NODE = "urn:cmaas:cmd:"


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
        self._notices: list[dict[str, Any]] = []
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
        if status is None or not status.get("event", "").isdigit():
            return
        self._notices.append(
            {
                "event_id": int(status.get("event", "0")),
                "message_id": status.get("message", ""),
                "status": status.get("status", ""),
                "at_ms": int(status.get("at", "0") or 0),
                "device": status.get("device", ""),
                "detail": status.get("detail", ""),
            }
        )
        self._arrived.set()

    async def _run(self, command: str, values: dict[str, str] | None = None) -> dict[str, Any]:
        node = _NODE + command
        try:
            reply = await (
                self._commands.run(self.gateway, node, values)
                if values is not None
                else self._commands.execute(self.gateway, node)
            )
        except TimeoutError as error:
            raise GatewayUnavailable(f"{node}: no answer") from error
        return _answer(node, reply)

    def _signed(self, path: str, body: dict[str, Any]) -> dict[str, str]:
        text = json.dumps(body, separators=(",", ":"))
        timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
        signature = request_signature(
            self._credentials.hmac_key, "POST", path, timestamp, nonce, text.encode()
        )
        return {"request": text, "timestamp": timestamp, "nonce": nonce, "signature": signature}

    async def describe(self) -> dict[str, Any]:
        values = await self._run("app-describe")
        self._app_jid = values["app_jid"][0]
        return {key: value[0] if len(value) == 1 else value for key, value in values.items()}

    async def register_signing_key(self, public_key_b64url: str) -> str:
        values = await self._run(
            "signing-key-register",
            self._signed("/v1/signing-keys", {"public_key": public_key_b64url}),
        )
        return str(values["fingerprint"][0])

    async def lookup(self, to: str) -> dict[str, Any]:
        values = await self._run("keys-lookup", {"to": to})
        return {
            "jid": values["jid"][0],
            "devices": [json.loads(text) for text in values.get("bundles", [])],
        }

    async def submit(self, message: dict[str, Any]) -> dict[str, Any]:
        values = await self._run("message-send", self._signed("/v1/messages", message))
        return {
            "message_id": values["message_id"][0],
            "status": values["status"][0],
            "detail": (values.get("detail") or [""])[0],
            "recipient_jid": (values.get("recipient_jid") or [""])[0],
            "duplicate": values.get("duplicate") == ["True"],
        }

    async def submit_batch(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for message in messages:
            try:
                results.append({"status_code": 202, **await self.submit(message)})
            except ApiError as error:
                results.append(
                    {"status_code": error.status, "error": error.code, "detail": error.detail}
                )
        return results

    async def status(self, message_id: str) -> dict[str, Any]:
        values = await self._run("message-status", {"message_id": message_id})
        return {
            "message_id": values["message_id"][0],
            "status": values["status"][0],
            "detail": (values.get("detail") or [""])[0],
            "recipient_jid": (values.get("recipient_jid") or [""])[0] or None,
            "devices": json.loads(values["devices"][0]),
            "history": [json.loads(text) for text in values.get("history", [])],
        }

    async def events(self, after: int = 0, wait: int = 0) -> dict[str, Any]:
        """Notices received since ``after``; notices sent while the bot was offline come
        from the server's offline storage at login."""
        deadline = time.monotonic() + wait
        while True:
            found = [event for event in self._notices if event["event_id"] > after]
            if found or time.monotonic() >= deadline:
                found.sort(key=lambda event: int(event["event_id"]))
                return {"events": found, "next": found[-1]["event_id"] if found else after}
            self._arrived.clear()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._arrived.wait()
            except TimeoutError:
                continue

    async def upload_blob(self, path: Path, digest: str, expires_in: int) -> dict[str, Any]:
        raise ClientServiceError("files travel as blobs over HTTP; use the HTTP transport")


def _answer(node: str, reply: CommandReply) -> dict[str, Any]:
    """A completed command's values, or its refusal as an :class:`ApiError`."""
    if reply.status == "error":
        if reply.error in ("forbidden", "item-not-found"):
            raise ApiError(403, "forbidden", f"{node}: this account is not bound to an app", None)
        raise GatewayUnavailable(f"{node}: <{reply.error}/>")
    values = reply.values
    if "error" in values:
        retry = (values.get("retry_after") or [""])[0]
        raise ApiError(
            int(values.get("status_code", ["400"])[0]),
            values["error"][0],
            (values.get("detail") or [""])[0],
            float(retry) if retry.isascii() and retry.isdigit() else None,
        )
    if reply.status != "completed":
        problems = "; ".join(reply.error_notes) or "the form was not accepted"
        raise ApiError(400, "invalid_request", f"{node}: {problems}", None)
    return values
