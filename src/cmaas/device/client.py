"""The reference device: an XMPP client that owns a device key and opens messages.

It publishes its bundle through the gateway's ``device-publish`` command, hands every
sealed message addressed to it to :class:`~cmaas.device.inbox.Inbox` (which decides, with
every check, what is shown), and carries out the outcome: the XEP-0184 receipt once a
message is shown, the file download, the auto-delete timer; the XEP-0333 displayed marker
follows once the message is read. It refills one-time prekeys when the gateway asks and
rotates its signed prekey on schedule.

Bots use it as a library: ``async for message in device.messages(): ...``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType

from slixmpp import JID, Message
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from cmaas.clock import now_ms
from cmaas.device.catchup import ArchiveCursor, archived_envelope, carried_envelope
from cmaas.device.config import DeviceConfig
from cmaas.device.errors import ConnectionFailed, DeviceError, GatewayRefused
from cmaas.device.files import fetch_file
from cmaas.device.inbox import (
    Accepted,
    Duplicate,
    FetchFile,
    Inbox,
    ReceivedMessage,
    Refused,
    RefusedMessage,
)
from cmaas.device.keyfile import KeyFile
from cmaas.device.pins import PinStore
from cmaas.device.seen import SeenMessages
from cmaas.envelope import MAX_PREKEYS_PER_BUNDLE, DeviceKeyring, EnvelopeError
from cmaas.xmpp.commands import CommandCaller, CommandReply, command_client
from cmaas.xmpp.link import XmppLink
from cmaas.xmpp.stanzas import DEVICE_NAMESPACE, ENVELOPE_NAMESPACE, register_stanzas

__all__ = ["DeviceClient", "ReceivedMessage", "RefusedMessage"]

log = logging.getLogger(__name__)

PUBLISH = "urn:cmaas:cmd:device-publish"
LIST = "urn:cmaas:cmd:device-list"
REVOKE = "urn:cmaas:cmd:device-revoke"


class DeviceClient:
    """One device of one account, connected to its XMPP server.

    Use ``async with DeviceClient(config) as device:``. Holds the key file's lock for
    as long as it is open, so two processes never use one keyring at once.
    """

    def __init__(self, config: DeviceConfig, *, clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self._clock = clock
        self._keyfile = KeyFile(config.keyring_path)
        self.pins = PinStore(config.pins_path)
        self.seen = SeenMessages(config.seen_path)
        self.keyring: DeviceKeyring | None = None
        self.xmpp = command_client(
            f"{config.jid}/{config.resource}", config.password, plaintext=not config.require_tls
        )
        for plugin in ("xep_0297", "xep_0280", "xep_0059", "xep_0313"):
            self.xmpp.register_plugin(plugin)
        register_stanzas()
        self.commands = CommandCaller(self.xmpp)
        self._archive = ArchiveCursor(config.state_dir / "archive.json")
        self._catching_up: asyncio.Task[None] | None = None
        self._archive_moved_ms = 0
        # Refusals told in this process, so that a message met twice (an offline copy and
        # the archive's) is reported once.
        self._refusals_told: set[tuple[str, str]] = set()
        self._inbox: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        self.refused: asyncio.Queue[RefusedMessage] = asyncio.Queue()
        self.deleted: asyncio.Queue[str] = asyncio.Queue()
        """Ids of shown messages whose auto-delete time has come: remove them from view."""
        self._deletions: set[asyncio.TimerHandle] = set()
        self._names: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._auth_failed = False
        self._lock_context: AbstractContextManager[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._link_stop = asyncio.Event()
        self._link_task: asyncio.Task[None] | None = None
        self.link: XmppLink | None = None
        """The supervised session, once connected (its ``state`` and ``connects``)."""
        ns = self.xmpp.default_ns
        self.xmpp.register_handler(
            CoroutineCallback(
                "cmaas envelope",
                MatchXPath(f"{{{ns}}}message/{{{ENVELOPE_NAMESPACE}}}envelope"),
                self._on_envelope,  # type: ignore[arg-type]
            )
        )
        self.xmpp.register_handler(
            CoroutineCallback(
                "cmaas prekeys-low",
                MatchXPath(f"{{{ns}}}message/{{{DEVICE_NAMESPACE}}}prekeys-low"),
                self._on_prekeys_low,  # type: ignore[arg-type]
            )
        )
        self.xmpp.add_event_handler("carbon_received", self._on_carbon)
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("failed_all_auth", self._on_auth_failed)

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> DeviceClient:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    def _load_keyring(self) -> DeviceKeyring:
        keyring = self._keyfile.load(self.config.passphrase)
        if keyring.jid != self.config.jid:
            raise ConnectionFailed(f"the key file belongs to {keyring.jid}, not {self.config.jid}")
        return keyring

    async def connect(self, within: float = 20.0) -> None:
        """Load the keys, log in, and be ready for messages.

        The session is then kept up: after a drop (a server restart, a network change)
        the device reconnects with capped exponential backoff, and the server delivers
        what it kept meanwhile.

        Raises:
            KeyFileError: The key file is missing, damaged, locked by another process,
                or needs another passphrase.
            ConnectionFailed: No session within ``within`` seconds, or a wrong password.
        """
        lock = self._keyfile.lock()
        lock.__enter__()
        self._lock_context = lock
        try:
            self.keyring = self._load_keyring()
            self._ready.clear()
            host = self.config.host or JID(self.config.jid).domain
            self.link = XmppLink(
                self.xmpp, host, self.config.port, name=f"session of {self.config.jid}"
            )
            self._link_stop = asyncio.Event()
            self._link_task = asyncio.create_task(self.link.run(self._link_stop))
            try:
                await asyncio.wait_for(self._ready.wait(), within)
            except TimeoutError as exc:
                raise ConnectionFailed(f"{self.config.jid} could not log in at {host}") from exc
            if self._auth_failed:
                raise ConnectionFailed(f"{self.config.jid}: the server refused the password")
        except BaseException:
            await self._stop_link()
            self._release()
            raise

    async def disconnect(self) -> None:
        for handle in self._deletions:
            handle.cancel()
        for task in (self._maintenance, self._catching_up):
            if task is not None:
                task.cancel()
        caught_up = self._catching_up is None or self._catching_up.done()
        self._maintenance = self._catching_up = None
        if caught_up and self.link is not None and self.link.connects:
            self._archive.caught_up(self._clock())
        await self._stop_link()
        self._release()

    async def _stop_link(self) -> None:
        if self._link_task is not None:
            self._link_stop.set()
            await self._link_task
            self._link_task = None

    def _release(self) -> None:
        if self._lock_context is not None:
            self._lock_context.__exit__(None, None, None)
            self._lock_context = None

    def _on_auth_failed(self, _event: object) -> None:
        # A wrong password stays wrong: no retries.
        self._auth_failed = True
        self._link_stop.set()
        self._ready.set()

    async def _on_session_start(self, _event: object) -> None:
        # Non-negative priority: servers deliver messages to the bare JID here too.
        self.xmpp.send_presence(ppriority=0)
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain())
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._catch_up())
        self._ready.set()

    async def _catch_up(self) -> None:
        """Ask for carbon copies, then take what another client took while this device
        was away from the archive. Servers without either still deliver to the device
        what reaches it directly."""
        started_ms = self._clock()
        try:
            await self.xmpp.plugin["xep_0280"].enable(timeout=10)
        except (IqError, IqTimeout) as error:
            log.warning("no carbon copies from %s: %s", self.config.jid, type(error).__name__)
        since_ms = self._archive.since_ms()
        if since_ms is not None:
            try:
                async for result in self.xmpp.plugin["xep_0313"].iterate(
                    start=datetime.fromtimestamp(since_ms / 1000, UTC), rsm={"max": 50}
                ):
                    sealed = archived_envelope(result, self.xmpp.boundjid)
                    if sealed is not None:
                        async with self._lock:
                            await self._open(sealed, from_archive=True)
            except (IqError, IqTimeout) as error:
                log.warning("no archive to catch up from: %s", type(error).__name__)
                return
        self._archive.caught_up(started_ms)

    def _archive_moves_on(self) -> None:
        """A live message: everything the server holds up to now has reached the device,
        unless a catch-up is still reading older ones. Written at most every 5 s."""
        if self._catching_up is not None and not self._catching_up.done():
            return
        now = self._clock()
        if now - self._archive_moved_ms >= 5_000:
            self._archive_moved_ms = now
            self._archive.caught_up(now)

    async def _on_carbon(self, carbon: Message) -> None:
        sealed = carried_envelope(carbon, self.xmpp.boundjid)
        if sealed is not None:
            async with self._lock:
                await self._open(sealed)

    # -- keys -------------------------------------------------------------------

    def _keys(self) -> DeviceKeyring:
        if self.keyring is None:
            raise ConnectionFailed("the device is not connected")
        return self.keyring

    def _save(self) -> None:
        self._keyfile.save(self._keys(), self.config.passphrase)

    async def publish(self, label: str = "") -> CommandReply:
        """Publish the signed prekey and every one-time prekey not yet published.

        Rotates the signed prekey first when it is older than the configured age.

        Raises:
            GatewayRefused: The gateway refused the bundle; the reason is in the message.
        """
        async with self._lock:
            keyring = self._keys()
            if self.signed_prekey_due():
                keyring.rotate_signed_prekey(self._clock())
                self._save()
                log.info("signed prekey rotated to %d", keyring.signed_prekey.key_id)
            return await self._publish_locked(label)

    def signed_prekey_due(self) -> bool:
        """Whether the signed prekey is older than the configured age."""
        age_ms = self._clock() - self._keys().signed_prekey.created_ms
        return age_ms > self.config.signed_prekey_max_age_s * 1000

    def needs_publishing(self) -> bool:
        """Keys wait to be published, or the signed prekey is due for rotation."""
        return self._keys().unpublished_count() > 0 or self.signed_prekey_due()

    async def _maintain(self) -> None:
        """Rotate the signed prekey on schedule while the device stays connected."""
        while True:
            await asyncio.sleep(self.config.maintenance_interval_s)
            if self.signed_prekey_due():
                try:
                    await self.publish()
                except (GatewayRefused, IqError, IqTimeout) as error:
                    log.error("could not rotate the signed prekey: %s", error)

    async def _publish_locked(self, label: str = "") -> CommandReply:
        keyring = self._keys()
        bundle = keyring.bundle(limit=MAX_PREKEYS_PER_BUNDLE)
        values: dict[str, str] = {"bundle": bundle.to_bytes().decode()}
        if label:
            values["label"] = label
        reply = await self.commands.run(self.config.gateway, PUBLISH, values)
        if reply.status != "completed":
            raise GatewayRefused(_refusal("publishing the device", reply))
        keyring.mark_published({p.key_id for p in bundle.one_time_prekeys})
        self._save()
        log.info(
            "device %d published with %d new one-time prekeys",
            keyring.device_id,
            len(bundle.one_time_prekeys),
        )
        return reply

    async def _on_prekeys_low(self, message: Message) -> None:
        if message["from"] != JID(self.config.gateway):
            return  # only the gateway may ask for keys
        low = message["cmaas_prekeys_low"]
        try:
            device_id, remaining, capacity = (
                int(low["device"]),
                int(low["remaining"]),
                int(low["capacity"]),
            )
        except ValueError:
            log.warning("ignored a malformed prekeys-low notice")
            return
        keyring = self._keys()
        if device_id != keyring.device_id:
            return
        room = min(capacity - remaining, MAX_PREKEYS_PER_BUNDLE)
        wanted = max(0, room - keyring.unpublished_count())
        async with self._lock:
            keyring.add_one_time_prekeys(wanted)
            self._save()
            try:
                await self._publish_locked()
            except (GatewayRefused, IqError, IqTimeout) as error:
                log.error("could not replenish one-time prekeys: %s", error)

    # -- gateway device commands -------------------------------------------------

    async def devices(self) -> list[dict[str, str]]:
        """This account's devices as the gateway lists them.

        Raises: GatewayRefused.
        """
        reply = await self.commands.run(self.config.gateway, LIST)
        if reply.status != "completed":
            raise GatewayRefused(_refusal("listing devices", reply))
        return reply.items or []

    async def revoke(self, device_id: int) -> CommandReply:
        """Revoke one of this account's devices (this one included).

        Raises: GatewayRefused: Unknown or already revoked device.
        """
        reply = await self.commands.run(self.config.gateway, REVOKE, {"device_id": str(device_id)})
        if reply.status != "completed" or reply.error_notes:
            raise GatewayRefused(_refusal(f"revoking device {device_id}", reply))
        return reply

    # -- messages ---------------------------------------------------------------

    async def messages(self) -> AsyncIterator[ReceivedMessage]:
        """Every message opened from now on, in order of arrival."""
        while True:
            yield await self._inbox.get()

    async def next_message(self) -> ReceivedMessage:
        """The next opened message; wrap in ``asyncio.timeout`` to bound the wait."""
        return await self._inbox.get()

    def mark_read(self, message_id: str) -> str:
        """Send the displayed marker for a message shown earlier; returns its app JID.

        Raises: KeyError: This device has shown no message with that id.
        """
        app_jid = self.seen.sender_of(message_id)
        if app_jid is None:
            raise KeyError(message_id)
        reply = self.xmpp.make_message(mto=app_jid, mtype="chat")
        reply["displayed"]["id"] = message_id
        reply["cmaas_device"]["id"] = str(self._keys().device_id)
        reply.send()
        return app_jid

    async def _on_envelope(self, message: Message) -> None:
        if message["type"] == "error":
            return
        async with self._lock:
            await self._open(message)

    def _reception(self) -> Inbox:
        return Inbox(
            self._keys(),
            pins=self.pins,
            seen=self.seen,
            gateway=self.config.gateway,
            save_keyring=self._save,
        )

    async def _open(self, message: Message, *, from_archive: bool = False) -> None:
        """Open one sealed message, whichever way it came. A message met before is
        acknowledged again when it comes live, passed over when it comes from the
        archive; a refusal is told once."""
        sender = str(message["from"].bare)
        message_id = message["id"]
        inbox = self._reception()
        outcome = inbox.receive(
            message["cmaas_envelope"]["json"],
            sender=sender,
            message_id=message_id,
            now_ms=self._clock(),
        )
        if isinstance(outcome, FetchFile):
            outcome = await self._fetch(inbox, outcome)
        if not from_archive:
            self._archive_moves_on()
        match outcome:
            case Duplicate() if from_archive:
                pass
            case Refused() if (sender, message_id) in self._refusals_told:
                pass
            case Duplicate():
                self._send_receipt(message)
            case Refused(refusal=refusal):
                if len(self._refusals_told) >= 10_000:
                    self._refusals_told.clear()
                self._refusals_told.add((sender, message_id))
                log.warning(
                    "refused message %r from %s: %s: %s",
                    message_id,
                    sender,
                    type(refusal.error).__name__,
                    refusal.error,
                )
                self.refused.put_nowait(refusal)
            case Accepted(message=received):
                shown = replace(received, app_name=await self._app_name(sender))
                self._inbox.put_nowait(shown)
                if shown.header.auto_delete_s:
                    self._schedule_deletion(sender, message_id, shown.header.auto_delete_s)
                self._send_receipt(message)
                if self.config.read_at_once:
                    self.mark_read(message_id)

    async def _fetch(self, inbox: Inbox, fetch: FetchFile) -> Accepted | Refused:
        try:
            saved = await fetch_file(
                fetch.content,
                self.config.state_dir / "files",
                fetch.message_id,
                require_tls=self.config.require_tls,
            )
        except (EnvelopeError, DeviceError) as error:
            return inbox.file_failed(fetch, error)
        return inbox.file_fetched(fetch, saved, now_ms=self._clock())

    def _schedule_deletion(self, app_jid: str, message_id: str, after_s: int) -> None:
        def delete() -> None:
            self._deletions.discard(handle)
            self.deleted.put_nowait(message_id)
            self._reception().deleted(app_jid, message_id)

        handle = asyncio.get_running_loop().call_later(after_s, delete)
        self._deletions.add(handle)

    def _send_receipt(self, message: Message) -> None:
        receipt = self.xmpp.make_message(mto=message["from"].bare, mtype="chat")
        receipt["receipt"] = message["id"]
        # Lets the gateway report delivery per device rather than per XMPP resource.
        receipt["cmaas_device"]["id"] = str(self._keys().device_id)
        receipt.send()

    async def _app_name(self, app_jid: str) -> str:
        if app_jid not in self._names:
            try:
                info = await self.xmpp.plugin["xep_0030"].get_info(jid=JID(app_jid), timeout=5)
                identities = info["disco_info"]["identities"]
                self._names[app_jid] = next(
                    (name for _cat, _type, _lang, name in identities if name), app_jid
                )
            except (IqError, IqTimeout):
                return app_jid
        return self._names[app_jid]


def _refusal(action: str, reply: CommandReply) -> str:
    if reply.error:
        return f"{action}: the gateway answered {reply.error}"
    notes = "; ".join(reply.error_notes) or f"status {reply.status}"
    return f"{action}: {notes}"
