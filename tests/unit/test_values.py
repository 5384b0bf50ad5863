"""``value_class``: records frozen to the type checker, as cheap to build as unfrozen ones."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from cmaas.lifecycle import MessageStatus, StatusChange
from cmaas.values import value_class


@value_class
class _Point:
    x: int
    label: str = ""
    tags: tuple[str, ...] = ()


def test_records_compare_and_hash_by_their_fields() -> None:
    assert _Point(1, "a") == _Point(1, "a")
    assert _Point(1, "a") != _Point(2, "a")
    assert hash(_Point(1, "a", ("t",))) == hash(_Point(1, "a", ("t",)))
    assert len({_Point(1), _Point(1), _Point(2)}) == 2


def test_replace_gives_a_changed_copy_and_leaves_the_original() -> None:
    point = _Point(1, "a")
    moved = dataclasses.replace(point, x=5)
    assert (point.x, moved.x, moved.label) == (1, 5, "a")


def test_records_have_slots_and_no_instance_dictionary() -> None:
    point = _Point(1)
    assert not hasattr(point, "__dict__")
    with pytest.raises(AttributeError):
        point.other = 1  # type: ignore[attr-defined]


def test_a_record_holding_a_list_is_unhashable_like_a_frozen_dataclass() -> None:
    @value_class
    class Holder:
        items: list[int]

    with pytest.raises(TypeError, match="unhashable"):
        hash(Holder([1]))


def test_the_type_checker_refuses_an_assignment_to_a_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        textwrap.dedent(
            """
            from cmaas.lifecycle import MessageStatus, StatusChange

            change = StatusChange("app", "m1", MessageStatus.DELIVERED, 0)
            change.at_ms = 5
            """
        )
    )
    stdout, _, status = mypy_api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert status == 1
    assert 'Property "at_ms" defined in "StatusChange" is read-only' in stdout
    # The same record is still built and compared at runtime as before.
    assert StatusChange("app", "m1", MessageStatus.DELIVERED, 0).at_ms == 0
