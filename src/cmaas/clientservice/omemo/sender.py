"""The client service's legacy-OMEMO (``eu.siacs.conversations.axolotl``) device.

Each client-service instance is one OMEMO device of the app's JID. Its device id is chosen
by python-omemo on first start (avoiding the ids already on the app's device list) and
kept in the instance's own state directory, in ``omemo-state.json``; a second instance has
its own state directory, hence its own device id, identity key and sessions. Copying a
state directory would clone a device (two ratchets from one state): give each instance an
empty directory of its own.

Trust is pinned on first use, as for envelope devices: the first identity key seen for a
(recipient, device id) is pinned in ``omemo-pins.sqlite3``; a new device of a recipient that
already has pinned devices is reported through ``on_new_device``, and a device whose bundle
later presents another identity key is reported through ``on_key_change`` and never sealed
to. python-omemo takes a device's identity key only from a downloaded bundle, so the pin
check sits where bundles are downloaded; an existing session stays bound to the key it was
built with, which is the pinned one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import oldmemo
import oldmemo.etree
import xmlschema
from omemo import (
    Bundle,
    BundleDeletionFailed,
    BundleDownloadFailed,
    BundleNotFound,
    BundleUploadFailed,
    DeviceInformation,
    DeviceList,
    DeviceListDownloadFailed,
    DeviceListUploadFailed,
    EncryptionError,
    Message,
    NoEligibleDevices,
    OMEMOException,
    SessionManager,
    TrustLevel,
    UnknownTrustLevel,
)

from cmaas.clientservice.omemo.errors import (
    NoOmemoDevices,
    OmemoDecryptFailed,
    OmemoError,
    OmemoKeyChanged,
    OmemoMalformed,
    OmemoStateError,
    OmemoTransportError,
)
from cmaas.clientservice.omemo.storage import SqliteStorage
from cmaas.clientservice.omemo.transport import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
    OmemoDirectory,
)
from cmaas.clientservice.state import DevicePins, KeyChange, NewDevice
from cmaas.envelope import fingerprint
from cmaas.file_lock import lock_exclusively
from cmaas.private_files import ensure_private_dir
from cmaas.wire import WireError
from cmaas.wire.omemo_message import parse_safe_xml

__all__ = ["Decrypted", "Encrypted", "NewDevice", "OmemoSender", "SkippedDevice"]

log = logging.getLogger(__name__)

NAMESPACE = oldmemo.oldmemo.NAMESPACE
STATE_FILE = "omemo-state.sqlite3"
LEGACY_STATE_FILE = "omemo-state.json"
PINS_FILE = "omemo-pins.sqlite3"
LEGACY_PINS_FILE = "omemo-pins.json"  # kept by earlier versions; imported once
LOCK_FILE = "omemo.lock"

# python-omemo logs plaintexts and key material at DEBUG; this service never logs secrets.
_core_log = logging.getLogger(SessionManager.LOG_TAG)
_core_log.setLevel(max(_core_log.level, logging.INFO))

_PINNED = "pinned"  # sealed to
_CHANGED = "changed"  # another key than the pinned one: never sealed to
_UNDECIDED = "undecided"  # first seen: decided (pinned) before the first seal
_MAX_XML = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SkippedDevice:
    """A recipient device the message was not sealed to, and why."""

    device_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Encrypted:
    """Attributes:
    xml: The ``<encrypted xmlns='eu.siacs.conversations.axolotl'>`` element as XML text.
    device_ids: The recipient's devices it is sealed to.
    skipped: The recipient's devices it is not sealed to.
    """

    xml: str
    device_ids: frozenset[int]
    skipped: tuple[SkippedDevice, ...]


@dataclass(frozen=True, slots=True)
class Decrypted:
    """Attributes:
    plaintext: The body, or None for a key-transport element (no payload).
    jid: The sender's bare JID.
    device_id: The sender's device.
    """

    plaintext: bytes | None
    jid: str
    device_id: int


def parse_xml(text: str) -> ET.Element:
    """Parse network XML, refusing a DOCTYPE (and with it every entity trick).

    Raises: OmemoMalformed.
    """
    try:
        return parse_safe_xml(text, _MAX_XML)
    except WireError as error:
        raise OmemoMalformed(str(error)) from error


class _KeyChangedBundle(BundleDownloadFailed):
    """The bundle presents another identity key than the pinned one (not sealed to)."""


class _Manager(SessionManager):
    """python-omemo's session manager with its I/O bound to one instance's directory and
    pins. python-omemo builds it with ``cls()`` and calls the I/O methods before ``create``
    returns, so the bindings are class attributes of a subclass made per instance."""

    directory: OmemoDirectory
    pins: DevicePins
    own_jid: str
    report_change: Callable[[KeyChange], None] | None
    report_new: Callable[[NewDevice], None] | None
    changed: dict[str, set[int]]

    async def _upload_bundle(self, bundle: Bundle) -> None:  # type: ignore[override]
        if not isinstance(bundle, oldmemo.oldmemo.BundleImpl):
            raise BundleUploadFailed(f"not a legacy-OMEMO bundle: {bundle.namespace}")
        xml = ET.tostring(oldmemo.etree.serialize_bundle(bundle), encoding="unicode")
        try:
            await self.directory.publish_bundle(BundleItem(self.own_jid, bundle.device_id, xml))
        except OmemoTransportError as error:
            raise BundleUploadFailed(str(error)) from error

    async def _download_bundle(  # type: ignore[override]
        self, namespace: str, bare_jid: str, device_id: int
    ) -> Bundle:
        try:
            item = await self.directory.fetch_bundle(bare_jid, device_id)
        except OmemoTransportError as error:
            raise BundleDownloadFailed(str(error)) from error
        if item is None:
            raise BundleNotFound(f"{bare_jid} publishes no bundle for device {device_id}")
        try:
            bundle = oldmemo.etree.parse_bundle(parse_xml(item.xml), bare_jid, device_id)
        except (OmemoMalformed, ValueError, xmlschema.XMLSchemaValidationError) as error:
            raise BundleDownloadFailed(f"malformed bundle of {bare_jid}/{device_id}") from error
        if self.pins.changed(bare_jid, device_id, bundle.identity_key):
            log.warning(
                "OMEMO device %d of %s changed its identity key; not sealing to it",
                device_id,
                bare_jid,
            )
            self.changed.setdefault(bare_jid, set()).add(device_id)
            if self.report_change is not None:
                self.report_change(KeyChange(bare_jid, device_id))
            raise _KeyChangedBundle(f"device {device_id} of {bare_jid} changed its identity key")
        return bundle

    async def _delete_bundle(self, namespace: str, device_id: int) -> None:  # type: ignore[override]
        try:
            await self.directory.retract_bundle(self.own_jid, device_id)
        except OmemoTransportError as error:
            raise BundleDeletionFailed(str(error)) from error

    async def _upload_device_list(  # type: ignore[override]
        self, namespace: str, device_list: DeviceList
    ) -> None:
        xml = ET.tostring(oldmemo.etree.serialize_device_list(device_list), encoding="unicode")
        try:
            await self.directory.publish_device_list(DeviceListItem(self.own_jid, xml))
        except OmemoTransportError as error:
            raise DeviceListUploadFailed(str(error)) from error

    async def _download_device_list(  # type: ignore[override]
        self, namespace: str, bare_jid: str
    ) -> DeviceList:
        try:
            item = await self.directory.fetch_device_list(bare_jid)
        except OmemoTransportError as error:
            raise DeviceListDownloadFailed(str(error)) from error
        if item is None:
            return {}
        try:
            return oldmemo.etree.parse_device_list(parse_xml(item.xml))
        except (OmemoMalformed, xmlschema.XMLSchemaValidationError) as error:
            raise DeviceListDownloadFailed(f"malformed device list of {bare_jid}") from error

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        levels = {
            _PINNED: TrustLevel.TRUSTED,
            _CHANGED: TrustLevel.DISTRUSTED,
            _UNDECIDED: TrustLevel.UNDECIDED,
        }
        try:
            return levels[device.trust_level_name]
        except KeyError:
            raise UnknownTrustLevel(device.trust_level_name) from None

    async def _make_trust_decision(
        self, undecided: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        """Pin each first-seen key; refuse and report one that differs from its pin.

        Raises: OmemoStateError: The pin file cannot be written.
        """
        for device in sorted(undecided, key=lambda d: (d.bare_jid, d.device_id)):
            jid, device_id, key = device.bare_jid, device.device_id, device.identity_key
            if self.pins.changed(jid, device_id, key):
                # Reached when the OMEMO state was reset but the pins kept: the bundle check
                # refuses first; this keeps the refusal if a key arrives another way.
                self.changed.setdefault(jid, set()).add(device_id)
                if self.report_change is not None:
                    self.report_change(KeyChange(jid, device_id))
                await self.set_trust(jid, key, _CHANGED)
                continue
            if jid != self.own_jid and self.pins.knows(jid) and self.report_new is not None:
                self.report_new(NewDevice(jid, device_id, fingerprint(key)))
            self.pins.pin(jid, {device_id: key})
            await self.set_trust(jid, key, _PINNED)

    async def _send_message(self, message: Message, bare_jid: str) -> None:  # type: ignore[override]
        xml = ET.tostring(oldmemo.etree.serialize_message(message), encoding="unicode")
        try:
            await self.directory.send_key_transport(KeyTransport(bare_jid, xml))
        except OmemoTransportError as error:
            # python-omemo sends this after storing the advanced ratchet of a message it
            # just decrypted; raising would lose that message's plaintext for good. A
            # missed key transport only leaves the peer sending prekey messages, which
            # still decrypt.
            log.warning("could not send an OMEMO key transport to %s: %s", bare_jid, error)


class OmemoSender:
    """This instance's legacy-OMEMO device: seals to a recipient's OMEMO devices and opens
    what they send back. Use ``async with OmemoSender(...)``; calls are serialised, since
    python-omemo loads, advances and stores a ratchet across awaits.

    Args:
        state_dir: The instance's own state directory (see the module docstring).
        own_jid: The app's bare JID, whose device this instance is.
        directory: The relay to published device lists and bundles.
        on_key_change: Told of every device refused for a changed identity key.
        on_new_device: Told of every new device of a recipient with pinned devices.
    """

    def __init__(
        self,
        state_dir: Path,
        own_jid: str,
        directory: OmemoDirectory,
        *,
        on_key_change: Callable[[KeyChange], None] | None = None,
        on_new_device: Callable[[NewDevice], None] | None = None,
    ) -> None:
        self._state_dir = state_dir
        self._own_jid = own_jid
        self._directory = directory
        self._on_key_change = on_key_change
        self._on_new_device = on_new_device
        self._manager: _Manager | None = None
        self._backend: oldmemo.Oldmemo | None = None
        self._storage: SqliteStorage | None = None
        self._pins: DevicePins | None = None
        self._listed = False
        self._lock = asyncio.Lock()
        self._held: int | None = None

    async def __aenter__(self) -> OmemoSender:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load this device, or create it and publish its bundle, and check that the
        app's device list names it (a known device starts even if that check cannot
        reach the gateway; the first seal checks again).

        Raises:
            OmemoStateError: The state or pin file is unusable, or another process holds
                this device.
            OmemoError: Publishing a new device's bundle failed.
        """
        self._hold_device()
        try:
            await self._start()
        except BaseException:
            self._release_device()
            raise

    async def _start(self) -> None:
        storage = SqliteStorage(
            self._state_dir / STATE_FILE, legacy=self._state_dir / LEGACY_STATE_FILE
        )
        self._storage = storage
        pins = DevicePins(self._state_dir / PINS_FILE, legacy=self._state_dir / LEGACY_PINS_FILE)
        self._pins = pins

        class Bound(_Manager):
            pass

        Bound.directory = self._directory
        Bound.pins = pins
        Bound.own_jid = self._own_jid
        Bound.report_change = self._on_key_change
        Bound.report_new = self._on_new_device
        Bound.changed = {}
        backend = oldmemo.Oldmemo(storage)
        try:
            async with storage.operation():
                manager = await Bound.create([backend], storage, self._own_jid, None, _UNDECIDED)
                # No archive to catch up with: leave python-omemo's history-sync mode at
                # once, or used prekeys would only be hidden and handshakes only queued.
                await manager.after_history_sync()
        except OMEMOException as error:
            storage.close()
            pins.close()
            raise _wrap(error) from error
        except BaseException:
            storage.close()
            pins.close()
            raise
        self._manager, self._backend = manager, backend
        try:
            await self.ensure_published()
        except OmemoTransportError as error:
            # A known device starts without the gateway; the first seal checks again.
            log.info("could not check the app's OMEMO device list: %s", error)
        except BaseException:
            await self.close()
            raise

    async def ensure_published(self) -> None:
        """Publish this device's bundle again when the app's device list lacks it (the
        first publication failed, or an operator retired the device).

        Raises: OmemoError: The list could not be read, or the bundle not published.
        """
        manager, backend = self._started(), self._backend
        assert backend is not None
        device_id, _ = await self.own_device()
        item = await self._directory.fetch_device_list(self._own_jid)
        try:
            listed = oldmemo.etree.parse_device_list(parse_xml(item.xml)) if item else {}
        except xmlschema.XMLSchemaValidationError as error:
            raise OmemoMalformed(f"the app's own device list: {error}") from error
        if device_id not in listed:
            log.info("OMEMO device %d is not on the app's device list; publishing it", device_id)
            try:
                await manager._upload_bundle(await backend.get_bundle(self._own_jid, device_id))
            except OMEMOException as error:
                raise _wrap(error) from error
        self._listed = True

    def _hold_device(self) -> None:
        """Take this state directory's OMEMO device for this process alone: two processes
        advancing the same ratchets would break every session they share.

        Raises: OmemoStateError: Another process holds it.
        """
        ensure_private_dir(self._state_dir, error=OmemoStateError)
        descriptor = os.open(self._state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock_exclusively(descriptor)
        except OSError:
            os.close(descriptor)
            raise OmemoStateError(
                f"another process uses the OMEMO device of {self._state_dir}: stop it, or give"
                " this one a state directory of its own"
            ) from None
        self._held = descriptor

    def _release_device(self) -> None:
        if self._held is not None:
            os.close(self._held)  # closing drops the lock
            self._held = None

    async def close(self) -> None:
        """Stop python-omemo's signed-prekey rotation task and let go of the device."""
        if self._manager is not None:
            await self._manager.shutdown()
            self._manager = None
        if self._storage is not None:
            self._storage.close()
            self._storage = None
        if self._pins is not None:
            self._pins.close()
            self._pins = None
        self._release_device()

    async def own_device(self) -> tuple[int, bytes]:
        """This device's id and identity key (Ed25519)."""
        own, _ = await self._started().get_own_device_information()
        return own.device_id, own.identity_key

    async def encrypt(self, recipient: str, plaintext: bytes) -> Encrypted:
        """Seal ``plaintext`` (a message body) to every trusted device of ``recipient``,
        after refreshing its device list.

        Raises:
            OmemoKeyChanged: Every device that could be sealed to changed its identity key.
            NoOmemoDevices: The recipient has no device that can be sealed to.
            OmemoStateError: The state or pin file cannot be written.
            OmemoError: The device list could not be fetched, or python-omemo failed.
        """
        manager = self._started()
        if not self._listed:
            await self.ensure_published()
        async with self._lock, self._operation():
            Bound = type(manager)
            Bound.changed = {}
            try:
                await manager.refresh_device_lists(recipient)
                messages, errors = await manager.encrypt(
                    frozenset({recipient}), {NAMESPACE: plaintext}
                )
            except NoEligibleDevices as error:
                changed = sorted(Bound.changed.get(recipient, ()))
                if changed:
                    raise OmemoKeyChanged(recipient, changed) from error
                raise NoOmemoDevices(recipient, str(error)) from error
            except OMEMOException as error:
                raise _wrap(error) from error
        message = next(iter(messages))
        covered = frozenset(key.device_id for key, _ in message.keys if key.bare_jid == recipient)
        skipped = tuple(
            SkippedDevice(e.device_id, _reason(e))
            for e in sorted(errors, key=lambda e: e.device_id)
            if e.bare_jid == recipient
        )
        xml = ET.tostring(oldmemo.etree.serialize_message(message), encoding="unicode")
        return Encrypted(xml, covered, skipped)

    async def decrypt(self, sender: str, xml: str) -> Decrypted:
        """Open an ``<encrypted/>`` element from ``sender``; this advances the ratchet, and
        may answer with a key-transport element through the directory.

        Raises:
            OmemoMalformed: ``xml`` is not a legacy-OMEMO ``<encrypted/>`` element.
            OmemoDecryptFailed: It is not for this device, or cannot be decrypted.
            OmemoStateError: The state file cannot be written.
        """
        manager = self._started()
        element = parse_xml(xml)
        async with self._lock, self._operation():
            try:
                message = await oldmemo.etree.parse_message(element, sender, self._own_jid, manager)
            except (ValueError, xmlschema.XMLSchemaValidationError) as error:
                raise OmemoMalformed(f"not a legacy-OMEMO message from {sender}") from error
            except OMEMOException as error:
                raise OmemoDecryptFailed(f"{type(error).__name__}: {error}") from error
            try:
                plaintext, device, _ = await manager.decrypt(message)
            except OMEMOException as error:
                raise OmemoDecryptFailed(f"{type(error).__name__}: {error}") from error
        return Decrypted(plaintext, device.bare_jid, device.device_id)

    def _operation(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self._storage is None:
            raise OmemoError("the OMEMO sender is not started; use `async with`")
        return self._storage.operation()

    def _started(self) -> _Manager:
        if self._manager is None:
            raise OmemoError("the OMEMO sender is not started; use `async with`")
        return self._manager


def _reason(error: EncryptionError) -> str:
    if isinstance(error.exception, _KeyChangedBundle):
        return "identity key changed"
    return f"{type(error.exception).__name__}: {error.exception}"


def _wrap(error: Any) -> OmemoError:
    if isinstance(error, OmemoError):
        return error
    cause = error.__cause__
    if isinstance(cause, OmemoError):
        return cause
    return OmemoError(f"{type(error).__name__}: {error}")
