"""``cmaas client send``: seal a message at the source and submit it, from a shell.

Settings come from ``CMAAS_CLIENT_*`` variables (see ``.env.example``), read by
:func:`cmaas.clientservice.config.client_settings` from ``--env-file`` and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmaas.cli.logging_setup import configure_logging
from cmaas.config import read_variables
from cmaas.lifecycle import MessageStatus, Priority

if TYPE_CHECKING:
    from cmaas.clientservice import ClientConfig, GatewayClient
    from cmaas.clientservice.client import OmemoReply
    from cmaas.clientservice.config import ClientSettings

__all__ = ["add_parser"]

log = logging.getLogger(__name__)

_FINAL = frozenset({"read", "failed", "expired"})


def add_parser(parts: Any) -> None:
    parser = parts.add_parser(
        "client",
        help="the gateway client service: seal at the source and send",
        description="Seals messages for the recipient's devices with the app's own signing"
        " key and submits them to the gateway. Settings: CMAAS_CLIENT_URL, CMAAS_CLIENT_ID,"
        " CMAAS_CLIENT_SECRET, CMAAS_CLIENT_HMAC_KEY, CMAAS_CLIENT_DIR, CMAAS_CLIENT_OMEMO.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    send = actions.add_parser("send", help="seal and send one message")
    send.add_argument("--to", required=True, help="JID, email or +E.164 mobile number")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("--otp", help="a one-time password")
    what.add_argument("--text", help="a confidential text")
    what.add_argument("--file", type=Path, help="a file, encrypted here before it leaves")
    send.add_argument("--media-type", default="application/octet-stream", help="of --file")
    send.add_argument("--purpose", default="login", help="what the OTP is for (default login)")
    send.add_argument(
        "--priority",
        choices=tuple(Priority),
        help="default: high for --otp, else normal",
    )
    send.add_argument("--ttl", type=int, default=600, help="seconds until it expires (600)")
    send.add_argument("--auto-delete", type=int, help="seconds after display to delete it")
    send.add_argument(
        "--message-id",
        help="your own id; a second run with it seals anew and is refused (409)",
    )
    send.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=120.0,
        metavar="SECONDS",
        help="show each status until read, failed or expired (default at most 120 s)",
    )
    send.add_argument("--json", action="store_true", help="print JSON lines")
    send.set_defaults(handler=_send)

    serve = actions.add_parser(
        "serve",
        help="run the client service as a local HTTP daemon (native and Sandes-shaped API)",
        description="Listens on loopback by default. Native API: POST /v1/send and GET"
        " /v1/messages/{id} with 'Authorization: Bearer <client secret>'. Sandes-shaped:"
        " POST /v1/api/message/multicast with clientid, clientsecret and hmac headers."
        " Statuses go to --webhook, signed with the app's HMAC key.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8481, help="listen port (8481)")
    serve.add_argument("--webhook", help="the app's local URL for statuses [CMAAS_CLIENT_WEBHOOK]")
    serve.add_argument(
        "--reply-webhook",
        help="the app's local URL for what people write back from their OMEMO clients"
        " [CMAAS_CLIENT_REPLY_WEBHOOK]",
    )
    serve.set_defaults(handler=_serve)


def _settings(args: argparse.Namespace, log_level: str) -> ClientSettings:
    from cmaas.clientservice.config import client_settings

    return client_settings(read_variables(Path(args.env_file)), log_level=log_level)


def _send(args: argparse.Namespace) -> int:
    settings = _settings(args, "WARNING")
    configure_logging(settings.log_level)
    result: int = asyncio.run(_send_and_wait(args, settings.config))
    return result


async def _send_and_wait(args: argparse.Namespace, config: ClientConfig) -> int:
    from cmaas.clientservice import ClientServiceError, GatewayClient

    if args.file is not None and not args.file.is_file():
        raise ClientServiceError(f"--file {args.file}: no such file")
    priority = Priority(args.priority) if args.priority else None
    async with GatewayClient(config) as client:
        if args.file is not None:
            answer = await client.send_file(
                args.to,
                args.file,
                media_type=args.media_type,
                priority=priority,
                ttl_s=args.ttl,
                message_id=args.message_id,
            )
        else:
            answer = await client.send(
                args.to,
                otp=args.otp,
                text=args.text,
                purpose=args.purpose,
                priority=priority,
                ttl_s=args.ttl,
                auto_delete_s=args.auto_delete,
                message_id=args.message_id,
            )
        _show(
            args,
            {
                "message_id": answer.message_id,
                "status": answer.status.value,
                "detail": answer.detail,
            },
        )
        if args.wait is None:
            return 0 if answer.status is not MessageStatus.FAILED else 3
        return await _follow(args, client, answer.message_id, answer.status.value)


async def _follow(
    args: argparse.Namespace, client: GatewayClient, message_id: str, status: str
) -> int:
    """Poll the message's history (leaving the app's event cursor alone) and show each
    new event until a final status or ``--wait`` seconds."""
    shown = 1
    deadline = time.monotonic() + args.wait
    while status not in _FINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        view = await client.status(message_id)
        for event in view.history[shown:]:
            _show(args, event.to_json())
        shown = len(view.history)
        status = view.status.value
    if status in _FINAL:
        return 0 if status == "read" else 3
    _show(args, {"message_id": message_id, "status": status, "detail": "still waiting; gave up"})
    return 4


def _show(args: argparse.Namespace, event: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(event, sort_keys=True), flush=True)
        return
    where = f" on device {event['device']}" if event.get("device") else ""
    why = f": {event['detail']}" if event.get("detail") else ""
    print(f"{event['message_id']}: {event['status']}{where}{why}", flush=True)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, "INFO")
    configure_logging(settings.log_level)
    result: int = asyncio.run(_daemon(args, settings))
    return result


async def _daemon(args: argparse.Namespace, settings: ClientSettings) -> int:
    from aiohttp import web

    from cmaas.clientservice import GatewayClient
    from cmaas.clientservice.api import gateway_session
    from cmaas.clientservice.daemon import DaemonOptions, ReplyRelay, StatusRelay, daemon_app
    from cmaas.shutdown import stop_on_signals

    config = settings.config
    webhook = args.webhook or settings.webhook
    reply_webhook = args.reply_webhook or settings.reply_webhook
    stop = stop_on_signals()
    async with gateway_session() as session, GatewayClient(config, session=session) as client:
        options = DaemonOptions(settings.file_urls, settings.file_timeout_s)
        runner = web.AppRunner(daemon_app(client, config.credentials, options), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            print(
                f"client service for {client.app_jid} on http://{args.host}:{args.port}"
                + (f", statuses to {webhook}" if webhook else "")
                + (f", replies to {reply_webhook}" if reply_webhook else ""),
                flush=True,
            )
            relay = StatusRelay(webhook, config.credentials.hmac_key, session) if webhook else None
            following = asyncio.create_task(client.follow(relay, stop)) if relay else None
            # What people's OMEMO clients send back advances this device's sessions.
            on_reply = (
                ReplyRelay(reply_webhook, config.credentials.hmac_key, session)
                if reply_webhook
                else _log_reply
            )
            receiving = (
                asyncio.create_task(client.receive_omemo(stop, on_reply))
                if client.omemo is not None
                else None
            )
            await stop.wait()
            for task in (following, receiving):
                if task is not None:
                    # A relay retrying a dead webhook must not hold the shutdown; the
                    # event's cursor has not advanced, so it is relayed again next start.
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await runner.cleanup()
    return 0


def _log_reply(reply: OmemoReply) -> None:
    # Without a reply webhook the daemon does not forward replies; their content is never
    # logged.
    log.info("an OMEMO reply from %s (device %d) was opened", reply.sender, reply.device_id)
