"""The XEP-0050 protocol: sessions, steps, notes and refusals.

slixmpp's own ``xep_0050`` plugin is not used for serving commands: it hands
continuation steps only the form, not the stanza, so it cannot check who continues
a session, and its timeout sends a client-side ``cancel`` iq. This engine binds each
session to the full JID that opened it, re-checks access on every step, and bounds
the sessions: per account, per class of command (so that no class can crowd out
another, the admins' least of all), idle time and whole lifetime.

Sessions live in the keystore, not in this process: with several gateway instances on
one component domain the server hands each stanza to any of them, so any instance
must be able to take a session's next step. A session is stored as its command's node,
the name of the command's method that shows its current form, and the command's state;
the form is shown again from those to read each submission.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from slixmpp import JID, Iq
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0050.stanza import Command as CommandStanza
from slixmpp.xmlstream import register_stanza_plugin

from cmaas.component.adhoc.access import AccessPolicy
from cmaas.component.adhoc.command import (
    Access,
    Command,
    CommandContext,
    Completed,
    FormStep,
    NextForm,
    State,
    Step,
)
from cmaas.component.adhoc.errors import (
    AdhocError,
    BadAction,
    BadPayload,
    BadSessionId,
    CommandNotFound,
    Forbidden,
    SessionExpired,
    TooManySessions,
    maps_adhoc_errors,
)
from cmaas.component.adhoc.forms import (
    FieldValue,
    Submission,
    read_submission,
    render_form,
    with_notes,
)
from cmaas.errors import InputRejected
from cmaas.keystore import (
    AdhocSession,
    AdhocSessionBounds,
    AdhocSessionLimit,
    AdhocSessionRefusal,
    AdhocSessionStore,
)

__all__ = ["MAX_SESSION_ID_LENGTH", "MAX_STATE_BYTES", "AdhocEngine", "SessionLimits"]

log = logging.getLogger(__name__)

_CONTINUING_ACTIONS = ("execute", "next", "complete", "cancel")
_FIRST_STEP = "start"
MAX_SESSION_ID_LENGTH = 64
"""Longer session ids are none of ours (ours have 24 characters)."""
MAX_STATE_BYTES = 4096
"""A command's state is a few ids; anything bigger is a command's mistake."""

ShowStep = Callable[[CommandContext], Awaitable[Step]]


def _per_class_defaults() -> dict[Access, int]:
    return {Access.ADMIN: 100, Access.USER: 2000, Access.APP: 1000}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds on open sessions (those waiting for a form).

    Attributes:
        per_account: Open sessions of one bare JID, across its resources.
        per_class: Open sessions of the commands of each access class, all
            requesters together; a class missing here gets none.
        lifetime_s: A session ends this long after it opened, however busy it is.
    """

    per_account: int = 4
    per_class: Mapping[Access, int] = field(default_factory=_per_class_defaults)
    lifetime_s: float = 900.0


@dataclass(frozen=True, slots=True)
class _Shown:
    """A step's outcome: what to show, and where the session then stands."""

    step: str
    state: State
    shown: Step


def _refused(reason: AdhocSessionRefusal) -> AdhocError:
    """The error for a session that cannot take a step. One of another JID is refused
    as it always was, without telling whose it is."""
    if reason is AdhocSessionRefusal.FOREIGN:
        return Forbidden("this session belongs to another JID")
    if reason is AdhocSessionRefusal.EXPIRED:
        return SessionExpired("the session timed out; run the command again")
    if reason is AdhocSessionRefusal.OTHER_NODE:
        return BadSessionId("the session belongs to another command")
    return BadSessionId("unknown or finished session")


