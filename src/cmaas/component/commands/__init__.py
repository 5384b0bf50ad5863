"""The gateway's ad-hoc commands (SPEC section 3)."""

from cmaas.component.commands.admin import admin_commands

__all__ = ["admin_commands"]
