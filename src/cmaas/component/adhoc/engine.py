"""The XEP-0050 protocol: sessions, steps, notes and refusals.

slixmpp's own ``xep_0050`` plugin is not used for serving commands: it hands
continuation steps only the form, not the stanza, so it cannot check who continues
a session, and its timeout sends a client-side ``cancel`` iq. This engine binds each
session to the full JID that opened it, re-checks access on every step, and bounds
the sessions: per account, per class of command (so that no class can crowd out
another, the admins' least of all), idle time and whole lifetime.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

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
    Step,
)
from cmaas.component.adhoc.errors import (
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

__all__ = ["AdhocEngine", "SessionLimits"]

log = logging.getLogger(__name__)

_CONTINUING_ACTIONS = ("execute", "next", "complete", "cancel")


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


@dataclass(slots=True)
class _Session:
    session_id: str
    owner: JID
    command: Command
    step: FormStep
    idle_until: float
    ends_at: float
    busy: bool = False
    """A step runs; a concurrent continuation is refused instead of running it twice."""

    def over(self, now: float) -> bool:
        return min(self.idle_until, self.ends_at) <= now


class AdhocEngine:
    """Serves a set of commands on one JID (the component domain)."""

    def __init__(
        self,
        commands: Iterable[Command],
        access: AccessPolicy,
        session_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        limits: SessionLimits | None = None,
    ) -> None:
        self.commands: dict[str, Command] = {c.node: c for c in commands}
        self._access = access
        self._timeout = session_timeout
        self._limits = limits or SessionLimits()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sessions: dict[str, _Session] = {}
        register_stanza_plugin(Iq, CommandStanza)
        register_stanza_plugin(CommandStanza, Form)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def visible_commands(self, requester: JID) -> list[Command]:
        """The commands ``requester`` may run, for disco#items."""
        return [c for c in self.commands.values() if await self._access.allows(c.access, requester)]

    def forget(self, owner: JID) -> int:
        """Drop the sessions of a JID that went offline: a full JID's own, or every
        session of the account for a bare JID.

        Returns: how many were dropped.
        """
        gone = [
            s.session_id
            for s in self._sessions.values()
            if s.owner == owner or (not owner.resource and s.owner.bare == owner.bare)
        ]
        for session_id in gone:
            del self._sessions[session_id]
        return len(gone)

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
            # Checked after the start's awaits, right before the session is stored, so
            # that concurrent starts cannot all pass; a one-step command needs no room.
            self._make_room(iq["from"], command.access)
            now = self._clock()
            self._sessions[session_id] = _Session(
                session_id,
                iq["from"],
                command,
                step,
                idle_until=now + self._timeout,
                ends_at=now + self._limits.lifetime_s,
            )
        self._reply(iq, command, session_id, step)

    async def _continue(self, iq: Iq, session_id: str, action: str) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.busy:
            raise BadSessionId("unknown or finished session")
        if iq["from"] != session.owner:
            raise Forbidden("this session belongs to another JID")
        if session.over(self._clock()):
            del self._sessions[session_id]
            raise SessionExpired("the session timed out; run the command again")
        if iq["command"]["node"] != session.command.node:
            raise BadSessionId("the session belongs to another command")
        if action not in _CONTINUING_ACTIONS:
            raise BadAction(f"action {action!r} is not offered here")
        submitted = _has_form(iq)
        session.busy = True
        try:
            await self._require_access(session.command, iq["from"])
            if action == "cancel":
                self._sessions.pop(session_id, None)
                self._reply_canceled(iq, session)
                return
            step = await self._submit(session.step, iq["command"]["form"] if submitted else None)
        except BaseException:
            self._sessions.pop(session_id, None)
            raise
        finally:
            session.busy = False
        self._reply(iq, session.command, session_id, step)
        if isinstance(step, FormStep):
            session.step = step
            # Only a submitted form counts as activity: an empty step that merely shows
            # the form again must not keep a session alive.
            if submitted:
                session.idle_until = self._clock() + self._timeout
        else:
            self._sessions.pop(session_id, None)

    async def _submit(self, step: FormStep, form: Form | None) -> Step:
        try:
            submission = read_submission(step.form, form)
        except BadPayload as exc:
            return _again(step, step.values, [("error", str(exc))])
        try:
            return await step.on_submit(submission)
        except InputRejected as exc:
            notes = [
                ("error", f"{_label(step, name)}: {text}") for name, text in exc.problems.items()
            ]
            return _again(step, _echo(submission), notes)

    async def _require_access(self, command: Command, requester: JID) -> None:
        if not await self._access.allows(command.access, requester):
            raise Forbidden(f"{requester.bare} may not run {command.name!r}")

    def _make_room(self, requester: JID, access: Access) -> None:
        """Raises: TooManySessions."""
        now = self._clock()
        for session_id in [
            s.session_id for s in self._sessions.values() if not s.busy and s.over(now)
        ]:
            del self._sessions[session_id]
        owned = sum(1 for s in self._sessions.values() if s.owner.bare == requester.bare)
        if owned >= self._limits.per_account:
            raise TooManySessions(
                f"{requester.bare} has {owned} open command sessions; finish or cancel one"
            )
        in_class = sum(1 for s in self._sessions.values() if s.command.access is access)
        if in_class >= self._limits.per_class.get(access, 0):
            raise TooManySessions("too many open command sessions; try again later")

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

    def _reply_canceled(self, iq: Iq, session: _Session) -> None:
        reply = iq.reply(clear=True)
        reply["command"]["node"] = session.command.node
        reply["command"]["sessionid"] = session.session_id
        reply["command"]["status"] = "canceled"
        reply.send()


def _has_form(iq: Iq) -> bool:
    return iq["command"].xml.find("{jabber:x:data}x") is not None


def _again(
    step: FormStep, values: Mapping[str, FieldValue], notes: list[tuple[str, str]]
) -> FormStep:
    return FormStep(
        form=step.form,
        on_submit=step.on_submit,
        values=values,
        notes=notes,
        final=step.final,
    )


def _echo(submission: Submission) -> dict[str, FieldValue]:
    """The submitted values, to show again beside the problems found in them."""
    return {var: list(values) for var, values in submission.values.items() if values}


def _label(step: FormStep, var: str) -> str:
    for spec in step.form.fields:
        if spec.var == var:
            return spec.label
    return var
