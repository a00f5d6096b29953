"""The metric families of SPEC §8, rendered with prometheus-client from the aggregated totals.

prometheus-client does the text formats (Prometheus 0.0.4 and OpenMetrics 1.0, chosen from the scraper's
Accept header, with escaping and `# EOF` right); the numbers come from `metrics.aggregate`, not from
prometheus-client's own in-process metric objects, because they are counted in other processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar

from sentinel import __version__
from sentinel.metrics.aggregate import Gauges, HistogramTotal, Totals
from sentinel.metrics.recording import AGENT_BUCKETS, REQUEST_BUCKETS
from sentinel.tracing.export import DROP_QUEUE_FULL, DROP_SHUTDOWN, EXPORT_DURATION_BUCKETS, SpanExporter

DROP_WORKER_BACKLOG = "worker_backlog"  # spans a worker dropped because the supervisor fell behind


def _le(bound: float) -> str:
    return repr(float(bound))


def _buckets(
    bounds: tuple[float, ...], hist: HistogramTotal, exemplars: bool = False
) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
    """Cumulative (le, count[, exemplar]) pairs, ending with +Inf."""
    out: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
    running = 0
    counts = hist.counts + [0] * (len(bounds) + 1 - len(hist.counts))
    for i, le in enumerate([*map(_le, bounds), "+Inf"]):
        running += counts[i]
        ex = hist.exemplars[i] if exemplars and hist.exemplars is not None else None
        if ex is not None:
            out.append((le, running, Exemplar({"trace_id": ex[0]}, ex[1], ex[2])))
        else:
            out.append((le, running))
    return out


@dataclass(slots=True)
class ExporterFigures:
    """The span exporter's counters at scrape time (zeros when tracing is off)."""

    exported: int = 0
    failed: int = 0
    dropped_queue_full: int = 0
    dropped_shutdown: int = 0
    queue_size: int = 0
    duration: HistogramTotal | None = None

    @classmethod
    def of(cls, exporter: SpanExporter | None) -> ExporterFigures:
        if exporter is None:
            return cls()
        d = exporter.export_durations
        return cls(
            exported=exporter.spans_exported,
            failed=exporter.spans_failed,
            dropped_queue_full=exporter.spans_dropped.get(DROP_QUEUE_FULL, 0),
            dropped_shutdown=exporter.spans_dropped.get(DROP_SHUTDOWN, 0),
            queue_size=exporter.queue_size,
            duration=HistogramTotal(list(d.counts), d.sum),
        )


Labels = tuple[object, ...]
K = TypeVar("K", bound=Labels)


