"""``GET /metrics``' live gauges read what the gateway's parts report when scraped."""

from __future__ import annotations

from cmaas.keystore.models import StatusEvent
from cmaas.lifecycle import MessageStatus

from ..api_harness import idle_metrics


def test_the_feedback_gauges_show_a_stream_left_unread_for_a_backlog() -> None:
    lines = idle_metrics((600, True)).render().decode().splitlines()

    assert "cmaas_feedback_in_progress 600.0" in lines
    assert "cmaas_feedback_backlogged 1.0" in lines


def test_the_feedback_gauges_show_a_stream_being_read() -> None:
    lines = idle_metrics((3, False)).render().decode().splitlines()

    assert "cmaas_feedback_in_progress 3.0" in lines
    assert "cmaas_feedback_backlogged 0.0" in lines


def test_status_events_are_counted_per_status() -> None:
    metrics = idle_metrics((0, False))
    events = [
        StatusEvent(n, n, "bank", f"m{n}", status, 1_000, "1", "")
        for n, status in enumerate(
            [MessageStatus.DELIVERED] * 3 + [MessageStatus.DISPATCHED, MessageStatus.READ]
        )
    ]
    metrics.on_events(events)
    metrics.on_events(events[:1])
    lines = metrics.render().decode().splitlines()

    assert 'cmaas_status_events_total{status="delivered"} 4.0' in lines
    assert 'cmaas_status_events_total{status="dispatched"} 1.0' in lines
    assert 'cmaas_status_events_total{status="read"} 1.0' in lines
