"""What ``GET /metrics`` reports, in the Prometheus text format (prometheus-client)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cmaas.delivery.errors import Refusal
from cmaas.delivery.events import CursorConsumer
from cmaas.keystore import (
    MessageRecord,
    StatusEvent,
)
from cmaas.lifecycle import (
    Priority,
)

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Live(Collector):
    """Values read when scraped: queue depth, link state, consumers' counts."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        metrics = self._metrics
        depth = GaugeMetricFamily(
            "cmaas_outbox_depth", "Messages waiting to be dispatched", labels=["priority"]
        )
        for priority, count in metrics.depth().items():
            depth.add_metric([priority.value], count)
        yield depth
        yield GaugeMetricFamily(
            "cmaas_outbox_unacknowledged",
            "Messages written within the resend window without a receipt yet",
            value=metrics.inflight(),
        )
        yield CounterMetricFamily(
            "cmaas_outbox_resent",
            "Messages written again after a link loss or restart",
            value=metrics.resent(),
        )
        up, connects = metrics.link()
        yield GaugeMetricFamily(
            "cmaas_component_link_up", "1 while the component link is connected", value=up
        )
        yield CounterMetricFamily(
            "cmaas_component_link_connects", "Successful component handshakes", value=connects
        )
        pings = CounterMetricFamily(
            "cmaas_barrier_pings",
            "Pings after each dispatch round, by outcome: answered, or unanswered (timed"
            " out or not written; with several instances, see CMAAS_INSTANCE_HOST)",
            labels=["outcome"],
        )
        for outcome, count in zip(("answered", "unanswered"), metrics.pings(), strict=True):
            pings.add_metric([outcome], count)
        yield pings
        in_progress, backlogged = metrics.feedback()
        yield GaugeMetricFamily(
            "cmaas_feedback_in_progress",
            "Receipts, markers and bounces read from the IM server and not yet recorded",
            value=in_progress,
        )
        yield GaugeMetricFamily(
            "cmaas_feedback_backlogged",
            "1 while the IM server's stream is not read because too much feedback waits"
            " to be recorded",
            value=int(backlogged),
        )
        alive, replaced = metrics.admission_workers()
        yield GaugeMetricFamily(
            "cmaas_admission_workers",
            "Worker processes checking envelopes now (CMAAS_ADMISSION_WORKERS)",
            value=alive,
        )
        yield CounterMetricFamily(
            "cmaas_admission_workers_replaced",
            "Admission workers started again after one ended",
            value=replaced,
        )
        for name, consumer in metrics.consumers.items():
            yield CounterMetricFamily(
                f"cmaas_{name}_events_delivered",
                f"Events delivered by {name}",
                value=consumer.delivered,
            )
            yield CounterMetricFamily(
                f"cmaas_{name}_failures",
                f"Failed {name} delivery attempts",
                value=consumer.failures,
            )
            yield CounterMetricFamily(
                f"cmaas_{name}_events_dropped",
                f"Events {name} gave up on after 24 hours",
                value=consumer.skipped,
            )


class GatewayMetrics:
    """The gateway's metrics registry; counters are fed by the engine's listeners."""

    def __init__(
        self,
        *,
        depth: Callable[[], Mapping[Priority, int]],
        inflight: Callable[[], int],
        resent: Callable[[], int],
        link: Callable[[], tuple[int, int]],
        pings: Callable[[], tuple[int, int]],
        consumers: Mapping[str, CursorConsumer],
        admission_workers: Callable[[], tuple[int, int]] = lambda: (0, 0),
        feedback: Callable[[], tuple[int, bool]] = lambda: (0, False),
    ) -> None:
        self.depth = depth
        self.inflight = inflight
        self.resent = resent
        self.link = link
        self.pings = pings
        self.consumers = consumers
        self.admission_workers = admission_workers
        self.feedback = feedback
        self.registry = CollectorRegistry()
        self._submissions = Counter(
            "cmaas_submissions",
            "Messages submitted, by outcome: accepted, duplicate, or the refusal's code",
            ["outcome"],
            registry=self.registry,
        )
        self._requests_refused = Counter(
            "cmaas_requests_refused",
            "API requests refused as a whole, by error code",
            ["error"],
            registry=self.registry,
        )
        self._statuses = Counter(
            "cmaas_status_events",
            "Status events recorded, by status",
            ["status"],
            registry=self.registry,
        )
        self.registry.register(_Live(self))

    def on_outcomes(self, outcomes: Sequence[MessageRecord | Refusal]) -> None:
        # Per outcome, not per message: a batch carries up to 500.
        for label, count in collections.Counter(map(_outcome_label, outcomes)).items():
            self._submissions.labels(label).inc(count)

    def on_refused(self, error: Refusal) -> None:
        self._requests_refused.labels(error.code).inc()

    def on_events(self, events: Sequence[StatusEvent]) -> None:
        # Per status, not per event: a commit of a drain carries hundreds.
        for status, count in collections.Counter(event.status for event in events).items():
            self._statuses.labels(status.value).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _outcome_label(outcome: MessageRecord | Refusal) -> str:
    if isinstance(outcome, Refusal):
        return outcome.code
    return "duplicate" if outcome.duplicate else "accepted"
