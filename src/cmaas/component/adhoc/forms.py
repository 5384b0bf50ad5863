"""Declarative data forms (XEP-0004) for ad-hoc commands, and reading what clients submit.

Everything a person must read travels in elements every XEP-0004 client shows: refusals
in the form's instructions, notes and table rows as fixed fields, and every required
choice with labelled options and a default. Clients such as Profanity show neither
XEP-0050 notes, nor reported tables, nor the options of a list without a value.

Submitted forms are read against the form we sent, not against whatever ``type``
attributes the client echoes back (XEP-0004 lets a submit omit them), and every value
is bounded before any command sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from slixmpp.plugins.xep_0004 import Form

from cmaas.component.adhoc.errors import BadPayload

__all__ = [
    "FORM_TYPE",
    "MAX_VALUES_PER_FIELD",
    "MAX_VALUE_LENGTH",
    "FieldSpec",
    "FieldType",
    "FormSpec",
    "Note",
    "Submission",
    "read_submission",
    "render_form",
    "render_result",
    "render_table",
    "with_notes",
]

FORM_TYPE = "urn:cmaas:cmd:1"
MAX_VALUE_LENGTH = 4096
MAX_VALUES_PER_FIELD = 128

FieldType = Literal[
    "boolean",
    "fixed",
    "hidden",
    "jid-multi",
    "jid-single",
    "list-multi",
    "list-single",
    "text-multi",
    "text-private",
    "text-single",
]
_MULTI: frozenset[str] = frozenset({"jid-multi", "list-multi", "text-multi"})
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false", ""})

FieldValue = str | bool | Sequence[str]

Note = tuple[str, str]
"""(type, text) with type ``info``, ``warn`` or ``error`` as XEP-0050 defines."""

_NOTE_PREFIX = {"error": "Refused: ", "warn": "Warning: "}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One form field; ``label`` and ``desc`` are what a person sees in Gajim or Psi."""

    var: str
    label: str
    type: FieldType = "text-single"
    desc: str = ""
    required: bool = False
    options: tuple[tuple[str, str], ...] = ()
    """(value, label) pairs for list fields."""
    max_length: int = MAX_VALUE_LENGTH
    """Longest value accepted; raised only for machine-made values such as key bundles."""


@dataclass(frozen=True, slots=True)
class FormSpec:
    title: str
    instructions: str
    fields: tuple[FieldSpec, ...]

    def with_options(self, var: str, options: Sequence[tuple[str, str]]) -> FormSpec:
        """The same form with the choices of one list field filled in at run time."""
        fields = tuple(
            FieldSpec(f.var, f.label, f.type, f.desc, f.required, tuple(options), f.max_length)
            if f.var == var
            else f
            for f in self.fields
        )
        return FormSpec(self.title, self.instructions, fields)


@dataclass(frozen=True, slots=True)
class Submission:
    """A submitted form, read against the form that was sent."""

    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def text(self, var: str) -> str:
        values = self.values.get(var)
        return values[0] if values else ""

    def texts(self, var: str) -> list[str]:
        return list(self.values.get(var, ()))

    def flag(self, var: str) -> bool:
        return self.text(var).strip().lower() in _TRUE


def render_form(
    spec: FormSpec, values: Mapping[str, FieldValue] | None = None, notes: Sequence[Note] = ()
) -> Form:
    """An input form carrying our FORM_TYPE, pre-filled with ``values``.

    ``notes`` (the refusals of a form shown again) lead its instructions. A required
    single choice without a value gets its first option as default.
    """
    form = Form()
    form["type"] = "form"
    form["title"] = spec.title
    # One element: Profanity shows only the first of several.
    form["instructions"] = ["\n".join([*(_note_text(note) for note in notes), spec.instructions])]
    form.add_field(var="FORM_TYPE", ftype="hidden", value=FORM_TYPE)
    current = dict(values or {})
    for spec_field in spec.fields:
        if (
            spec_field.type == "list-single"
            and spec_field.required
            and spec_field.options
            and spec_field.var not in current
        ):
            current[spec_field.var] = spec_field.options[0][0]
        xml_field = form.add_field(
            var=spec_field.var,
            ftype=spec_field.type,
            label=spec_field.label,
            desc=spec_field.desc,
            required=spec_field.required,
        )
        for value, label in spec_field.options:
            xml_field.add_option(label=label, value=value)
        if spec_field.var in current:
            xml_field["value"] = _as_form_value(spec_field, current[spec_field.var])
    return form


