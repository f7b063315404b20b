"""A metrics snapshot as Prometheus metric families (``prometheus_client``), read afresh
from the database at every scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chimeway.engine.metrics import Snapshot


class SnapshotCollector(Collector):
    """Collects one :class:`Snapshot` per scrape."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self._take = take

    def collect(self) -> Iterator[Metric]:
        return iter(families(self._take()))


def families(snapshot: Snapshot) -> list[Metric]:
    deliveries = GaugeMetricFamily(
        "chimeway_deliveries", "Deliveries by channel and status.", labels=["channel", "status"]
    )
    for row in snapshot.deliveries:
        deliveries.add_metric([row.first, row.second], row.n)
    attempts = GaugeMetricFamily(
        "chimeway_delivery_attempts",
        "Recorded delivery attempts by outcome and error class.",
        labels=["outcome", "error_class"],
    )
    for row in snapshot.attempts:
        attempts.add_metric([row.first, row.second], row.n)
    window = int(snapshot.latency_window.total_seconds())
    latency = GaugeMetricFamily(
        "chimeway_send_latency_seconds",
        f"Seconds from claim to recorded answer, over the attempts of the last {window} s.",
        labels=["channel", "quantile"],
    )
    recent = GaugeMetricFamily(
        "chimeway_send_latency_attempts",
        f"Attempts finished in the last {window} s (the latency's sample).",
        labels=["channel"],
    )
    for sample in snapshot.latency:
        for quantile, value in (("0.5", sample.p50), ("0.9", sample.p90), ("0.99", sample.p99)):
            latency.add_metric([sample.channel, quantile], value)
        recent.add_metric([sample.channel], sample.count)
    jobs = GaugeMetricFamily(
        "chimeway_jobs", "Queued jobs by queue and state.", labels=["queue", "state"]
    )
    oldest = GaugeMetricFamily(
        "chimeway_oldest_due_job_seconds",
        "How long the oldest job that is due has waited, by queue.",
        labels=["queue"],
    )
    for queue in snapshot.queues:
        for state, n in (
            ("due", queue.due),
            ("scheduled", queue.scheduled),
            ("running", queue.running),
        ):
            jobs.add_metric([queue.queue, state], n)
        oldest.add_metric([queue.queue], queue.oldest_due_seconds)
    ingress = GaugeMetricFamily(
        "chimeway_webhook_ingress", "Provider webhook events by state.", labels=["state"]
    )
    for state_count in snapshot.ingress:
        ingress.add_metric([state_count.first], state_count.n)
    return [deliveries, attempts, latency, recent, jobs, oldest, ingress]
