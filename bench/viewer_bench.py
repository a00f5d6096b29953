"""Trace viewer store benchmark (SPEC §9): ingest rate on one core, then search times over a full store.

python bench/viewer_bench.py [--spans 1000000] [--db PATH]

Targets: ingest at least 20,000 spans/s on one core; a search over one million stored spans answers in
under 200 ms. Spans look like a real system's: 20 services with 5 operations each, traces of 5 to 10 spans
(a server span calling down a chain of services), about 10 attributes a span, 2% errors, one resource per
service; batches of 512 spans as an SDK's batch processor sends them. The batches are built once; each one
sent gets new trace ids, times and high-cardinality attribute values, set in place.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sentinel.viewer.store import TraceQuery, TraceStore

INGEST_TARGET = 20_000  # spans/s
SEARCH_TARGET_MS = 200.0
BATCH = 512
SERVICES = [f"svc-{i:02d}" for i in range(20)]
OPERATIONS = {s: [f"GET /api/{s}/r{j}" if j % 2 == 0 else f"POST /api/{s}/r{j}" for j in range(5)] for s in SERVICES}
SPREAD_NS = 2 * 3600 * 10**9  # the stored spans' start times cover the last two hours
ERROR_RATE = 0.02


@dataclass
class Template:
    """One batch, reusable: where to write the fresh values each time it is sent."""

    request: ExportTraceServiceRequest
    traces: list[list[Span]]  # spans by trace, for new trace ids
    times: list[tuple[Span, int, int, int]]  # (span, start offset in the batch's second, duration, trace index)
    urls: list[tuple[AnyValue, str]]  # http.url values: the prefix a request number is appended to
    ports: list[AnyValue]  # net.peer.port
    users: list[AnyValue]  # user.id


def _set(kv: KeyValue, key: str, value: str | bool | int | float) -> AnyValue:
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv.value


def _build_template(rng: random.Random) -> Template:
    request = ExportTraceServiceRequest()
    scopes = {}
    for index, service in enumerate(SERVICES):
        resource_spans = request.resource_spans.add()
        for key, value in [
            ("service.name", service),
            ("service.version", "1.4.2"),
            ("host.name", f"node-{index % 5}"),
            ("telemetry.sdk.language", "python"),
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.version", "1.45.2"),
        ]:
            _set(resource_spans.resource.attributes.add(), key, value)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "opentelemetry.instrumentation.flask"
        scope_spans.scope.version = "0.66b2"
        scopes[service] = scope_spans
    template = Template(request, [], [], [], [], [])
    count = 0
    while count < BATCH:
        size = min(rng.randint(5, 10), BATCH - count)
        chain = rng.sample(SERVICES, size)
        start = rng.randrange(0, 10**9)
        duration = int(rng.lognormvariate(17, 1.2))  # median ~24 ms, a long tail into seconds
        error_at = rng.randrange(size) if rng.random() < ERROR_RATE * size else -1
        trace: list[Span] = []
        parent = b""
        for depth, service in enumerate(chain):
            op = rng.choice(OPERATIONS[service])
            method, route = op.split()
            span = scopes[service].spans.add(
                span_id=rng.randbytes(8),
                parent_span_id=parent,
                name=op,
                kind=Span.SPAN_KIND_SERVER if depth % 2 == 0 else Span.SPAN_KIND_CLIENT,
                flags=0x100,
            )
            status = 500 if depth == error_at else rng.choice([200] * 20 + [201, 404])
            attrs = span.attributes
            _set(attrs.add(), "http.method", method)
            _set(attrs.add(), "http.route", route)
            template.urls.append((_set(attrs.add(), "http.url", ""), f"http://{service}{route}?req="))
            _set(attrs.add(), "http.status_code", status)
            _set(attrs.add(), "net.peer.name", f"10.0.{rng.randrange(4)}.{rng.randrange(50)}")
            template.ports.append(_set(attrs.add(), "net.peer.port", 0))
            template.users.append(_set(attrs.add(), "user.id", ""))
            _set(attrs.add(), "http.user_agent", rng.choice(["curl/8.5.0", "Mozilla/5.0", "python-requests/2.32"]))
            _set(attrs.add(), "http.request_content_length", rng.randrange(0, 20_000))
            _set(attrs.add(), "cache.hit", rng.random() < 0.3)
            if depth == error_at:
                span.status.code = 2
                span.status.message = "upstream failed"
                event = span.events.add(name="exception")
                _set(event.attributes.add(), "exception.type", "TimeoutError")
                _set(event.attributes.add(), "exception.message", "timed out")
            template.times.append(
                (
                    span,
                    start + depth * duration // (2 * size),
                    max(1000, duration - depth * duration // size),
                    len(template.traces),
                )
            )
            trace.append(span)
            parent = span.span_id
            count += 1
        template.traces.append(trace)
    return template


class Generator:
    """Batches of fresh spans from a few templates: new ids, times and high-cardinality values each time."""

    def __init__(self, total: int, now_ns: int, templates: int = 16, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.templates = [_build_template(rng) for _ in range(templates)]
        self.batches = (total + BATCH - 1) // BATCH
        self.first_ns = now_ns - SPREAD_NS
        self.step_ns = SPREAD_NS // max(1, self.batches)
        self.sent = 0
        self.trace_counter = 0
        self.prefix = rng.randbytes(8)
        self.rng = rng
        self.trace_ids: list[bytes] = []  # a sample, for the by-id search

    def next(self) -> bytes:
        template = self.templates[self.sent % len(self.templates)]
        base = self.first_ns + self.sent * self.step_ns
        for trace in template.traces:
            self.trace_counter += 1
            trace_id = self.prefix + struct.pack(">Q", self.trace_counter)
            for span in trace:
                span.trace_id = trace_id
        if self.sent % 97 == 0:
            self.trace_ids.append(template.traces[0][0].trace_id)
        scale = [self.rng.lognormvariate(0, 0.8) for _ in template.traces]  # every trace gets its own pace
        for span, offset, duration, trace_index in template.times:
            span.start_time_unix_nano = base + offset
            span.end_time_unix_nano = base + offset + int(duration * scale[trace_index])
        n = self.sent * BATCH
        rand = self.rng.randrange
        for i, (value, prefix) in enumerate(template.urls):
            value.string_value = f"{prefix}{n + i}"
        for value in template.ports:
            value.int_value = rand(32768, 61000)
        for value in template.users:
            value.string_value = f"user-{rand(100_000)}"
        self.sent += 1
        data: bytes = template.request.SerializeToString()
        return data


def _pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def _median_ms(run: Callable[[int], object], runs: int) -> tuple[float, float]:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        run(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to store (default 1000000)")
    parser.add_argument("--db", help="database file to create (default: a temporary file, removed afterwards)")
    parser.add_argument("--runs", type=int, default=9, help="runs of each search (median reported)")
    args = parser.parse_args()
    print(f"viewer store bench: {args.spans} spans, {_pin_to_one_cpu()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or os.path.join(tmp, "traces.db")
        if os.path.exists(path):
            print(f"{path} exists: give a new file", file=sys.stderr)
            return 2
        store = TraceStore(path, retention_secs=7 * 86_400, max_bytes=1 << 40)
        try:
            return _run(store, path, args.spans, args.runs)
        finally:
            store.close()


def _run(store: TraceStore, path: str, total: int, runs: int) -> int:
    now_ns = time.time_ns()
    t0 = time.perf_counter()
    gen = Generator(total, now_ns)
    print(f"built {len(gen.templates)} batch templates in {time.perf_counter() - t0:.1f} s")

    ingest_s = 0.0
    stored = 0
    window_spans, window_s = 0, 0.0
    report_every = max(1, gen.batches // 5)
    for batch in range(gen.batches):
        data = gen.next()
        t0 = time.perf_counter()
        stored += store.ingest(data)
        elapsed = time.perf_counter() - t0
        ingest_s += elapsed
        window_s += elapsed
        window_spans += BATCH
        if (batch + 1) % report_every == 0:
            print(f"  {stored:>9} spans stored: {window_spans / window_s:>8.0f} spans/s over the last {window_spans}")
            window_spans, window_s = 0, 0.0
    rate = stored / ingest_s
    verdict = "OK" if rate >= INGEST_TARGET else "BELOW TARGET"
    print(
        f"ingest: {rate:,.0f} spans/s on one core ({stored} spans in {ingest_s:.1f} s; "
        f"target >= {INGEST_TARGET:,}) {verdict}"
    )
    stats = store.stats()
    print(
        f"store: {stats['spans']} spans, {stats['traces']} traces, {stats['bytes'] / 2**20:.0f} MiB "
        f"({stats['bytes'] / max(1, stats['spans']):.0f} bytes/span), file {os.path.getsize(path) / 2**20:.0f} MiB"
    )

    now_us = now_ns // 1000
    window_start = now_us - SPREAD_NS // 1000 // 2  # a quarter hour in the middle of the data
    rng = random.Random(3)
    svc = [rng.choice(SERVICES) for _ in range(runs)]
    ops = [rng.choice(OPERATIONS[s]) for s in svc]
    lookback = now_us - 3600 * 10**6  # what Jaeger's UI sends by default: the last hour
    searches: list[tuple[str, Callable[[int], object]]] = [
        ("service", lambda i: store.find_traces(TraceQuery(service=svc[i]))),
        (
            "service, last hour (UI default)",
            lambda i: store.find_traces(TraceQuery(service=svc[i], start_us=lookback, end_us=now_us)),
        ),
        ("service + operation", lambda i: store.find_traces(TraceQuery(service=svc[i], operation=ops[i]))),
        (
            "tag http.status_code=500 (common)",
            lambda i: store.find_traces(TraceQuery(tags={"http.status_code": "500"})),
        ),
        (
            "service + tag http.method=GET",
            lambda i: store.find_traces(TraceQuery(service=svc[i], tags={"http.method": "GET"})),
        ),
        (
            "tag user.id (rare), all time",
            lambda i: store.find_traces(TraceQuery(tags={"user.id": f"user-{rng.randrange(100_000)}"})),
        ),
        ("tag host.name (resource)", lambda i: store.find_traces(TraceQuery(tags={"host.name": f"node-{i % 5}"}))),
        (
            "service + duration >= 1 s",
            lambda i: store.find_traces(TraceQuery(service=svc[i], min_duration_us=1_000_000)),
        ),
        (
            "duration 5 s .. 6 s (rare)",
            lambda i: store.find_traces(TraceQuery(min_duration_us=5_000_000, max_duration_us=6_000_000)),
        ),
        ("errors only", lambda i: store.find_traces(TraceQuery(errors_only=True))),
        ("service + errors only", lambda i: store.find_traces(TraceQuery(service=svc[i], errors_only=True))),
        (
            "service + op + errors + GET",
            lambda i: store.find_traces(
                TraceQuery(service=svc[i], operation=ops[i], errors_only=True, tags={"http.method": "GET"})
            ),
        ),
        (
            "service, 15 min window",
            lambda i: store.find_traces(
                TraceQuery(service=svc[i], start_us=window_start, end_us=window_start + 900 * 10**6)
            ),
        ),
        (
            "time range only, 15 min window",
            lambda i: store.find_traces(TraceQuery(start_us=window_start, end_us=window_start + 900 * 10**6)),
        ),
        (
            "no match: service + tag absent",
            lambda i: store.find_traces(TraceQuery(service=svc[i], tags={"http.method": "PATCH"})),
        ),
        ("trace by id", lambda i: store.trace(gen.trace_ids[i * 7 % len(gen.trace_ids)].hex())),
        ("services", lambda i: store.services()),
        ("operations", lambda i: store.operations(svc[i])),
    ]
    print(f"searches over {stats['spans']} spans, limit 20 traces, median (max) of {runs} runs:")
    worst = 0.0
    for name, run in searches:
        median, top = _median_ms(run, runs)
        worst = max(worst, median)
        found = run(0)
        print(f"  {name:<36} {median:7.1f} ms ({top:6.1f})  {len(found) if isinstance(found, list) else '':>3} results")
    verdict = "OK" if worst < SEARCH_TARGET_MS else "ABOVE TARGET"
    print(f"search: slowest median {worst:.1f} ms (target < {SEARCH_TARGET_MS:.0f} ms) {verdict}")

    t0 = time.perf_counter()
    cutoff = now_ns - SPREAD_NS + SPREAD_NS // 10  # a tenth of the spans started before
    deleted = store.enforce_retention(now_ns=cutoff + int(store.retention_secs) * 10**9)
    print(f"retention: deleted the oldest {deleted} spans (a tenth) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
