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
    "JsonValue",
    "NextForm",
    "Note",
    "State",
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


JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]

State = Mapping[str, JsonValue]
"""What a command keeps between its steps: small, and stored as JSON with the session."""


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who runs this step of the command, as stamped by the server on the stanza, when,
    and the state the command kept from its earlier steps."""

    requester: JID
    now: float
    state: State = field(default_factory=dict)

    @property
    def requester_bare(self) -> str:
        return str(self.requester.bare)


@dataclass(frozen=True, slots=True)
class FormStep:
    """Show a form; ``then`` receives what comes back.

    ``then`` is a method of the command: it may raise
    :class:`~cmaas.errors.InputRejected`, and the engine then shows this form again,
    with the submitted values and a note per problem, the notes also leading the form's
    instructions.

    A session survives between steps only as the name of the command's method that
    showed the form (``start`` or a :class:`NextForm`'s ``show``) and its state: the
    engine, on whichever gateway instance the submission reaches, shows the form again
    from those to read the submission and calls that form's ``then``. So a form must
    depend on nothing but the context.
    """

    form: FormSpec
    then: Callable[[CommandContext, Submission], Awaitable[Completed | NextForm]]
    values: Mapping[str, FieldValue] = field(default_factory=dict)
    notes: Sequence[Note] = ()
    final: bool = True
    """Whether submitting this form completes the command (``complete``) or leads
    to another form (``next``)."""


@dataclass(frozen=True, slots=True)
class NextForm:
    """Go on to another form: the command's method ``show``, run with ``state``."""

    show: Callable[[CommandContext], Awaitable[Step]]
    state: State = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completed:
    notes: Sequence[Note] = ()
    payload: Form | None = None


Step = FormStep | Completed
"""What a command shows: a form to fill in, or the end."""


class Command(ABC):
    node: ClassVar[str]
    name: ClassVar[str]
    access: ClassVar[Access]

    @abstractmethod
    async def start(self, context: CommandContext) -> Step:
        """The first step, for the ``execute`` that opens a session (its state is
        empty)."""