def render_result(title: str, rows: Sequence[tuple[str, str, FieldValue]]) -> Form:
    """A read-only result form of (var, label, value) rows."""
    form = Form()
    form["type"] = "result"
    form["title"] = title
    form.add_field(var="FORM_TYPE", ftype="hidden", value=FORM_TYPE)
    for var, label, value in rows:
        if isinstance(value, bool):
            form.add_field(var=var, ftype="boolean", label=label, value=value)
        elif isinstance(value, str):
            form.add_field(var=var, ftype="text-single", label=label, value=value)
        else:
            form.add_field(var=var, ftype="text-multi", label=label, value=list(value))
    return form


def render_table(
    title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, str]]
) -> Form:
    """A result form with a reported table, which clients show as a grid, and each row
    again as a fixed field, for clients that show no table."""
    form = Form()
    form["type"] = "result"
    form["title"] = title
    for row in rows:
        summary = "; ".join(f"{label}: {row[var]}" for var, label in columns if row.get(var))
        form.add_field(ftype="fixed", value=summary)
    for var, label in columns:
        form.add_reported(var, ftype="text-single", label=label)
    for row in rows:
        form.add_item(dict(row))
    return form


def with_notes(payload: Form | None, notes: Sequence[Note], title: str) -> Form | None:
    """``payload`` with ``notes`` as fixed fields ahead of its other fields, or a result
    form ``title`` of the notes alone when there is no payload."""
    if not notes:
        return payload
    form = payload
    if form is None:
        form = Form()
        form["type"] = "result"
        form["title"] = title
    position = 0
    for child in form.xml:
        if not (child.tag.endswith(("}title", "}instructions")) or child.get("type") == "hidden"):
            break
        position += 1
    for note in notes:
        fixed = form.add_field(ftype="fixed", value=_note_text(note))
        # add_field appends; XEP-0004 wants fields ahead of any reported table.
        form.xml.remove(fixed.xml)
        form.xml.insert(position, fixed.xml)
        position += 1
    return form


def _note_text(note: Note) -> str:
    kind, text = note
    return _NOTE_PREFIX.get(kind, "") + text


def _as_form_value(spec: FieldSpec, value: FieldValue) -> object:
    if isinstance(value, bool):
        return value
    values = [value] if isinstance(value, str) else list(value)
    if spec.type == "boolean":
        return bool(values) and values[0].strip().lower() in _TRUE
    if spec.type in _MULTI:
        return values
    return values[0] if values else ""


def read_submission(spec: FormSpec, form: Form | None) -> Submission:
    """Read a submitted form, keeping only the fields ``spec`` declares.

    Raises:
        BadPayload: No form, not a submit form, a foreign FORM_TYPE, a value that is
            too long or too many values, several values for a single-value field, or
            a boolean that is not one.
    """
    if form is None or form["type"] != "submit":
        raise BadPayload("expected a submitted data form")
    namespace = form.namespace
    raw: dict[str, list[str]] = {}
    for xml_field in form.xml.findall(f"{{{namespace}}}field"):
        var = xml_field.get("var", "")
        raw[var] = [v.text or "" for v in xml_field.findall(f"{{{namespace}}}value")]
    form_type = raw.get("FORM_TYPE")
    if form_type is not None and form_type != [FORM_TYPE]:
        raise BadPayload(f"this command takes FORM_TYPE {FORM_TYPE}")
    values: dict[str, tuple[str, ...]] = {}
    for spec_field in spec.fields:
        submitted = raw.get(spec_field.var, [])
        if len(submitted) > MAX_VALUES_PER_FIELD:
            raise BadPayload(
                f"{spec_field.label}: at most {MAX_VALUES_PER_FIELD} values, got {len(submitted)}"
            )
        if any(len(value) > spec_field.max_length for value in submitted):
            raise BadPayload(
                f"{spec_field.label}: a value is longer than {spec_field.max_length} characters"
            )
        if spec_field.type not in _MULTI and len(submitted) > 1:
            raise BadPayload(f"{spec_field.label}: takes one value, got {len(submitted)}")
        if (
            spec_field.type == "boolean"
            and submitted
            and submitted[0].strip().lower() not in _TRUE | _FALSE
        ):
            raise BadPayload(f"{spec_field.label}: must be true or false")
        values[spec_field.var] = tuple(submitted)
    return Submission(values)
