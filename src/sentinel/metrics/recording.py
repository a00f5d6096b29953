"""Metric recording in a worker (SPEC §8): plain counters, no locks, nothing shared between processes.

Each worker counts its own requests in native int vectors (`librt.vecs.vec[i64]`: compiled, an increment
is a load and a store, where a list of ints allocates a new int object for each count above 256); the
supervisor asks every worker for a snapshot when it is scraped and adds them up (`metrics.aggregate`).
Recording a request is a few vector and attribute operations: the per-route, per-method statistics
objects are created on first use and then reused, so the hot path allocates nothing for an unsampled
request (a sampled one stores an exemplar tuple). Label values are bounded: routes and upstreams come from
the config, methods from httptools' fixed list, statuses are three-digit numbers, failure reasons are a
fixed vocabulary.
"""

from __future__ import annotations

from typing import Any, Final

from librt.vecs import vec
from mypy_extensions import i64

from sentinel.proxy.by_method import ByMethod

# Not `Final`: mypyc (2.4) leaves a Final tuple of floats unset at run time.
REQUEST_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGENT_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UNROUTED: Final = "unrouted"  # the route label of requests that matched no route (or were refused before routing)

Exemplar = tuple[str, float, float]  # trace id (32 hex), observed value (seconds), Unix time (seconds)
Snapshot = dict[str, Any]  # JSON-able; see `WorkerMetrics.snapshot`


class Histogram:
    """Fixed-bucket histogram: `counts[i]` observations fell in bucket i (not cumulative), the last is +Inf.
    Durations are observed in integer nanoseconds, against the bounds in nanoseconds: compiled, a native
    compare per bucket and no float to box. With `exemplars`, the latest sampled trace per bucket is kept
    (OpenMetrics exemplars)."""

    __slots__ = ("bounds", "bounds_ns", "counts", "exemplars", "sum_ns")

    def __init__(self, bounds: tuple[float, ...], exemplars: bool = False) -> None:
        self.bounds = bounds  # in seconds, as exposed
        self.bounds_ns = vec[i64]([round(bound * 1e9) for bound in bounds])
        self.counts = vec[i64]([0] * (len(bounds) + 1))
        self.sum_ns: i64 = 0
        self.exemplars: list[Exemplar | None] | None = [None] * (len(bounds) + 1) if exemplars else None

    def observe(self, ns: i64) -> i64:
        # The first bound >= value, as Prometheus buckets are "less than or equal". A scan from the
        # smallest bound: requests mostly land in the first buckets, and compiled, the loop costs less
        # than a call to bisect_left.
        bounds = self.bounds_ns
        n = len(bounds)
        i: i64 = 0
        while i < n and bounds[i] < ns:
            i += 1
        self.counts[i] += 1
        self.sum_ns += ns
        return i

    @property
    def sum(self) -> float:
        """The observations' sum in seconds."""
        return float(self.sum_ns) / 1e9

    def dump(self) -> list[Any]:
        return [list(self.counts), self.sum, self.exemplars]


_STATUSES: Final = 1000  # HTTP statuses have three digits


class StatusCounts:
    """Counts by HTTP status: a vector indexed by status, so that counting one is a native increment; a
    dict would box and hash the int (~300 instructions). Anything outside 0-999 goes to a dict."""

    __slots__ = ("counts", "other")

    def __init__(self) -> None:
        self.counts = vec[i64]([0] * _STATUSES)
        self.other: dict[int, int] = {}

    def add(self, status: int) -> None:
        if 0 <= status < _STATUSES:
            self.counts[status] += 1
        else:
            self.other[status] = self.other.get(status, 0) + 1

    def items(self) -> list[tuple[int, int]]:
        """(status, count) for every status counted, in status order."""
        counted = [(status, n) for status, n in enumerate(self.counts) if n]
        return sorted(counted + list(self.other.items()))


class MethodStats:
    """Requests of one route and method: counts per status and the duration histogram."""

    __slots__ = ("durations", "statuses")

    def __init__(self) -> None:
        self.statuses = StatusCounts()
        self.durations = Histogram(REQUEST_BUCKETS, exemplars=True)


