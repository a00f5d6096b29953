"""A worker's counters (metrics/recording.py), as the snapshot the supervisor adds up reports them."""

from __future__ import annotations

from sentinel.metrics.recording import RouteMetrics, StatusCounts, WorkerMetrics


def test_status_counts_keep_every_status_in_order() -> None:
    counts = StatusCounts()
    for status in [200, 503, 200, 0, 999, 1000, -1, 200, 404, 1000]:
        counts.add(status)
    # 0-999 in the vector, anything else (never sent by llhttp, but not lost) beside it
    assert counts.items() == [(-1, 1), (0, 1), (200, 3), (404, 1), (503, 1), (999, 1), (1000, 2)]


def test_counts_past_the_small_int_cache_and_alternating_methods() -> None:
    route = RouteMetrics("api")
    for i in range(1000):
        method = b"GET" if i % 3 else b"POST"
        route.observe(bytes(bytearray(method)), 200 if i % 2 else 500, 2_000_000, None, 0)
    get, post = route.by_method[b"GET"], route.by_method[b"POST"]
    assert sum(n for _, n in get.statuses.items()) == 666
    assert sum(n for _, n in post.statuses.items()) == 334
    assert get.statuses.items() == [(200, 333), (500, 333)]
    assert post.statuses.items() == [(200, 167), (500, 167)]
    assert list(get.durations.counts) == [0, 666] + [0] * 11  # all in the 5 ms bucket


def test_snapshot_is_plain_lists() -> None:
    metrics = WorkerMetrics()
    route = metrics.route("api")
    route.observe(b"GET", 200, 20_000_000, "ab" * 16, 1_000_000_000)
    upstream = metrics.upstream("backend")
    upstream.observe(200, "", 10_000_000)
    upstream.observe(0, "connect", 500_000_000)
    snapshot = metrics.snapshot({})
    assert snapshot["requests"] == [["api", "GET", 200, 1]]
    assert snapshot["durations"][0][2] == [0, 0, 0, 1] + [0] * 9
    assert type(snapshot["durations"][0][2]) is list
    assert snapshot["upstreams"][0][:3] == ["backend", [(200, 1)], [("connect", 1)]]
    assert snapshot["durations"][0][3] == 0.02  # the sum, in seconds
    assert snapshot["durations"][0][4][3] == ("ab" * 16, 0.02, 1.0)  # the exemplar: trace, seconds, Unix time


def test_buckets_are_less_than_or_equal_in_nanoseconds() -> None:
    route = RouteMetrics("api")
    for ns in (1_000_000, 1_000_001, 0, 10_000_000_000, 10_000_000_001):
        route.observe(b"GET", 200, ns, None, 0)
    durations = route.by_method[b"GET"].durations
    # 0 and exactly 1 ms are in le="0.001"; 1 ms + 1 ns in le="0.005"; 10 s in le="10"; above it, +Inf
    assert list(durations.counts) == [2, 1] + [0] * 9 + [1, 1]
    assert durations.sum == (1_000_000 + 1_000_001 + 10_000_000_000 + 10_000_000_001) / 1e9
