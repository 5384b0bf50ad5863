"""``cmaas device init|publish|listen|read|devices|revoke``: the reference device.

Every option can also come from a ``CMAAS_DEVICE_*`` variable (environment over
``--env-file``; flags over both); the account password and key-file passphrase are best
given that way, so they stay out of the process list and shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cmaas.cli.logging_setup import configure_logging
from cmaas.config import read_variables, with_flags
from cmaas.device.config import (
    DEFAULT_STATE_DIR,
    FLAGS,
    DeviceConfig,
    DeviceSettings,
    device_settings,
    device_state_dir,
)
from cmaas.device.errors import DeviceError
from cmaas.device.keyfile import KeyFile
from cmaas.device.web import DEFAULT_PORT, web_device_config
from cmaas.envelope import AppKeyChanged, DeviceKeyring, FileContent, OtpContent, TextContent

if TYPE_CHECKING:
    from cmaas.device.client import RefusedMessage

__all__ = ["add_parser"]


def add_parser(parts: Any) -> None:
    parser = parts.add_parser(
        "device",
        help="the reference device: owns a device key, receives and opens messages",
        description="A device generates its keys locally; the private keys never leave"
        " its key file. Options fall back to CMAAS_DEVICE_* variables.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="generate this device's keys (once)")
    _common(init, connects=False)
    init.add_argument(
        "--one-time-prekeys", type=int, default=100, help="pool size to generate (default 100)"
    )
    init.set_defaults(handler=_init)

    publish = actions.add_parser("publish", help="publish or refresh the keys at the gateway")
    _common(publish)
    publish.add_argument("--label", default="", help="a name for this device, e.g. 'phone'")
    publish.set_defaults(handler=_publish)

    listen = actions.add_parser("listen", help="receive, open and print messages")
    _common(listen)
    listen.add_argument("--read", action="store_true", help="send the displayed marker at once")
    listen.add_argument("--count", type=int, help="stop after this many messages")
    listen.add_argument("--timeout", type=float, help="stop after this many seconds")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")
    listen.set_defaults(handler=_listen)

    read = actions.add_parser("read", help="mark a shown message as read (XEP-0333 displayed)")
    _common(read)
    read.add_argument("message_id")
    read.set_defaults(handler=_read)

    devices = actions.add_parser("devices", help="list this account's devices")
    _common(devices)
    devices.set_defaults(handler=_devices)

    pins = actions.add_parser(
        "pins", help="the app keys this device trusts, and new keys apps have offered"
    )
    _common(pins, connects=False)
    pins.set_defaults(handler=_pins)

    trust = actions.add_parser(
        "trust",
        help="accept the new key an app offered, after checking its fingerprint with the app",
    )
    _common(trust, connects=False)
    trust.add_argument("app_jid")
    trust.add_argument("fingerprint", help="all 64 hex digits; spaces are ignored")
    trust.set_defaults(handler=_trust)

    revoke = actions.add_parser("revoke", help="revoke a device of this account (a lost phone)")
    _common(revoke)
    revoke.add_argument("device_id", type=int)
    revoke.set_defaults(handler=_revoke)

    web = actions.add_parser(
        "web",
        help="serve the web device (a page that is a device) on a fixed loopback origin",
        description="Serves the web device's built files to this machine only, with a strict"
        " Content-Security-Policy and integrity hashes checked at start, and prints the URL"
        " to open. The page keeps its keys in the browser, per origin: always open the same"
        " URL.",
    )
    web.add_argument(
        "--websocket",
        metavar="URL",
        help="the XMPP server's WebSocket URL, e.g. wss://example.org/xmpp-websocket"
        " [CMAAS_WEB_WEBSOCKET]",
    )
    web.add_argument("--gateway", help="the gateway's component domain [CMAAS_DEVICE_GATEWAY]")
    web.add_argument(
        "--blob-origin",
        action="append",
        metavar="URL",
        help="a gateway API origin the page may download files from; repeatable"
        " [CMAAS_WEB_BLOB_ORIGINS, comma-separated]",
    )
    web.add_argument("--jid", help="an account to prefill in the sign-in form [CMAAS_DEVICE_JID]")
    web.add_argument("--bind", help="the loopback address to listen on [CMAAS_WEB_BIND, 127.0.0.1]")
    web.add_argument(
        "--port", type=int, help=f"the port, part of the origin [CMAAS_WEB_PORT, {DEFAULT_PORT}]"
    )
    web.set_defaults(handler=_web)


def _common(parser: argparse.ArgumentParser, *, connects: bool = True) -> None:
    parser.add_argument("--jid", help="the account's bare JID [CMAAS_DEVICE_JID]")
    parser.add_argument(
        "--dir",
        type=Path,
        help="where the device keeps its key file and state"
        f" [CMAAS_DEVICE_DIR, {DEFAULT_STATE_DIR}]",
    )
    if not connects:
        return
    parser.add_argument("--gateway", help="the gateway's component domain [CMAAS_DEVICE_GATEWAY]")
    parser.add_argument("--host", help="XMPP server host [CMAAS_DEVICE_HOST, the JID's domain]")
    parser.add_argument("--port", type=int, help="XMPP client port [CMAAS_DEVICE_PORT, 5222]")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS; refused unless the host is a loopback address [CMAAS_DEVICE_PLAINTEXT]",
    )


def _variables(args: argparse.Namespace) -> dict[str, str]:
    """``--env-file``, the environment over it, and the command's flags over both."""
    flags = {variable: getattr(args, flag, None) for flag, variable in FLAGS.items()}
    return with_flags(read_variables(Path(args.env_file)), flags)


