"""Adding up the workers' metric snapshots in the supervisor (SPEC §8: one endpoint for all workers).

Counters and histograms are sums over workers. So that they never go backwards when a worker is replaced
(a reload, a restart after a crash), the final snapshot a worker sends as it exits is folded into
`retired`, which later scrapes add to the live workers' snapshots. Gauges (requests in progress, open
connections, target health) come from the live workers only. A worker killed outright loses what it
counted since its last snapshot; Prometheus' rate() treats that as a counter reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sentinel.metrics.recording import Exemplar, Snapshot


@dataclass(slots=True)
class HistogramTotal:
    counts: list[int]
    sum: float = 0.0
    exemplars: list[Exemplar | None] | None = None

    def add(self, counts: list[int], total: float, exemplars: list[Any] | None) -> None:
        if len(self.counts) < len(counts):
            self.counts.extend([0] * (len(counts) - len(self.counts)))
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.sum += total
        if exemplars is None:
            return
        kept = self.exemplars
        if kept is None:
            kept = self.exemplars = [None] * len(counts)
        for i, ex in enumerate(exemplars):
            if ex is None:
                continue
            current = kept[i]
            if current is None or ex[2] >= current[2]:  # the latest exemplar of the bucket, across workers
                kept[i] = (str(ex[0]), float(ex[1]), float(ex[2]))

    def copy(self) -> HistogramTotal:
        return HistogramTotal(list(self.counts), self.sum, None if self.exemplars is None else list(self.exemplars))


def _add(table: dict[Any, int], key: Any, n: int) -> None:
    table[key] = table.get(key, 0) + n


def _histogram(table: dict[Any, HistogramTotal], key: Any) -> HistogramTotal:
    hist = table.get(key)
    if hist is None:
        hist = table[key] = HistogramTotal([])
    return hist


@dataclass(slots=True)
class Totals:
    """Counters and histograms summed over snapshots, keyed by their label values."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], HistogramTotal] = field(default_factory=dict)
    upstream_statuses: dict[tuple[str, int], int] = field(default_factory=dict)
    upstream_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    upstream_durations: dict[str, HistogramTotal] = field(default_factory=dict)
    agent_latency: dict[tuple[str, str], HistogramTotal] = field(default_factory=dict)
    agent_decisions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    agent_timeouts: dict[tuple[str, str], int] = field(default_factory=dict)
    agent_errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    spans_started: list[int] = field(default_factory=lambda: [0, 0])  # sampled, unsampled
    spans_dropped: int = 0  # dropped in a worker because the supervisor fell behind
    access_log_dropped: int = 0

    def add(self, snap: Snapshot) -> None:
        for route, method, status, n in snap.get("requests", ()):
            _add(self.requests, (route, method, int(status)), n)
        for route, method, counts, total, exemplars in snap.get("durations", ()):
            _histogram(self.durations, (route, method)).add(counts, total, exemplars)
        for upstream, statuses, failures, counts, total, _ in snap.get("upstreams", ()):
            for status, n in statuses:
                _add(self.upstream_statuses, (upstream, int(status)), n)
            for reason, n in failures:
                _add(self.upstream_failures, (upstream, reason), n)
            _histogram(self.upstream_durations, upstream).add(counts, total, None)
        for agent, event, decisions, timeouts, errors, counts, total, _ in snap.get("agents", ()):
            for decision, n in decisions:
                _add(self.agent_decisions, (agent, event, decision), n)
            _add(self.agent_timeouts, (agent, event), timeouts)
            for reason, n in errors:
                _add(self.agent_errors, (agent, event, reason), n)
            _histogram(self.agent_latency, (agent, event)).add(counts, total, None)
        for reason, n in snap.get("blocked", ()):
            _add(self.blocked, reason, n)
        sampled, unsampled = snap.get("spans_started", (0, 0))
        self.spans_started[0] += sampled
        self.spans_started[1] += unsampled
        self.spans_dropped += snap.get("spans_dropped", 0)
        self.access_log_dropped += snap.get("access_log_dropped", 0)

    def copy(self) -> Totals:
        return Totals(
            requests=dict(self.requests),
            durations={k: v.copy() for k, v in self.durations.items()},
            upstream_statuses=dict(self.upstream_statuses),
            upstream_failures=dict(self.upstream_failures),
            upstream_durations={k: v.copy() for k, v in self.upstream_durations.items()},
            agent_latency={k: v.copy() for k, v in self.agent_latency.items()},
            agent_decisions=dict(self.agent_decisions),
            agent_timeouts=dict(self.agent_timeouts),
            agent_errors=dict(self.agent_errors),
            blocked=dict(self.blocked),
            spans_started=list(self.spans_started),
            spans_dropped=self.spans_dropped,
            access_log_dropped=self.access_log_dropped,
        )


@dataclass(slots=True)
class Gauges:
    active_requests: int = 0
    open_connections: int = 0
    # (upstream, target) -> healthy in every live worker
    targets: dict[tuple[str, str], bool] = field(default_factory=dict)

    def add(self, snap: Snapshot) -> None:
        self.active_requests += max(0, int(snap.get("active_requests", 0)))
        self.open_connections += int(snap.get("open_connections", 0))
        for upstream, target, healthy in snap.get("targets", ()):
            key = (upstream, target)
            self.targets[key] = self.targets.get(key, True) and bool(healthy)


class Aggregator:
    """What the supervisor knows about the workers' metrics."""

    def __init__(self) -> None:
        self.retired = Totals()

    def retire(self, final: Snapshot) -> None:
        """A worker exited after sending `final`: keep its counts."""
        self.retired.add(final)

    def combine(self, live: list[Snapshot]) -> tuple[Totals, Gauges]:
        totals = self.retired.copy()
        gauges = Gauges()
        for snap in live:
            totals.add(snap)
            gauges.add(snap)
        return totals, gauges