class AdhocEngine:
    """Serves a set of commands on one JID (the component domain), with its sessions in
    ``sessions``, which every instance serving the domain shares.

    Args:
        clock: Unix seconds, for the sessions' bounds (instances compare each other's).
        wall_clock: Unix seconds, for the commands.
    """

    def __init__(
        self,
        commands: Iterable[Command],
        access: AccessPolicy,
        sessions: AdhocSessionStore,
        session_timeout: float,
        clock: Callable[[], float] = time.time,
        wall_clock: Callable[[], float] = time.time,
        limits: SessionLimits | None = None,
    ) -> None:
        self.commands: dict[str, Command] = {c.node: c for c in commands}
        self._access = access
        self._sessions = sessions
        self._timeout = session_timeout
        self._limits = limits or SessionLimits()
        self._clock = clock
        self._wall_clock = wall_clock
        register_stanza_plugin(Iq, CommandStanza)
        register_stanza_plugin(CommandStanza, Form)

    async def session_count(self) -> int:
        """Sessions stored, by every instance."""
        return await self._sessions.count()

    async def visible_commands(self, requester: JID) -> list[Command]:
        """The commands ``requester`` may run, for disco#items."""
        return [c for c in self.commands.values() if await self._access.allows(c.access, requester)]

    async def forget(self, owner: JID) -> int:
        """End the sessions of a JID that went offline: a full JID's own, or every
        session of the account for a bare JID.

        Returns: how many were ended.
        """
        return await self._sessions.forget(str(owner))

    async def purge_expired(self) -> int:
        """Delete the sessions past their idle or lifetime bound (housekeeping).

        Returns: how many were deleted.
        """
        return await self._sessions.purge(self._now_ms(), self._bounds())

    @maps_adhoc_errors
    async def handle(self, iq: Iq) -> None:
        """Answer one ``<command/>`` iq of type ``set``.

        Raises:
            XMPPError: Mapped from the engine's refusals by ``maps_adhoc_errors``.
        """
        if iq["to"].user or iq["to"].resource:
            # Commands live on the component domain only, never on app JIDs.
            raise CommandNotFound(f"{iq['to']} offers no commands")
        request = iq["command"]
        action = request["action"] or "execute"
        session_id = request["sessionid"]
        if not session_id:
            if action != "execute":
                raise BadAction(f"a new session starts with 'execute', not {action!r}")
            await self._start(iq)
        else:
            await self._continue(iq, session_id, action)

    async def _start(self, iq: Iq) -> None:
        node = iq["command"]["node"]
        command = self.commands.get(node)
        if command is None:
            raise CommandNotFound(f"no command {node!r}")
        await self._require_access(command, iq["from"])
        step = await command.start(CommandContext(iq["from"], self._wall_clock()))
        session_id = secrets.token_urlsafe(18)
        if isinstance(step, FormStep):
            # A one-step command needs no room. The bounds are counted in the
            # transaction that stores the session, so concurrent starts cannot all pass.
            session = AdhocSession(str(iq["from"]), node, _FIRST_STEP, _dump_state({}))
            try:
                await self._sessions.open(
                    session_id, session, command.access.value, self._now_ms(), self._bounds(command)
                )
            except AdhocSessionLimit as exc:
                if exc.per_account:
                    raise TooManySessions(
                        f"{iq['from'].bare} has {exc.open_sessions} open command sessions;"
                        " finish or cancel one"
                    ) from exc
                raise TooManySessions("too many open command sessions; try again later") from exc
        self._reply(iq, command, session_id, step)

    async def _continue(self, iq: Iq, session_id: str, action: str) -> None:
        if len(session_id) > MAX_SESSION_ID_LENGTH:
            raise _refused(AdhocSessionRefusal.UNKNOWN)
        claimed = await self._sessions.claim(
            session_id, str(iq["from"]), iq["command"]["node"], self._now_ms(), self._bounds()
        )
        if isinstance(claimed, AdhocSessionRefusal):
            raise _refused(claimed)
        command = self.commands.get(claimed.node)
        if command is None:  # stored by an instance that has a command this one has not
            await self._sessions.end(session_id)
            raise _refused(AdhocSessionRefusal.UNKNOWN)
        if action not in _CONTINUING_ACTIONS:
            await self._sessions.save(session_id, claimed.step, claimed.state, None)
            raise BadAction(f"action {action!r} is not offered here")
        submitted = _has_form(iq)
        try:
            await self._require_access(command, iq["from"])
            if action == "cancel":
                await self._sessions.end(session_id)
                self._reply_canceled(iq, command, session_id)
                return
            context = CommandContext(iq["from"], self._wall_clock(), _load_state(claimed.state))
            outcome = await self._take_step(
                command, claimed.step, context, iq["command"]["form"] if submitted else None
            )
            if isinstance(outcome.shown, FormStep):
                # Only a submitted form counts as activity: an empty step that merely
                # shows the form again must not keep a session alive.
                await self._sessions.save(
                    session_id,
                    outcome.step,
                    _dump_state(outcome.state),
                    self._now_ms() if submitted else None,
                )
            else:
                await self._sessions.end(session_id)
        except BaseException:
            await self._sessions.end(session_id)
            raise
        self._reply(iq, command, session_id, outcome.shown)

    async def _take_step(
        self, command: Command, step: str, context: CommandContext, form: Form | None
    ) -> _Shown:
        """Show ``step``'s form again from its state, read ``form`` against it and hand
        the submission to the form's ``then``."""
        shown = await _step_of(command, step)(context)
        if isinstance(shown, Completed):  # the form no longer applies, e.g. no app is left
            return _Shown(step, context.state, shown)
        try:
            submission = read_submission(shown.form, form)
        except BadPayload as exc:
            return _Shown(step, context.state, _again(shown, shown.values, [("error", str(exc))]))
        try:
            outcome = await shown.then(context, submission)
        except InputRejected as exc:
            notes = [
                ("error", f"{_label(shown, name)}: {text}") for name, text in exc.problems.items()
            ]
            return _Shown(step, context.state, _again(shown, _echo(submission), notes))
        if isinstance(outcome, Completed):
            return _Shown(step, context.state, outcome)
        return await self._show_next(command, outcome, context)

    async def _show_next(
        self, command: Command, following: NextForm, context: CommandContext
    ) -> _Shown:
        step = _name_of(command, following.show)
        _dump_state(following.state)  # refused here, before the form is shown
        shown = await following.show(replace(context, state=following.state))
        return _Shown(step, following.state, shown)

    async def _require_access(self, command: Command, requester: JID) -> None:
        if not await self._access.allows(command.access, requester):
            raise Forbidden(f"{requester.bare} may not run {command.name!r}")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _bounds(self, command: Command | None = None) -> AdhocSessionBounds:
        return AdhocSessionBounds(
            idle_ms=int(self._timeout * 1000),
            lifetime_ms=int(self._limits.lifetime_s * 1000),
            per_account=self._limits.per_account,
            per_class=0 if command is None else self._limits.per_class.get(command.access, 0),
        )

    def _reply(self, iq: Iq, command: Command, session_id: str, step: Step) -> None:
        reply = iq.reply(clear=True)
        stanza = reply["command"]
        stanza["node"] = command.node
        stanza["sessionid"] = session_id
        if isinstance(step, Completed):
            stanza["status"] = "completed"
            stanza["notes"] = list(step.notes)
            payload = with_notes(step.payload, step.notes, command.name)
            if payload is not None:
                stanza.append(payload)
        else:
            default = "complete" if step.final else "next"
            stanza["status"] = "executing"
            stanza["actions"] = [default]
            stanza.xml.find(f"{{{CommandStanza.namespace}}}actions").set("execute", default)
            stanza["notes"] = list(step.notes)
            stanza.append(render_form(step.form, step.values, step.notes))
        reply.send()

    def _reply_canceled(self, iq: Iq, command: Command, session_id: str) -> None:
        reply = iq.reply(clear=True)
        reply["command"]["node"] = command.node
        reply["command"]["sessionid"] = session_id
        reply["command"]["status"] = "canceled"
        reply.send()


