"""``GET /metrics``' live gauges read what the gateway's parts report when scraped."""

from __future__ import annotations

from cmaas.delivery.metrics import GatewayMetrics
from cmaas.keystore.models import StatusEvent
from cmaas.lifecycle import MessageStatus, Priority


def _metrics(feedback: tuple[int, bool]) -> GatewayMetrics:
    return GatewayMetrics(
        depth=lambda: dict.fromkeys(Priority, 0),
        inflight=lambda: 0,
        resent=lambda: 0,
        link=lambda: (1, 1),
        pings=lambda: (0, 0),
        consumers={},
        feedback=lambda: feedback,
    )


def test_the_feedback_gauges_show_a_stream_left_unread_for_a_backlog() -> None:
    lines = _metrics((600, True)).render().decode().splitlines()

    assert "cmaas_feedback_in_progress 600.0" in lines
    assert "cmaas_feedback_backlogged 1.0" in lines


def test_the_feedback_gauges_show_a_stream_being_read() -> None:
    lines = _metrics((3, False)).render().decode().splitlines()

    assert "cmaas_feedback_in_progress 3.0" in lines
    assert "cmaas_feedback_backlogged 0.0" in lines


def test_status_events_are_counted_per_status() -> None:
    metrics = _metrics((0, False))
    events = [
        StatusEvent(n, "bank", f"m{n}", status, 1_000, "1", "")
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
