"""What an ad-hoc command is: a node, a name, who may run it, and its steps.

Commands are small declarative classes. They call domain services and describe
forms; the engine does the protocol, sessions and access checks.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form

from cmaas.component.adhoc.forms import FieldValue, FormSpec, Note, Submission

__all__ = [
    "Access",
    "Command",
    "CommandContext",
    "Completed",
    "FormStep",
    "Note",
    "Step",
]


class Access(enum.Enum):
    """Who may run a command; checked by the engine on every step of a session."""

    ADMIN = "admin"
    """Bare JIDs listed in ``CMAAS_ADMINS``."""
    USER = "user"
    """Any JID of a domain the gateway serves."""
    APP = "app"
    """JIDs bound to an app account (bots)."""


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who is running the command, as stamped by the server on the stanza."""

    requester: JID
    now: float

    @property
    def requester_bare(self) -> str:
        return str(self.requester.bare)


@dataclass(frozen=True, slots=True)
class FormStep:
    """Show a form; ``on_submit`` receives what comes back and returns the next step.

    ``on_submit`` may raise :class:`~cmaas.errors.InputRejected`: the engine then shows
    this form again, with the submitted values and a note per problem, the notes also
    leading the form's instructions.
    """

    form: FormSpec
    on_submit: Callable[[Submission], Awaitable[Step]]
    values: Mapping[str, FieldValue] = field(default_factory=dict)
    notes: Sequence[Note] = ()
    final: bool = True
    """Whether submitting this form completes the command (``complete``) or leads
    to another form (``next``)."""


@dataclass(frozen=True, slots=True)
class Completed:
    notes: Sequence[Note] = ()
    payload: Form | None = None


Step = FormStep | Completed


class Command(ABC):
    node: ClassVar[str]
    name: ClassVar[str]
    access: ClassVar[Access]

    @abstractmethod
    async def start(self, context: CommandContext) -> Step:
        """The first step, for the ``execute`` that opens a session."""