def _step_of(command: Command, step: str) -> ShowStep:
    """The method of ``command`` that shows ``step``'s form.

    Raises: LookupError: ``command`` has no such step (a session stored by another
        version of it).
    """
    show = getattr(command, step, None) if not step.startswith("_") else None
    if show is None or getattr(show, "__self__", None) is not command:
        raise LookupError(f"{command.node} has no step {step!r}")
    shows: ShowStep = show
    return shows


def _name_of(command: Command, show: ShowStep) -> str:
    """The name a step is stored under: its method's.

    Raises: TypeError: ``show`` is not a method of ``command`` (a closure cannot be
        stored).
    """
    name = getattr(show, "__name__", "")
    if name.startswith("_") or getattr(command, name, None) != show:
        raise TypeError(f"{command.node}: a next form is shown by a public method of the command")
    return name


def _dump_state(state: State) -> str:
    """Raises: TypeError: not JSON; ValueError: not small."""
    text = json.dumps(dict(state), separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_STATE_BYTES:
        raise ValueError(f"a command's state takes at most {MAX_STATE_BYTES} bytes as JSON")
    return text


def _load_state(text: str) -> State:
    """Raises: ValueError: not a JSON object."""
    state: Any = json.loads(text)
    if not isinstance(state, dict):
        raise ValueError("a stored session state is not a JSON object")
    loaded: State = state
    return loaded


def _has_form(iq: Iq) -> bool:
    return iq["command"].xml.find("{jabber:x:data}x") is not None


def _again(
    step: FormStep, values: Mapping[str, FieldValue], notes: list[tuple[str, str]]
) -> FormStep:
    return replace(step, values=values, notes=notes)


def _echo(submission: Submission) -> dict[str, FieldValue]:
    """The submitted values, to show again beside the problems found in them."""
    return {var: list(values) for var, values in submission.values.items() if values}


def _label(step: FormStep, var: str) -> str:
    for spec in step.form.fields:
        if spec.var == var:
            return spec.label
    return var
