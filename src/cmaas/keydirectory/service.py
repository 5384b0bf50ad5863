"""The gateway's directory of device keys: publish, list, revoke and look up.

Every bundle is verified before it is stored (points on the curve, prekey signatures
by the identity key, the owner's JID in every signature, sizes and pool limits). The
owner is always the authenticated sender, never something the bundle claims.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cmaas.envelope import DeviceBundle, EnvelopeError, Prekey
from cmaas.errors import InputRejected
from cmaas.keystore import (
    DeviceKeys,
    DevicePublication,
    DeviceRecord,
    DeviceRevoked,
    IdentityKeyMismatch,
    Keystore,
    PrekeyAllowance,
    PrekeyIdConflict,
    PrekeyPoolFull,
    SignedPrekeyRollback,
    StoredPrekey,
    TooManyDevices,
)

__all__ = ["DeviceLimits", "KeyDirectory", "LowPoolNotifier"]

log = logging.getLogger(__name__)

LowPoolNotifier = Callable[[DeviceKeys, "DeviceLimits"], Awaitable[None]]
"""Tells a device its one-time prekey pool runs low (the gateway sends a stanza)."""

_MAX_LABEL = 64


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """Attributes:
    max_devices: Active devices per account.
    max_prekeys: One-time prekeys stored per device.
    low_water: Below this many, the device is told to publish more.
    prekeys_per_app: One-time prekeys one app may take from one device per
        ``prekey_window_s``; past that its lookups carry the signed prekey alone.
    prekey_window_s: The window of ``prekeys_per_app``, from the first hand-out.
    revoked_kept: Revoked devices remembered per account; older ones are forgotten.
    """

    max_devices: int = 16
    max_prekeys: int = 100
    low_water: int = 10
    prekeys_per_app: int = 10
    prekey_window_s: int = 3600
    revoked_kept: int = 32


class KeyDirectory:
    """Device keys of the users of the served domains."""

    def __init__(
        self,
        keystore: Keystore,
        notify_low: LowPoolNotifier | None = None,
        limits: DeviceLimits | None = None,
    ) -> None:
        self._devices = keystore.devices
        self._notify_low = notify_low
        self.limits = limits or DeviceLimits()

    async def publish(self, owner: str, bundle_json: str, label: str = "") -> DeviceRecord:
        """Publish a new device or refresh one (new signed prekey, more one-time prekeys).

        Args:
            owner: The sender's bare JID as the server stamped it.

        Raises:
            InputRejected: The bundle is malformed, for another JID, badly signed, or
                refused by the store (revoked id, other identity key, too many
                devices, pool full, key id reused, an older signed prekey), under the
                field ``bundle``.
        """
        label = label.strip()
        if len(label) > _MAX_LABEL:
            raise InputRejected({"label": f"at most {_MAX_LABEL} characters"})
        try:
            bundle = DeviceBundle.from_bytes(bundle_json, expected_jid=owner)
        except EnvelopeError as error:
            raise InputRejected({"bundle": f"{type(error).__name__}: {error}"}) from error
        publication = DevicePublication(
            jid=owner,
            device_id=bundle.device_id,
            identity_key=bundle.identity_key,
            suites=bundle.suites,
            signed_prekey=_stored(bundle.signed_prekey),
            one_time_prekeys=tuple(_stored(p) for p in bundle.one_time_prekeys),
            label=label or None,
        )
        try:
            record = await self._devices.publish(
                publication,
                max_devices=self.limits.max_devices,
                max_prekeys=self.limits.max_prekeys,
            )
        except (
            DeviceRevoked,
            IdentityKeyMismatch,
            TooManyDevices,
            PrekeyPoolFull,
            PrekeyIdConflict,
            SignedPrekeyRollback,
        ) as error:
            raise InputRejected({"bundle": f"{type(error).__name__}: {error}"}) from error
        log.info(
            "device %d of %s published: %d one-time prekeys added, %d in the pool",
            record.device_id,
            owner,
            len(publication.one_time_prekeys),
            record.prekeys_left,
        )
        return record

    async def devices(self, owner: str) -> Sequence[DeviceRecord]:
        return await self._devices.list(owner)

    async def revoke(self, owner: str, device_id: int) -> DeviceRecord:
        """Revoke one of the owner's devices: senders get its keys no more.

        Raises:
            DeviceNotFound: The owner has no such device.
            DeviceRevoked: It is already revoked.
        """
        record = await self._devices.revoke(owner, device_id, keep_revoked=self.limits.revoked_kept)
        log.info("device %d of %s revoked", device_id, owner)
        return record

    async def lookup(self, jid: str, *, for_app: str | None = None) -> list[DeviceBundle]:
        """Bundles for a sender: each active device with one one-time prekey taken
        from its pool (never handed out twice), or none when the pool is empty.

        ``for_app`` takes at most :attr:`DeviceLimits.prekeys_per_app` one-time prekeys
        of a device per window; past that, its bundles carry the signed prekey alone
        (the gateway's own lookups, with ``None``, are not counted). Devices whose pool
        runs low are notified once per low episode.
        """
        allowance = (
            None
            if for_app is None
            else PrekeyAllowance(for_app, self.limits.prekeys_per_app, self.limits.prekey_window_s)
        )
        take = await self._devices.take(jid, low_water=self.limits.low_water, allowance=allowance)
        for device in take.running_low:
            log.info(
                "device %d of %s has %d one-time prekeys left; asking for more",
                device.device_id,
                jid,
                device.prekeys_left,
            )
            if self._notify_low is not None:
                await self._notify_low(device, self.limits)
        return [_bundle(device) for device in take.devices]


def _stored(prekey: Prekey) -> StoredPrekey:
    return StoredPrekey(prekey.key_id, prekey.public_key, prekey.signature)


def _prekey(stored: StoredPrekey) -> Prekey:
    return Prekey(stored.key_id, stored.public_key, stored.signature)


def _bundle(device: DeviceKeys) -> DeviceBundle:
    # Stored keys were verified on publication; the sender verifies again anyway.
    return DeviceBundle(
        jid=device.jid,
        device_id=device.device_id,
        identity_key=device.identity_key,
        suites=device.suites,
        signed_prekey=_prekey(device.signed_prekey),
        one_time_prekeys=(_prekey(device.one_time_prekey),) if device.one_time_prekey else (),
    )