class RouteMetrics:
    __slots__ = ("_stats", "by_method", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self._stats = ByMethod[MethodStats]()
        self.by_method = self._stats.values  # method -> its statistics

    def observe(self, method: bytes, status: int, duration_ns: i64, trace_id: str | None, end_ns: int) -> None:
        """A request answered with `status` after `duration_ns`; `trace_id` (sampled requests) becomes the
        exemplar of its bucket, observed at `end_ns` (Unix nanoseconds)."""
        stats = self._stats.get(method)
        if stats is None:
            stats = self._stats.put(method, MethodStats())
        stats.statuses.add(status)
        i = stats.durations.observe(duration_ns)
        if trace_id is not None:
            exemplars = stats.durations.exemplars
            assert exemplars is not None
            exemplars[i] = (trace_id, float(duration_ns) / 1e9, end_ns / 1e9)


class UpstreamMetrics:
    """Attempts sent to one upstream: answered ones by status, failed ones by reason, and their durations."""

    __slots__ = ("durations", "failures", "statuses", "upstream")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.statuses = StatusCounts()
        self.failures: dict[str, int] = {}
        self.durations = Histogram(REQUEST_BUCKETS)

    def observe(self, status: int, failure: str, duration_ns: i64) -> None:
        if failure:
            self.failures[failure] = self.failures.get(failure, 0) + 1
        else:
            self.statuses.add(status)
        self.durations.observe(duration_ns)


class AgentMetrics:
    """Calls to one agent for one event: latency, decisions, timeouts and errors (SPEC §8)."""

    __slots__ = ("decisions", "errors", "latency", "timeouts")

    def __init__(self) -> None:
        self.latency = Histogram(AGENT_BUCKETS)
        self.decisions: dict[str, int] = {}
        self.timeouts = 0
        self.errors: dict[str, int] = {}

    def decided(self, decision: str) -> None:
        self.decisions[decision] = self.decisions.get(decision, 0) + 1

    def failed(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class WorkerMetrics:
    """All the metrics one worker records. `requests_started` minus the requests counted so far is the
    number in progress (sentinel_active_requests), so starting a request costs one increment."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteMetrics] = {}
        self.unrouted = self.route(UNROUTED)
        self.upstreams: dict[str, UpstreamMetrics] = {}
        self.agents: dict[tuple[str, str], AgentMetrics] = {}
        self.blocked: dict[str, int] = {}
        self.requests_started = 0
        # Requests with a trace id, by the sampling decision (two native ints: a list would box each count).
        self.traces_sampled: i64 = 0
        self.traces_unsampled: i64 = 0

    def route(self, route_id: str) -> RouteMetrics:
        """The statistics of a route, made once per config (routes hold theirs)."""
        metrics = self.routes.get(route_id)
        if metrics is None:
            metrics = self.routes[route_id] = RouteMetrics(route_id)
        return metrics

    def upstream(self, upstream_id: str) -> UpstreamMetrics:
        metrics = self.upstreams.get(upstream_id)
        if metrics is None:
            metrics = self.upstreams[upstream_id] = UpstreamMetrics(upstream_id)
        return metrics

    def agent(self, agent_id: str, event: str) -> AgentMetrics:
        key = (agent_id, event)
        metrics = self.agents.get(key)
        if metrics is None:
            metrics = self.agents[key] = AgentMetrics()
        return metrics

    def block(self, reason: str) -> None:
        self.blocked[reason] = self.blocked.get(reason, 0) + 1

    def requests_finished(self) -> int:
        return sum(sum(stats.durations.counts) for route in self.routes.values() for stats in route.by_method.values())

    def snapshot(self, extra: dict[str, Any]) -> Snapshot:
        """Everything counted so far, as JSON-able lists (the supervisor adds snapshots up), plus `extra`:
        the counters kept elsewhere in the worker (spans, access log) and the gauges (open connections,
        target health); `metrics.aggregate` knows which is which."""
        requests: list[list[Any]] = []
        durations: list[list[Any]] = []
        for route in self.routes.values():
            for method, stats in route.by_method.items():
                m = method.decode("latin-1")
                requests.extend([route.route, m, status, n] for status, n in stats.statuses.items())
                durations.append([route.route, m, *stats.durations.dump()])
        upstreams = [
            [u.upstream, u.statuses.items(), sorted(u.failures.items()), *u.durations.dump()]
            for u in self.upstreams.values()
        ]
        agents = [
            [agent, event, sorted(a.decisions.items()), a.timeouts, sorted(a.errors.items()), *a.latency.dump()]
            for (agent, event), a in self.agents.items()
        ]
        return {
            "requests": requests,
            "durations": durations,
            "upstreams": upstreams,
            "agents": agents,
            "blocked": sorted(self.blocked.items()),
            "active_requests": self.requests_started - self.requests_finished(),
            "spans_started": [self.traces_sampled, self.traces_unsampled],
            **extra,
        }
