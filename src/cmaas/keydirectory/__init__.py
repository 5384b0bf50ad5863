"""The gateway's directory of device public keys (publish, list, revoke, look up)."""

from cmaas.keydirectory.service import DeviceLimits, KeyDirectory, LowPoolNotifier

__all__ = ["DeviceLimits", "KeyDirectory", "LowPoolNotifier"]