def _settings(args: argparse.Namespace, **extra: Any) -> DeviceSettings:
    return device_settings(_variables(args), **extra)


def _init(args: argparse.Namespace) -> int:
    config = _settings(args, connects=False).config
    if not 0 <= args.one_time_prekeys <= 100:
        raise DeviceError("--one-time-prekeys must be 0 to 100")
    keyring = DeviceKeyring.generate(
        config.jid, now_ms=int(time.time() * 1000), one_time_prekeys=args.one_time_prekeys
    )
    KeyFile(config.keyring_path).create(keyring, config.passphrase)
    print(f"device {keyring.device_id} of {config.jid} created in {config.state_dir}")
    print(f"identity key fingerprint: {_grouped(keyring.fingerprint)}")
    print("next: cmaas device publish")
    return 0


def _grouped(digest: str) -> str:
    return " ".join(digest[i : i + 8] for i in range(0, len(digest), 8))


def _run(
    settings: DeviceSettings, command: Callable[[DeviceConfig], Coroutine[Any, Any, int]]
) -> int:
    configure_logging(settings.log_level)
    result: int = asyncio.run(command(settings.config))
    return result


def _publish(args: argparse.Namespace) -> int:
    async def publish(config: DeviceConfig) -> int:
        from cmaas.device.client import DeviceClient

        async with DeviceClient(config) as device:
            await device.publish(args.label)
            assert device.keyring is not None
            print(
                f"device {device.keyring.device_id} published;"
                f" fingerprint {_grouped(device.keyring.fingerprint)}"
            )
        return 0

    return _run(_settings(args), publish)


