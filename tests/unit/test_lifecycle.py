"""The message lifecycle's rules, with no store: what each change does from each status."""

from __future__ import annotations

import pytest

from cmaas.lifecycle import (
    OMEMO_RESOURCES,
    MessageStatus,
    Priority,
    StatusChange,
    Transition,
    transition,
)

ALICE = "alice@example.org"
SEALED = frozenset({"7", "8"})
S = MessageStatus


def change(status: MessageStatus, device: str = "", reporter: str | None = ALICE) -> StatusChange:
    return StatusChange("app", "m1", status, 1_000, device, "", reporter)


def never_reported(_device: str, _status: MessageStatus) -> bool:
    return False


def test_the_message_moves_forward_only() -> None:
    assert transition(
        S.ACCEPTED, ALICE, SEALED, change(S.DISPATCHED, reporter=None), never_reported
    ) == (Transition(S.DISPATCHED, moves=True))
    assert (
        transition(S.DELIVERED, ALICE, SEALED, change(S.DISPATCHED, reporter=None), never_reported)
        is None
    )
    assert transition(S.READ, ALICE, SEALED, change(S.DELIVERED), never_reported) is None


@pytest.mark.parametrize("failure", [S.FAILED, S.EXPIRED])
def test_failures_end_only_a_pending_message(failure: MessageStatus) -> None:
    for pending in (S.ACCEPTED, S.DISPATCHED):
        assert transition(
            pending, ALICE, SEALED, change(failure, reporter=None), never_reported
        ) == (Transition(failure, moves=True))
    for finished in (S.DELIVERED, S.READ, S.FAILED, S.EXPIRED):
        assert (
            transition(finished, ALICE, SEALED, change(failure, reporter=None), never_reported)
            is None
        )


def test_only_the_recipient_may_report() -> None:
    stranger = change(S.DELIVERED, "7", reporter="mallory@example.org")
    assert transition(S.DISPATCHED, ALICE, SEALED, stranger, never_reported) is None
    assert transition(S.DISPATCHED, ALICE, SEALED, change(S.DELIVERED, "7"), never_reported) == (
        Transition(S.DELIVERED, moves=True)
    )


def test_a_device_reports_each_status_once_even_when_the_message_is_further_on() -> None:
    asked: list[tuple[str, MessageStatus]] = []

    def reported(device: str, status: MessageStatus) -> bool:
        asked.append((device, status))
        return device == "7"

    assert transition(S.READ, ALICE, SEALED, change(S.DELIVERED, "7"), reported) is None
    assert transition(S.READ, ALICE, SEALED, change(S.DELIVERED, "8"), reported) == (
        Transition(S.READ, moves=False)
    )
    assert asked == [("7", S.DELIVERED), ("8", S.DELIVERED)]


def test_a_device_report_after_a_final_failure_is_ignored_without_reading_history() -> None:
    def reported(_device: str, _status: MessageStatus) -> bool:
        raise AssertionError("history is read only when it can decide")

    assert transition(S.EXPIRED, ALICE, SEALED, change(S.DELIVERED, "7"), reported) is None
    assert transition(S.FAILED, ALICE, SEALED, change(S.READ, "7"), reported) is None


def test_priorities_rank_in_dispatch_order_and_round_trip_through_storage() -> None:
    assert Priority.ranked({Priority.BULK, Priority.HIGH, Priority.NORMAL}) == [
        Priority.HIGH,
        Priority.NORMAL,
        Priority.BULK,
    ]
    assert [Priority.from_rank(p.rank) for p in Priority] == list(Priority)
    assert Priority("high") is Priority.HIGH
    assert Priority.choices() == "high, normal or bulk"
    with pytest.raises(ValueError, match="no priority ranks 3"):
        Priority.from_rank(3)


def test_only_devices_the_message_is_sealed_to_report_and_never_without_a_device() -> None:
    assert transition(S.DISPATCHED, ALICE, SEALED, change(S.DELIVERED, "9"), never_reported) is None
    assert transition(S.DISPATCHED, ALICE, SEALED, change(S.DELIVERED), never_reported) is None
    # Stored before the devices were recorded: any device of the recipient still counts.
    assert transition(S.DISPATCHED, ALICE, None, change(S.DELIVERED, "9"), never_reported) == (
        Transition(S.DELIVERED, moves=True)
    )


def test_with_the_omemo_mark_a_client_resource_may_report() -> None:
    sealed = frozenset({"7", OMEMO_RESOURCES})
    assert transition(
        S.DISPATCHED, ALICE, sealed, change(S.DELIVERED, "profanity.ab12"), never_reported
    ) == Transition(S.DELIVERED, moves=True)
    # A numeric device id names a CMaaS device: it counts only if sealed to.
    assert transition(S.DISPATCHED, ALICE, sealed, change(S.DELIVERED, "8"), never_reported) is None
    assert transition(
        S.DISPATCHED, ALICE, sealed, change(S.DELIVERED, "7"), never_reported
    ) == Transition(S.DELIVERED, moves=True)


def test_an_omemo_only_message_is_moved_by_resources_alone() -> None:
    sealed = frozenset({OMEMO_RESOURCES})
    assert transition(S.DISPATCHED, ALICE, sealed, change(S.READ, "gajim"), never_reported) == (
        Transition(S.READ, moves=True)
    )
    assert transition(S.DISPATCHED, ALICE, sealed, change(S.READ, "123"), never_reported) is None


def test_without_the_omemo_mark_a_resource_does_not_report() -> None:
    assert (
        transition(
            S.DISPATCHED, ALICE, SEALED, change(S.DELIVERED, "profanity.ab12"), never_reported
        )
        is None
    )
