"""The metric families of SPEC §8, rendered with prometheus-client from the aggregated totals.

prometheus-client does the text formats (Prometheus 0.0.4 and OpenMetrics 1.0, chosen from the scraper's
Accept header, with escaping and `# EOF` right); the numbers come from `metrics.aggregate`, not from
prometheus-client's own in-process metric objects, because they are counted in other processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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


class SentinelCollector(Collector):
    """One scrape's worth of families."""

    def __init__(self, totals: Totals, gauges: Gauges, exporter: ExporterFigures) -> None:
        self.totals = totals
        self.gauges = gauges
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        t, g, x = self.totals, self.gauges, self.exporter
        requests = CounterMetricFamily(
            "sentinel_requests", "Requests answered, by route, method and status.", labels=["route", "method", "status"]
        )
        for (route, method, status), n in sorted(t.requests.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests

        durations = HistogramMetricFamily(
            "sentinel_request_duration_seconds",
            "Time from a request's head to the end of its response, by route and method.",
            labels=["route", "method"],
        )
        for (route, method), hist in sorted(t.durations.items()):
            durations.add_metric([route, method], _buckets(REQUEST_BUCKETS, hist, exemplars=True), hist.sum)
        yield durations

        yield GaugeMetricFamily("sentinel_active_requests", "Requests in progress.", value=g.active_requests)
        yield GaugeMetricFamily("sentinel_open_connections", "Open client connections.", value=g.open_connections)

        upstream_requests = CounterMetricFamily(
            "sentinel_upstream_requests",
            "Upstream attempts answered, by upstream and status (failed attempts are in "
            "sentinel_upstream_failures_total).",
            labels=["upstream", "status"],
        )
        for (upstream, status), n in sorted(t.upstream_statuses.items()):
            upstream_requests.add_metric([upstream, str(status)], n)
        yield upstream_requests

        upstream_durations = HistogramMetricFamily(
            "sentinel_upstream_duration_seconds", "Duration of upstream attempts.", labels=["upstream"]
        )
        for upstream, hist in sorted(t.upstream_durations.items()):
            upstream_durations.add_metric([upstream], _buckets(REQUEST_BUCKETS, hist), hist.sum)
        yield upstream_durations

        failures = CounterMetricFamily(
            "sentinel_upstream_failures", "Upstream attempts that failed, by reason.", labels=["upstream", "reason"]
        )
        for (upstream, reason), n in sorted(t.upstream_failures.items()):
            failures.add_metric([upstream, reason], n)
        yield failures

        healthy = GaugeMetricFamily(
            "sentinel_upstream_target_healthy",
            "1 when the target is healthy in every worker, else 0.",
            labels=["upstream", "target"],
        )
        for (upstream, target), ok in sorted(g.targets.items()):
            healthy.add_metric([upstream, target], 1 if ok else 0)
        yield healthy

        yield from self._agents()

        blocked = CounterMetricFamily("sentinel_blocked_requests", "Requests refused, by reason.", labels=["reason"])
        for reason, n in sorted(t.blocked.items()):
            blocked.add_metric([reason], n)
        yield blocked

        yield GaugeMetricFamily("sentinel_up", "1 while the proxy is serving.", value=1)
        build = GaugeMetricFamily("sentinel_build_info", "The running version (always 1).", labels=["version"])
        build.add_metric([__version__], 1)
        yield build

        started = CounterMetricFamily(
            "sentinel_spans_started", "SERVER spans started, by sampling decision.", labels=["sampled"]
        )
        started.add_metric(["true"], t.spans_started[0])
        started.add_metric(["false"], t.spans_started[1])
        yield started

        yield CounterMetricFamily("otel_exporter_spans_exported", "Spans the collector accepted.", value=x.exported)
        yield CounterMetricFamily(
            "otel_exporter_spans_failed",
            "Spans that could not be delivered (permanent errors, retries given up, rejected by the collector).",
            value=x.failed,
        )
        dropped = CounterMetricFamily(
            "otel_exporter_spans_dropped", "Spans dropped before export, by reason.", labels=["reason"]
        )
        dropped.add_metric([DROP_QUEUE_FULL], x.dropped_queue_full)
        dropped.add_metric([DROP_SHUTDOWN], x.dropped_shutdown)
        dropped.add_metric([DROP_WORKER_BACKLOG], t.spans_dropped)
        yield dropped
        yield GaugeMetricFamily("otel_exporter_queue_size", "Spans waiting for export.", value=x.queue_size)
        export = HistogramMetricFamily("otel_exporter_export_duration_seconds", "Duration of export attempts.")
        hist = x.duration or HistogramTotal([])
        export.add_metric([], _buckets(EXPORT_DURATION_BUCKETS, hist), hist.sum)
        yield export

        yield CounterMetricFamily(
            "sentinel_access_log_dropped",
            "Access-log lines dropped because the log writer fell behind.",
            value=t.access_log_dropped,
        )

    def _agents(self) -> Iterator[Metric]:
        t = self.totals
        latency = HistogramMetricFamily(
            "sentinel_agent_latency_seconds", "Duration of agent calls, by agent and event.", labels=["agent", "event"]
        )
        for (agent, event), hist in sorted(t.agent_latency.items()):
            latency.add_metric([agent, event], _buckets(AGENT_BUCKETS, hist), hist.sum)
        yield latency
        decisions = CounterMetricFamily(
            "sentinel_agent_requests", "Agent calls, by decision.", labels=["agent", "event", "decision"]
        )
        for (agent, event, decision), n in sorted(t.agent_decisions.items()):
            decisions.add_metric([agent, event, decision], n)
        yield decisions
        timeouts = CounterMetricFamily(
            "sentinel_agent_timeouts", "Agent calls that timed out.", labels=["agent", "event"]
        )
        for (agent, event), n in sorted(t.agent_timeouts.items()):
            timeouts.add_metric([agent, event], n)
        yield timeouts
        errors = CounterMetricFamily(
            "sentinel_agent_errors", "Agent calls that failed, by reason.", labels=["agent", "event", "reason"]
        )
        for (agent, event, reason), n in sorted(t.agent_errors.items()):
            errors.add_metric([agent, event, reason], n)
        yield errors


def render(collector: SentinelCollector, accept: str) -> tuple[str, bytes]:
    """(content type, body) for a scrape: OpenMetrics (with exemplars) when the scraper asks for it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, content_type = choose_encoder(accept)
    return content_type, encoder(registry)