def _listen(args: argparse.Namespace) -> int:
    async def listen(config: DeviceConfig) -> int:
        from cmaas.device.client import DeviceClient

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        deadline = loop.time() + args.timeout if args.timeout else None
        shown = 0
        async with DeviceClient(config) as device:
            if device.needs_publishing():
                await device.publish()
            print("listening", file=sys.stderr, flush=True)
            while not stop.is_set() and (args.count is None or shown < args.count):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                waiters = {
                    asyncio.ensure_future(device.next_message()): "message",
                    asyncio.ensure_future(device.refused.get()): "refused",
                    asyncio.ensure_future(device.deleted.get()): "deleted",
                    asyncio.ensure_future(stop.wait()): "stop",
                }
                done, pending = await asyncio.wait(
                    waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                for task in done:
                    what = waiters[task]
                    if what == "message":
                        _print_message(task.result(), as_json=args.json)
                        shown += 1
                    elif what == "refused":
                        _print_refusal(cast("RefusedMessage", task.result()), as_json=args.json)
                    elif what == "deleted":
                        _print_deletion(cast(str, task.result()), as_json=args.json)
        return 0

    return _run(_settings(args, read_at_once=args.read), listen)


def _print_message(message: Any, *, as_json: bool) -> None:
    content = message.content
    details: dict[str, object] = {"kind": message.header.kind}
    if isinstance(content, TextContent):
        details["text"] = content.text
        line = content.text
    elif isinstance(content, OtpContent):
        details.update(code=content.code, purpose=content.purpose)
        line = f"one-time password {content.code} ({content.purpose})"
    else:
        assert isinstance(content, FileContent)
        details.update(
            name=content.name, media_type=content.media_type, size=content.size, url=content.url
        )
        line = f"file {content.name} ({content.media_type}, {content.size} bytes) at {content.url}"
    if as_json:
        record = {
            "id": message.message_id,
            "app": message.app_jid,
            "app_name": message.app_name,
            "app_fingerprint": message.app_fingerprint,
            "first_contact": message.newly_pinned,
            "delete_at_ms": message.delete_at_ms,
            **details,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    pinned = " (key pinned now: first message from this app)" if message.newly_pinned else ""
    print(
        f"[{message.header.kind}] {message.app_name} <{message.app_jid}>"
        f" key {_grouped(message.app_fingerprint)[:35]}{pinned}\n"
        f"  {line}\n"
        f"  id {message.message_id}"
        + (
            f", deletes itself in {message.header.auto_delete_s} s"
            if message.header.auto_delete_s
            else ""
        ),
        flush=True,
    )


def _print_refusal(refused: RefusedMessage, *, as_json: bool) -> None:
    reason = type(refused.error).__name__
    if as_json:
        record = {"refused": refused.message_id, "from": refused.sender, "reason": reason}
        print(json.dumps(record, ensure_ascii=False), flush=True)
    changed = isinstance(refused.error, AppKeyChanged)
    print(
        f"{'WARNING: ' if changed else ''}refused message {refused.message_id!r} from"
        f" {refused.sender}: {reason}: {refused.error}"
        + (
            "\n  Either the app changed its key or someone impersonates it. Check the new"
            " fingerprint with the app, then: cmaas device trust APP_JID FINGERPRINT"
            if changed
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )


def _print_deletion(message_id: str, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"deleted": message_id}), flush=True)
    else:
        print(f"message {message_id} deleted itself (auto-delete)", flush=True)


def _read(args: argparse.Namespace) -> int:
    async def read(config: DeviceConfig) -> int:
        from cmaas.device.client import DeviceClient

        async with DeviceClient(config) as device:
            try:
                app_jid = device.mark_read(args.message_id)
            except KeyError:
                raise DeviceError(f"this device has shown no message {args.message_id!r}") from None
            print(f"marked {args.message_id} from {app_jid} as read")
        return 0

    return _run(_settings(args), read)


def _pins(args: argparse.Namespace) -> int:
    from cmaas.device.pins import PinStore

    store = PinStore(device_state_dir(_variables(args)) / "pins.json")
    for app_jid, pin in store.items():
        print(f"trusted  {app_jid}  {_grouped(pin.fingerprint)}")
    for app_jid, pin in store.offers():
        print(f"OFFERED  {app_jid}  {_grouped(pin.fingerprint)}  (not trusted: see 'trust')")
    return 0


def _trust(args: argparse.Namespace) -> int:
    from cmaas.device.pins import PinStore

    store = PinStore(device_state_dir(_variables(args)) / "pins.json")
    pin = store.accept(args.app_jid, args.fingerprint, int(time.time() * 1000))
    print(f"{args.app_jid} is now trusted with key {_grouped(pin.fingerprint)}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    async def devices(config: DeviceConfig) -> int:
        from cmaas.device.client import DeviceClient

        async with DeviceClient(config) as device:
            rows = await device.devices()
            me = device.keyring.device_id if device.keyring else None
        for row in rows:
            marker = "*" if row.get("device_id") == str(me) else " "
            print(
                f"{marker} {row.get('device_id', '?'):>10}  {row.get('status', '')}"
                f"  {row.get('label', '')}  {row.get('fingerprint', '')}"
                f"  prekeys {row.get('prekeys_left', '?')}"
            )
        return 0

    return _run(_settings(args), devices)


def _web(args: argparse.Namespace) -> int:
    from cmaas.device.web import WEB_FLAGS, WEB_STATIC, StaticFiles, serving_web_device

    flags = {variable: getattr(args, flag, None) for flag, variable in WEB_FLAGS.items()}
    flags["CMAAS_WEB_BLOB_ORIGINS"] = ",".join(args.blob_origin or [])
    config = web_device_config(with_flags(read_variables(Path(args.env_file)), flags))
    static = StaticFiles.load(WEB_STATIC)

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        try:
            async with serving_web_device(config, static):
                # Printed once the port is bound, so a script can wait for the line.
                print(f"web device: open {config.url}", flush=True)
                await stop.wait()
        except OSError as error:
            raise DeviceError(f"cannot serve on {config.origin}: {error}") from error
        return 0

    return asyncio.run(serve())


def _revoke(args: argparse.Namespace) -> int:
    async def revoke(config: DeviceConfig) -> int:
        from cmaas.device.client import DeviceClient

        async with DeviceClient(config) as device:
            await device.revoke(args.device_id)
        print(f"device {args.device_id} revoked")
        return 0

    return _run(_settings(args), revoke)
