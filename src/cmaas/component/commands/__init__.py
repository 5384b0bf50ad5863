"""The gateway's ad-hoc commands (``docs/operators.md`` lists them)."""

from cmaas.component.commands.admin import admin_commands
from cmaas.component.commands.devices import device_commands
from cmaas.component.commands.messaging import messaging_commands

__all__ = ["admin_commands", "device_commands", "messaging_commands"]