def _counter(name: str, doc: str, labels: list[str], values: Mapping[K, int]) -> CounterMetricFamily:
    """A counter family with one sample per label tuple (sorted, for a stable exposition)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric([str(v) for v in key], n)
    return family


def _histogram(
    name: str,
    doc: str,
    labels: list[str],
    bounds: tuple[float, ...],
    values: Mapping[K, HistogramTotal],
    exemplars: bool = False,
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, hist in sorted(values.items(), key=lambda item: item[0]):
        family.add_metric([str(v) for v in key], _buckets(bounds, hist, exemplars), hist.sum)
    return family


def _keyed(values: dict[str, Any]) -> dict[Labels, Any]:
    """A table keyed by one label value, keyed by a 1-tuple instead (as the helpers above take)."""
    return {(k,): v for k, v in values.items()}


class SentinelCollector(Collector):
    """One scrape's worth of families."""

    def __init__(self, totals: Totals, gauges: Gauges, exporter: ExporterFigures) -> None:
        self.totals = totals
        self.gauges = gauges
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        t, g, x = self.totals, self.gauges, self.exporter
        yield _counter(
            "sentinel_requests",
            "Requests answered, by route, method and status.",
            ["route", "method", "status"],
            t.requests,
        )
        yield _histogram(
            "sentinel_request_duration_seconds",
            "Time from a request's head to the end of its response, by route and method.",
            ["route", "method"],
            REQUEST_BUCKETS,
            t.durations,
            exemplars=True,
        )
        yield GaugeMetricFamily("sentinel_active_requests", "Requests in progress.", value=g.active_requests)
        yield GaugeMetricFamily("sentinel_open_connections", "Open client connections.", value=g.open_connections)
        yield _counter(
            "sentinel_upstream_requests",
            "Upstream attempts answered, by upstream and status (failed attempts are in "
            "sentinel_upstream_failures_total).",
            ["upstream", "status"],
            t.upstream_statuses,
        )
        yield _histogram(
            "sentinel_upstream_duration_seconds",
            "Duration of upstream attempts.",
            ["upstream"],
            REQUEST_BUCKETS,
            _keyed(t.upstream_durations),
        )
        yield _counter(
            "sentinel_upstream_failures",
            "Upstream attempts that failed, by reason.",
            ["upstream", "reason"],
            t.upstream_failures,
        )
        healthy = GaugeMetricFamily(
            "sentinel_upstream_target_healthy",
            "1 when the target is healthy in every worker, else 0.",
            labels=["upstream", "target"],
        )
        for (upstream, target), ok in sorted(g.targets.items()):
            healthy.add_metric([upstream, target], 1 if ok else 0)
        yield healthy

        agent = ["agent", "event"]
        yield _histogram(
            "sentinel_agent_latency_seconds",
            "Duration of agent calls, by agent and event.",
            agent,
            AGENT_BUCKETS,
            t.agent_latency,
        )
        yield _counter("sentinel_agent_requests", "Agent calls, by decision.", [*agent, "decision"], t.agent_decisions)
        yield _counter("sentinel_agent_timeouts", "Agent calls that timed out.", agent, t.agent_timeouts)
        yield _counter(
            "sentinel_agent_errors", "Agent calls that failed, by reason.", [*agent, "reason"], t.agent_errors
        )
        yield _counter("sentinel_blocked_requests", "Requests refused, by reason.", ["reason"], _keyed(t.blocked))

        yield GaugeMetricFamily("sentinel_up", "1 while the proxy is serving.", value=1)
        build = GaugeMetricFamily("sentinel_build_info", "The running version (always 1).", labels=["version"])
        build.add_metric([__version__], 1)
        yield build

        yield _counter(
            "sentinel_spans_started",
            "SERVER spans started, by sampling decision.",
            ["sampled"],
            {("true",): t.spans_started[0], ("false",): t.spans_started[1]},
        )
        yield CounterMetricFamily("otel_exporter_spans_exported", "Spans the collector accepted.", value=x.exported)
        yield CounterMetricFamily(
            "otel_exporter_spans_failed",
            "Spans that could not be delivered (permanent errors, retries given up, rejected by the collector).",
            value=x.failed,
        )
        yield _counter(
            "otel_exporter_spans_dropped",
            "Spans dropped before export, by reason.",
            ["reason"],
            {
                (DROP_QUEUE_FULL,): x.dropped_queue_full,
                (DROP_SHUTDOWN,): x.dropped_shutdown,
                (DROP_WORKER_BACKLOG,): t.spans_dropped,
            },
        )
        yield GaugeMetricFamily("otel_exporter_queue_size", "Spans waiting for export.", value=x.queue_size)
        yield _histogram(
            "otel_exporter_export_duration_seconds",
            "Duration of export attempts.",
            [],
            EXPORT_DURATION_BUCKETS,
            {(): x.duration or HistogramTotal([])},
        )
        yield CounterMetricFamily(
            "sentinel_access_log_dropped",
            "Access-log lines dropped because the log writer fell behind.",
            value=t.access_log_dropped,
        )


def render(collector: SentinelCollector, accept: str) -> tuple[str, bytes]:
    """(content type, body) for a scrape: OpenMetrics (with exemplars) when the scraper asks for it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, content_type = choose_encoder(accept)
    return content_type, encoder(registry)
