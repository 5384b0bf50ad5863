"""Device commands: a user publishes, lists and revokes the keys of their own devices.

The owner is always the requester's bare JID as the server stamped it; no form field
can name another account.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cmaas.component.adhoc.command import (
    Access,
    Command,
    CommandContext,
    Completed,
    FormStep,
    Step,
)
from cmaas.component.adhoc.forms import FieldSpec, FormSpec, Submission, render_result, render_table
from cmaas.envelope import MAX_PREKEYS_PER_BUNDLE, fingerprint
from cmaas.envelope.bundle import MAX_BUNDLE_BYTES
from cmaas.errors import InputRejected
from cmaas.keydirectory import KeyDirectory
from cmaas.keystore import DeviceNotFound, DeviceRecord, DeviceRevoked

__all__ = ["DeviceList", "DevicePublish", "DeviceRevoke", "device_commands"]

_BUNDLE = FieldSpec(
    "bundle",
    "Key bundle",
    required=True,
    desc=f"The device's bundle as JSON (docs/protocol.md), at most {MAX_PREKEYS_PER_BUNDLE}"
    " one-time prekeys. Made by the device, not typed by hand.",
    max_length=MAX_BUNDLE_BYTES,
)
_LABEL = FieldSpec("label", "Device name", desc="Helps you recognise it in the list, e.g. 'phone'")
_CHOOSE_DEVICE = FieldSpec("device_id", "Device", "list-single", required=True)


class _DeviceCommand(Command):
    access = Access.USER

    def __init__(self, directory: KeyDirectory) -> None:
        self.directory = directory


def _fingerprint_text(record: DeviceRecord) -> str:
    digest = fingerprint(record.identity_key)
    return " ".join(digest[i : i + 8] for i in range(0, 64, 8))


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


def _status(record: DeviceRecord) -> str:
    return f"revoked {_when(record.revoked_at)}" if record.revoked_at else "active"


def _device_rows(record: DeviceRecord) -> list[tuple[str, str, str]]:
    return [
        ("device_id", "Device id", str(record.device_id)),
        ("label", "Name", record.label or ""),
        ("fingerprint", "Identity key fingerprint", _fingerprint_text(record)),
        ("signed_prekey_id", "Signed prekey id", str(record.signed_prekey.key_id)),
        ("prekeys_left", "One-time prekeys in the pool", str(record.prekeys_left)),
        ("status", "Status", _status(record)),
    ]


class DevicePublish(_DeviceCommand):
    node = "urn:cmaas:cmd:device-publish"
    name = "Publish this device's keys"
    form = FormSpec(
        "Publish device keys",
        "Publish or refresh the public keys of the device you run this from.",
        (_BUNDLE, _LABEL),
    )

    async def start(self, context: CommandContext) -> Step:
        return FormStep(self.form, self.submit)

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        owner = context.requester_bare
        record = await self.directory.publish(owner, form.text("bundle"), form.text("label"))
        return Completed(
            notes=[("info", f"Device {record.device_id} published for {owner}")],
            payload=render_result("Device published", _device_rows(record)),
        )


class DeviceList(_DeviceCommand):
    node = "urn:cmaas:cmd:device-list"
    name = "List my devices"

    async def start(self, context: CommandContext) -> Step:
        records = await self.directory.devices(context.requester_bare)
        columns = [(var, label) for var, label, _ in _device_rows(records[0])] if records else []
        table = render_table(
            "Your devices",
            columns or [("device_id", "Device id"), ("fingerprint", "Identity key fingerprint")],
            [{var: value for var, _, value in _device_rows(r)} for r in records],
        )
        active = sum(r.revoked_at is None for r in records)
        return Completed(notes=[("info", f"{active} active device(s)")], payload=table)


class DeviceRevoke(_DeviceCommand):
    node = "urn:cmaas:cmd:device-revoke"
    name = "Revoke one of my devices"
    form = FormSpec(
        "Revoke a device",
        "A revoked device gets no key for any new message. This cannot be undone;"
        " a device set up again gets a new id.",
        (_CHOOSE_DEVICE,),
    )

    async def start(self, context: CommandContext) -> Step:
        owner = context.requester_bare
        records = [r for r in await self.directory.devices(owner) if r.revoked_at is None]
        if not records:
            return Completed(notes=[("info", "You have no active device.")])
        return FormStep(self.form.with_options("device_id", _choices(records)), self.submit)

    async def submit(self, context: CommandContext, submitted: Submission) -> Completed:
        """Raises: InputRejected: Not an active device of the requester's."""
        device_id = submitted.text("device_id")
        if not (device_id.isascii() and device_id.isdigit()):
            raise InputRejected({"device_id": "choose a device from the list"})
        try:
            record = await self.directory.revoke(context.requester_bare, int(device_id))
        except (DeviceNotFound, DeviceRevoked) as error:
            raise InputRejected({"device_id": str(error)}) from error
        return Completed(
            notes=[("info", f"Device {record.device_id} revoked")],
            payload=render_result("Device revoked", _device_rows(record)),
        )


def _choices(records: Sequence[DeviceRecord]) -> list[tuple[str, str]]:
    """One "name (id)" choice per device, with the start of its key fingerprint."""
    return [
        (
            str(r.device_id),
            f"{r.label or 'Unnamed device'} ({r.device_id}), key {_fingerprint_text(r)[:17]}",
        )
        for r in records
    ]


def device_commands(directory: KeyDirectory) -> list[Command]:
    return [DevicePublish(directory), DeviceList(directory), DeviceRevoke(directory)]
