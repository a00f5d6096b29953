"""The trace viewer's SQLite store (SPEC §9): spans from the real OpenTelemetry SDK read back exactly, search,
retention by age and by size, concurrent use, bad input. Real database files in tmp_path throughout."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zlib import crc32

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from sentinel.viewer.store import StoredSpan, TraceQuery, TraceStore

T0 = 1_700_000_000 * 10**9  # 2023-11-14, in Unix nanoseconds
SECOND = 10**9
MS = 10**6


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "traces.db")


@pytest.fixture
def store(db: str) -> Iterator[TraceStore]:
    store = TraceStore(db)
    yield store
    store.close()


# -- spans from the SDK -------------------------------------------------------------------------------------


class Sdk:
    """Tracers of the real OpenTelemetry SDK, one provider (resource) per service, spans kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()

    def tracer(self, service: str, **resource: Any) -> trace_api.Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        return provider.get_tracer("shop.instrumentation", "1.2.3")

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def take(self) -> ExportTraceServiceRequest:
        """The finished spans as the OTLP exporter sends them; the next take starts afresh."""
        request = encode_spans(self.spans())
        self.exporter.clear()
        return request


def trace_hex(span: ReadableSpan | trace_api.Span) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}"


def span_hex(span: ReadableSpan | trace_api.Span) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.span_id:016x}"


def typed(value: Any) -> Any:
    """`value` with every leaf tagged by its type: 1, 1.0 and True are equal in Python, not in OTLP."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    if isinstance(value, float):
        return ("float", repr(value))  # repr: nan equals nan, -0.0 differs from 0.0
    return (type(value).__name__, value)


def expected_stored(span: ReadableSpan) -> dict[str, Any]:
    """What the store must give back for an SDK span, derived from the SDK's own objects."""
    context = span.get_span_context()
    assert context is not None
    remote_parent = span.parent is not None and span.parent.is_remote
    assert span.start_time is not None
    assert span.end_time is not None
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK counts from INTERNAL = 0, OTLP from UNSPECIFIED = 0
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status_code": span.status.status_code.value,
        "status_message": span.status.description or "",
        "service": span.resource.attributes["service.name"],
        "attributes": typed(dict(span.attributes or {})),
        "events": [
            {"time_ns": e.timestamp, "name": e.name, "attributes": typed(dict(e.attributes or {}))} for e in span.events
        ],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "trace_state": link.context.trace_state.to_header(),
                "attributes": typed(dict(link.attributes or {})),
            }
            for link in span.links
        ],
        "resource": typed(dict(span.resource.attributes)),
        "scope_name": span.instrumentation_scope.name if span.instrumentation_scope else "",
        "scope_version": (span.instrumentation_scope.version or "") if span.instrumentation_scope else "",
        "trace_state": context.trace_state.to_header(),
        # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE, plus IS_REMOTE for a remote parent (what the OTLP exporter sets)
        "flags": 0x100 | (0x200 if remote_parent else 0),
    }


def as_dict(span: StoredSpan) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "status_code": span.status_code,
        "status_message": span.status_message,
        "service": span.service,
        "attributes": typed(span.attributes),
        "events": [{**e, "attributes": typed(e["attributes"])} for e in span.events],
        "links": [{**link, "attributes": typed(link["attributes"])} for link in span.links],
        "resource": typed(span.resource),
        "scope_name": span.scope_name,
        "scope_version": span.scope_version,
        "trace_state": span.trace_state,
        "flags": span.flags,
    }


def rich_trace(sdk: Sdk) -> None:
    """One trace with every kind of span, attribute type, event, link, status and a remote parent."""
    web = sdk.tracer("web", **{"host.name": "web-1", "process.pid": 4242, "process.command_args": ("python", "app.py")})
    db = sdk.tracer("db", **{"host.name": "db-1", "db.replica": True, "load": 0.75})
    other = sdk.tracer("batch")
    linked = other.start_span("nightly", start_time=T0 - 60 * SECOND)
    linked.end(end_time=T0 - 59 * SECOND)
    remote = NonRecordingSpan(
        SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
            span_id=0x00F067AA0BA902B7,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
        )
    )
    root = web.start_span(
        "GET /cart",
        context=trace_api.set_span_in_context(remote),
        kind=SpanKind.SERVER,
        start_time=T0,
        attributes={
            "http.method": "GET",
            "http.status_code": 200,
            "http.response_content_length": 1 << 40,
            "latency.ratio": 0.125,
            "negative": -3.5e-7,
            "cache.hit": False,
            "empty": "",
            "unicode": "héllo ☃ 𝄞",
            "tags": ("a", "b", ""),
            "ports": (80, 443, -1),
            "weights": (0.5, 1.0),
            "flags": (True, False),
        },
        links=[Link(linked.get_span_context(), {"link.reason": "batch", "link.n": 3})],
    )
    root.add_event("request.received", {"bytes": 512, "compressed": True}, timestamp=T0 + 1_000)
    root.add_event("no attributes", timestamp=T0 + 2_000)
    in_root = trace_api.set_span_in_context(root)
    for offset, (kind, name) in enumerate(
        [
            (SpanKind.CLIENT, "SELECT cart"),
            (SpanKind.INTERNAL, "render"),
            (SpanKind.PRODUCER, "publish cart.viewed"),
            (SpanKind.CONSUMER, "consume cart.viewed"),
        ],
        start=1,
    ):
        tracer = db if kind is SpanKind.CLIENT else web
        child = tracer.start_span(name, context=in_root, kind=kind, start_time=T0 + offset * MS)
        if kind is SpanKind.CLIENT:
            child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            child.record_exception(ValueError("deadlock"), timestamp=T0 + offset * MS + 500)
        elif kind is SpanKind.INTERNAL:
            child.set_status(Status(StatusCode.OK))
        child.end(end_time=T0 + offset * MS + 123_456)
    root.end(end_time=T0 + 50 * MS)


@pytest.mark.parametrize("how", ["bytes", "message"])
def test_sdk_spans_read_back_exactly(store: TraceStore, how: str) -> None:
    sdk = Sdk()
    rich_trace(sdk)
    spans = sdk.spans()
    request = encode_spans(spans)
    stored = store.ingest(request.SerializeToString()) if how == "bytes" else store.ingest_request(request)
    assert stored == len(spans) == 6

    by_id = {span_hex(s): s for s in spans}
    root = next(s for s in spans if s.name == "GET /cart")
    got = store.trace(trace_hex(root))
    assert [s.name for s in got] == ["GET /cart", "SELECT cart", "render", "publish cart.viewed", "consume cart.viewed"]
    for span in got:
        assert as_dict(span) == expected_stored(by_id[span.span_id])
    batch = next(s for s in spans if s.name == "nightly")
    (nightly,) = store.trace(trace_hex(batch))
    assert as_dict(nightly) == expected_stored(batch)
    assert request == ExportTraceServiceRequest.FromString(request.SerializeToString())  # the request is unchanged


def test_every_otlp_value_type_reads_back(store: TraceStore) -> None:
    def v(**kwargs: Any) -> AnyValue:
        return AnyValue(**kwargs)

    values = {
        "bytes": v(bytes_value=b"\x00\x01\xfe\xff"),
        "bytes.empty": v(bytes_value=b""),
        "int.min": v(int_value=-(1 << 63)),
        "int.max": v(int_value=(1 << 63) - 1),
        "float.nan": v(double_value=float("nan")),
        "float.inf": v(double_value=float("inf")),
        "float.negative_zero": v(double_value=-0.0),
        "bool.false": v(bool_value=False),
        "string.empty": v(string_value=""),
        "no value": AnyValue(),
        "array.mixed": v(array_value=ArrayValue(values=[v(string_value="x"), v(int_value=1), v(bool_value=True)])),
        "array.empty": v(array_value=ArrayValue()),
        "array.nested": v(array_value=ArrayValue(values=[v(array_value=ArrayValue(values=[v(double_value=2.5)]))])),
        "kvlist": v(
            kvlist_value=KeyValueList(
                values=[KeyValue(key="a", value=v(int_value=1)), KeyValue(key="b", value=v(bytes_value=b"\xab"))]
            )
        ),
    }
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=v(string_value="types"))
    resource_spans.resource.attributes.add(key="resource.kvlist", value=values["kvlist"])
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="types", start_time_unix_nano=T0
    )
    for key, value in values.items():
        span.attributes.add(key=key, value=value)
    assert store.ingest(request.SerializeToString()) == 1

    (got,) = store.trace(bytes(range(1, 17)).hex())
    assert typed(got.attributes) == typed(
        {
            "bytes": "0001feff",
            "bytes.empty": "",
            "int.min": -(1 << 63),
            "int.max": (1 << 63) - 1,
            "float.nan": float("nan"),
            "float.inf": float("inf"),
            "float.negative_zero": -0.0,
            "bool.false": False,
            "string.empty": "",
            "no value": None,
            "array.mixed": ["x", 1, True],
            "array.empty": [],
            "array.nested": [[2.5]],
            "kvlist": {"a": 1, "b": "ab"},
        }
    )
    assert typed(got.resource) == typed({"service.name": "types", "resource.kvlist": {"a": 1, "b": "ab"}})
    assert (got.service, got.kind, got.status_code, got.scope_name, got.parent_span_id) == ("types", 0, 0, "", "")


def test_services_and_operations(store: TraceStore) -> None:
    sdk = Sdk()
    rich_trace(sdk)
    store.ingest_request(sdk.take())
    assert store.services() == ["batch", "db", "web"]
    assert store.operations("web") == [
        ("GET /cart", 2),
        ("consume cart.viewed", 5),
        ("publish cart.viewed", 4),
        ("render", 1),
    ]
    assert store.operations("db") == [("SELECT cart", 3)]
    assert store.operations("nobody") == []


def test_an_operation_with_two_kinds_is_listed_once_per_kind(store: TraceStore) -> None:
    sdk = Sdk()
    tracer = sdk.tracer("svc")
    for kind in (SpanKind.SERVER, SpanKind.CLIENT, SpanKind.SERVER):
        tracer.start_span("call", kind=kind, start_time=T0).end(end_time=T0 + 1)
    store.ingest_request(sdk.take())
    assert store.operations("svc") == [("call", 2), ("call", 3)]


# -- search over a small shop -------------------------------------------------------------------------------


@dataclass
class Shop:
    """Twelve traces a second apart: a `frontend` SERVER span and a `checkout` CLIENT child each."""

    ids: list[str] = field(default_factory=list)  # trace ids, oldest first

    def order(self, indexes: Sequence[int]) -> list[str]:
        return [self.ids[i] for i in indexes]


@pytest.fixture
def shop(store: TraceStore) -> Shop:
    sdk = Sdk()
    frontend = sdk.tracer("frontend", **{"host.name": "web-1"})
    checkout = sdk.tracer("checkout", **{"host.name": "app-1"})
    shop = Shop()
    for i in range(12):
        start = T0 + i * SECOND
        root = frontend.start_span(
            "GET /cart",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={
                "http.status_code": 500 if i % 4 == 3 else 200,
                "user.id": f"u{i % 3}",
                "cache.hit": i % 2 == 0,
                "ratio": i / 4,
            },
        )
        child = checkout.start_span(
            "SELECT cart",
            context=trace_api.set_span_in_context(root),
            kind=SpanKind.CLIENT,
            start_time=start + (i + 1) * 1_000,
            attributes={"db.rows": i},
        )
        if i % 4 == 3:
            child.set_status(Status(StatusCode.ERROR, "boom"))
        child.end(end_time=start + (i + 1) * 1_000 + i * MS + 500)  # child i lasts i ms and half a microsecond
        root.end(end_time=start + (20 + i) * MS)  # root i lasts 20 + i ms
        shop.ids.append(trace_hex(root))
    store.ingest_request(sdk.take())
    return shop


def found(store: TraceStore, **query: Any) -> list[str]:
    traces = store.find_traces(TraceQuery(**query))
    for trace in traces:
        assert trace, "a trace comes with its spans"
        assert len({span.trace_id for span in trace}) == 1
    return [trace[0].trace_id for trace in traces]


ALL = list(range(11, -1, -1))  # newest first


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ALL),
        ({"service": "checkout"}, ALL),
        ({"service": "checkout", "limit": 5}, ALL[:5]),
        ({"service": "nobody"}, []),
        ({"service": "frontend", "operation": "GET /cart"}, ALL),
        ({"service": "frontend", "operation": "SELECT cart"}, []),  # that operation is checkout's
        ({"operation": "SELECT cart"}, ALL),
        ({"operation": "nothing"}, []),
        ({"tags": {"http.status_code": "500"}}, [11, 7, 3]),
        ({"tags": {"user.id": "u1"}}, [10, 7, 4, 1]),
        ({"tags": {"cache.hit": "true"}}, [10, 8, 6, 4, 2, 0]),
        ({"tags": {"ratio": "0.75"}}, [3]),
        ({"tags": {"ratio": "2.0"}}, [8]),
        ({"tags": {"ratio": "2"}}, []),  # string form of the float 2.0 is "2.0"
        ({"tags": {"db.rows": "5"}, "service": "checkout"}, [5]),
        ({"tags": {"db.rows": "5"}, "service": "frontend"}, []),  # one span must match everything
        ({"tags": {"user.id": "u1", "cache.hit": "true"}}, [10, 4]),
        ({"tags": {"user.id": "u1", "db.rows": "4"}}, []),  # on different spans of trace 4
        ({"tags": {"host.name": "app-1"}}, ALL),  # a resource attribute
        ({"tags": {"host.name": "app-1"}, "service": "frontend"}, []),
        ({"tags": {"host.name": "web-1", "user.id": "u2"}}, [11, 8, 5, 2]),
        ({"tags": {"nope": "x"}}, []),
        ({"errors_only": True}, [11, 7, 3]),
        ({"tags": {"error": "true"}}, [11, 7, 3]),
        ({"errors_only": True, "service": "frontend"}, []),
        ({"errors_only": True, "tags": {"db.rows": "7"}}, [7]),
        ({"service": "checkout", "min_duration_us": 5000}, [11, 10, 9, 8, 7, 6, 5]),
        ({"service": "checkout", "min_duration_us": 5001}, [11, 10, 9, 8, 7, 6]),
        ({"max_duration_us": 3000}, [3, 2, 1, 0]),  # whole microseconds, as Jaeger; the roots last 20 ms or more
        ({"min_duration_us": 2000, "max_duration_us": 3000}, [3, 2]),
        ({"min_duration_us": 25_000}, [11, 10, 9, 8, 7, 6, 5]),
        ({"start_us": (T0 + 3 * SECOND) // 1000, "end_us": (T0 + 6 * SECOND) // 1000}, [6, 5, 4, 3]),
        ({"start_us": (T0 + 3 * SECOND) // 1000 + 1, "end_us": (T0 + 6 * SECOND) // 1000}, [6, 5, 4, 3]),
        ({"start_us": (T0 + 3 * SECOND) // 1000 + 5, "end_us": (T0 + 6 * SECOND) // 1000}, [6, 5, 4]),
        ({"start_us": (T0 + 10 * SECOND) // 1000}, [11, 10]),
        ({"end_us": (T0 + SECOND) // 1000}, [1, 0]),
        ({"service": "frontend", "start_us": T0 // 1000, "end_us": T0 // 1000}, [0]),
        ({"start_us": (T0 + 6 * SECOND) // 1000, "end_us": (T0 + 3 * SECOND) // 1000}, []),
        ({"service": "checkout", "tags": {"db.rows": "9"}, "errors_only": False, "min_duration_us": 9000}, [9]),
        ({"limit": 0}, []),
    ],
)
def test_find_traces(store: TraceStore, shop: Shop, query: dict[str, Any], expected: list[int]) -> None:
    assert found(store, **query) == shop.order(expected)


def test_found_traces_are_whole_and_sorted_by_start(store: TraceStore, shop: Shop) -> None:
    (trace,) = store.find_traces(TraceQuery(tags={"db.rows": "6"}))  # only the child matches
    assert [(s.service, s.name) for s in trace] == [("frontend", "GET /cart"), ("checkout", "SELECT cart")]
    assert trace[0].start_ns == T0 + 6 * SECOND
    assert trace == store.trace(shop.ids[6])


def test_traces_rank_by_their_newest_matching_span(store: TraceStore) -> None:
    sdk = Sdk()
    front, back = sdk.tracer("front"), sdk.tracer("back")
    a = front.start_span("a", start_time=T0 + 100 * SECOND, attributes={"tier": "x"})
    a_child = back.start_span(
        "a.child", context=trace_api.set_span_in_context(a), start_time=T0 + 300 * SECOND, attributes={"tier": "x"}
    )
    a_child.end(end_time=T0 + 301 * SECOND)
    a.end(end_time=T0 + 302 * SECOND)
    b = front.start_span("b", start_time=T0 + 200 * SECOND, attributes={"tier": "x"})
    b.end(end_time=T0 + 201 * SECOND)
    store.ingest_request(sdk.take())
    a_id, b_id = trace_hex(a), trace_hex(b)
    assert found(store, tags={"tier": "x"}) == [a_id, b_id]  # a's child started last
    assert found(store, service="front") == [b_id, a_id]  # among front's spans, b's started last
    assert found(store, tags={"tier": "x"}, service="front") == [b_id, a_id]


def test_spans_that_start_at_the_same_nanosecond(store: TraceStore) -> None:
    start = T0 + 995  # the store tells them apart by the next free nanoseconds, which reach the next microsecond

    def batch(first_trace: int) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for i in range(first_trace, first_trace + 5):
            spans.add(
                trace_id=i.to_bytes(16, "big"),
                span_id=i.to_bytes(8, "big"),
                name=f"span {i}",
                start_time_unix_nano=start,
                end_time_unix_nano=start + i,
            )
        return request

    assert store.ingest_request(batch(1)) == 5
    assert store.ingest_request(batch(6)) == 5  # the keys the first batch took are found taken
    for i in range(1, 11):
        (span,) = store.trace(f"{i:032x}")
        assert (span.name, span.start_ns, span.end_ns) == (f"span {i}", start, start + i)
    in_that_microsecond = found(store, start_us=start // 1000, end_us=start // 1000)
    assert sorted(in_that_microsecond) == [f"{i:032x}" for i in range(1, 11)]
    assert found(store, start_us=start // 1000 + 1) == []
    assert sorted(found(store, end_us=start // 1000)) == [f"{i:032x}" for i in range(1, 11)]


def test_spans_without_a_start_time(store: TraceStore) -> None:
    """A client that sets no start time sends every span at 0: each still gets a key of its own."""
    for batch in range(5):
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for i in range(400):
            n = batch * 400 + i + 1
            spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name=f"n{n}")
        assert store.ingest_request(request) == 400
    assert store.stats()["spans"] == 2000
    for n in (1, 400, 401, 1337, 2000):
        (span,) = store.trace(f"{n:032x}")
        assert (span.name, span.start_ns) == (f"n{n}", 0)
    assert len(store.find_traces(TraceQuery(end_us=0, limit=5000))) == 2000


def test_tag_search_at_bucket_boundaries(db: str, store: TraceStore) -> None:
    """Spans a nanosecond apart, so that buckets start exactly at a span; one span from a wrong clock's future
    in every batch, which must not stop buckets from moving on; then retention drops whole buckets."""
    sent = 0
    future = T0 + 10 * 365 * 86_400 * SECOND
    for _ in range(26):
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for i in range(500):
            sent += 1
            span = spans.add(
                trace_id=sent.to_bytes(16, "big"),
                span_id=sent.to_bytes(8, "big"),
                start_time_unix_nano=future + sent if i == 250 else T0 + sent,
            )
            span.attributes.add(key="n", value=AnyValue(int_value=sent))
            for a in range(11):
                span.attributes.add(key=f"a{a}", value=AnyValue(int_value=sent % (a + 2)))
        assert store.ingest_request(request) == 500

    def buckets() -> list[tuple[int, int]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT b, start_k FROM buckets ORDER BY b").fetchall()

    starts = [start for _, start in buckets()]
    assert len(starts) >= 4
    for start in starts[1:]:
        for n in (start - T0 - 1, start - T0, start - T0 + 1):
            assert found(store, tags={"n": str(n)}) == [f"{n:032x}"]
    assert len(store.find_traces(TraceQuery(start_us=future // 1000, limit=100))) == 26

    # Retention up to the middle of the third bucket: the first two go, postings and all.
    cutoff = starts[2] + 10
    old = [n for n in range(1, sent + 1) if n % 500 != 251 and T0 + n < cutoff]
    assert store.enforce_retention(now_ns=cutoff + int(store.retention_secs * SECOND)) == len(old)
    (first, _), *_ = buckets()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM tags WHERE b < ?", (first,)).fetchone()[0] == 0
    assert found(store, tags={"n": str(old[-1])}) == []
    assert found(store, tags={"n": str(old[-1] + 1)}) == [f"{old[-1] + 1:032x}"]
    # A straggler older than every bucket left belongs to the first of them.
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\xee" * 16, span_id=b"\xee" * 8, start_time_unix_nano=T0 + 5)
    )
    span.attributes.add(key="n", value=AnyValue(int_value=-1))
    store.ingest_request(request)
    assert found(store, tags={"n": "-1"}) == ["ee" * 16]


def test_trace_lookup(store: TraceStore) -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes.fromhex("00000000000000000000000000000abc"), span_id=b"\x01" * 8, name="short id"
    )
    store.ingest_request(request)
    assert [s.name for s in store.trace("00000000000000000000000000000abc")] == ["short id"]
    assert [s.name for s in store.trace("ABC")] == ["short id"]  # Jaeger pads 64-bit ids
    assert store.trace("00000000000000000000000000000abd") == []
    assert store.trace("not hex") == []
    assert store.trace("") == []
    assert store.trace("1" * 33) == []


def test_a_hash_collision_is_not_a_match(store: TraceStore) -> None:
    """Tag search finds candidates by CRC-32; two values with the same CRC must still be told apart."""
    seen: dict[int, str] = {}
    rng = random.Random(1)
    for _ in range(1_000_000):  # a birthday search: a collision comes after some 80,000 random values
        value = rng.randbytes(12).hex()
        h = crc32(KeyValue(key="k", value=AnyValue(string_value=value)).SerializeToString())
        if h in seen:
            first, second = seen[h], value
            break
        seen[h] = value
    else:
        pytest.fail("no CRC-32 collision among a million values")
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for n, value in enumerate([first, second], start=1):
        span = spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), start_time_unix_nano=T0 + n)
        span.attributes.add(key="k", value=AnyValue(string_value=value))
    store.ingest_request(request)
    assert found(store, tags={"k": first}) == [f"{1:032x}"]
    assert found(store, tags={"k": second}) == [f"{2:032x}"]


# -- search against an oracle, over enough spans to close buckets --------------------------------------------


@dataclass
class Planned:
    trace_id: bytes
    span_id: bytes
    parent: bytes
    service: str
    name: str
    start: int
    end: int
    error: bool
    attributes: dict[str, Any]


SERVICES = {f"svc-{i}": ("eu" if i % 2 else "us") for i in range(6)}


def string_form(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def plan_spans(rng: random.Random, traces: int) -> list[Planned]:
    spans: list[Planned] = []
    starts: set[int] = set()
    for t in range(traces):
        trace_id = rng.randbytes(16)
        trace_start = T0 + t * 50 * MS + rng.randrange(MS)
        parent = b""
        for depth in range(rng.randint(4, 10)):
            start = trace_start + depth * rng.randrange(1, 5 * MS)
            while start in starts:  # unique starts: the expected order has no ties
                start += 1
            starts.add(start)
            service = rng.choice(list(SERVICES))
            span = Planned(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent=parent,
                service=service,
                name=f"op-{service[-1]}-{rng.randrange(3)}",
                start=start,
                end=start + rng.randrange(100 * MS),
                error=rng.random() < 0.03,
                attributes={
                    "http.method": rng.choice(["GET", "GET", "POST"]),
                    "http.status_code": rng.choice([200, 200, 200, 404, 500]),
                    "user.id": f"user-{rng.randrange(500)}",
                    "shard": rng.randrange(50),
                    "flag": rng.random() < 0.5,
                    "score": rng.choice([0.5, 1.25, 2.0]),
                    "req": f"req-{len(spans)}",
                    "peer.port": rng.randrange(30000, 60000),
                    "bytes": rng.randrange(10**6),
                    "route": f"/r/{rng.randrange(20)}",
                    "retry": rng.randrange(3),
                    "zone": rng.choice(["a", "b", "c"]),
                },
            )
            spans.append(span)
            parent = span.span_id
    return spans


def request_of(spans: Sequence[Planned]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for service, region in SERVICES.items():
        mine = [s for s in spans if s.service == service]
        if not mine:
            continue
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        resource_spans.resource.attributes.add(key="region", value=AnyValue(string_value=region))
        scope_spans = resource_spans.scope_spans.add()
        for s in mine:
            span = scope_spans.spans.add(
                trace_id=s.trace_id,
                span_id=s.span_id,
                parent_span_id=s.parent,
                name=s.name,
                kind=PbSpan.SPAN_KIND_SERVER,
                start_time_unix_nano=s.start,
                end_time_unix_nano=s.end,
            )
            if s.error:
                span.status.code = 2
            for key, value in s.attributes.items():
                any_value = span.attributes.add(key=key).value
                if isinstance(value, bool):
                    any_value.bool_value = value
                elif isinstance(value, int):
                    any_value.int_value = value
                elif isinstance(value, float):
                    any_value.double_value = value
                else:
                    any_value.string_value = value
    return request


def oracle(spans: Sequence[Planned], query: TraceQuery) -> list[str]:
    """The traces `query` must find, by brute force over what was sent."""

    def matches(s: Planned) -> bool:
        if query.service is not None and s.service != query.service:
            return False
        if query.operation is not None and s.name != query.operation:
            return False
        for key, value in query.tags.items():
            if key == "error" and value == "true":
                continue
            resource = {"service.name": s.service, "region": SERVICES[s.service]}
            if not ((key in s.attributes and string_form(s.attributes[key]) == value) or resource.get(key) == value):
                return False
        if (query.errors_only or query.tags.get("error") == "true") and not s.error:
            return False
        duration_us = (s.end - s.start) // 1000
        if query.min_duration_us is not None and duration_us < query.min_duration_us:
            return False
        if query.max_duration_us is not None and duration_us > query.max_duration_us:
            return False
        if query.start_us is not None and s.start < query.start_us * 1000:
            return False
        return query.end_us is None or s.start <= query.end_us * 1000 + 999

    newest: dict[bytes, int] = {}
    for s in spans:
        if matches(s):
            newest[s.trace_id] = max(newest.get(s.trace_id, 0), s.start)
    ranked = sorted(newest, key=lambda trace_id: newest[trace_id], reverse=True)
    return [trace_id.hex() for trace_id in ranked[: query.limit]]


def test_search_matches_a_brute_force_oracle(db: str, store: TraceStore) -> None:
    rng = random.Random(20240607)
    spans = plan_spans(rng, 1300)
    # Sent in batches as time goes, a tenth of them one batch late, and some very late at the end: those
    # arrive after their bucket has been closed.
    spans.sort(key=lambda s: s.start)
    third, half = len(spans) // 3, len(spans) // 2
    very_late = rng.sample(spans[:third], 30) + rng.sample(spans[third:half], 30)  # in the first two buckets
    rest = [s for s in spans if s not in very_late]
    batches: list[list[Planned]] = [rest[i : i + 300] for i in range(0, len(rest), 300)]
    for i in range(len(batches) - 1):
        for s in rng.sample(batches[i], 30):
            batches[i].remove(s)
            batches[i + 1].append(s)
    batches.append(very_late)
    assert sum(store.ingest_request(request_of(batch)) for batch in batches) == len(spans)
    with sqlite3.connect(db) as conn:  # the test is only worth it if postings exist, late ones included
        closed = conn.execute("SELECT count(*) FROM buckets WHERE closed = 1").fetchone()[0]
    assert closed >= 2

    by_trace: dict[str, int] = {}
    for s in spans:
        by_trace[s.trace_id.hex()] = by_trace.get(s.trace_id.hex(), 0) + 1
    late, later = very_late[0], very_late[-1]
    t_mid = spans[len(spans) // 2].start // 1000
    queries = [
        TraceQuery(),
        TraceQuery(limit=7),
        TraceQuery(limit=10_000),
        *(TraceQuery(service=service) for service in SERVICES),
        TraceQuery(service="svc-1", operation="op-1-2"),
        TraceQuery(operation="op-2-0", limit=50),
        TraceQuery(tags={"http.method": "POST"}),
        TraceQuery(tags={"user.id": "user-17"}, limit=1000),
        TraceQuery(tags={"user.id": "user-400"}, limit=1000),
        TraceQuery(tags={"shard": "7"}, limit=1000),
        TraceQuery(tags={"flag": "true", "shard": "3"}, limit=1000),
        TraceQuery(tags={"score": "1.25"}),
        TraceQuery(tags={"region": "eu"}),
        TraceQuery(tags={"region": "eu", "http.method": "GET", "zone": "c"}, limit=100),
        TraceQuery(service="svc-2", tags={"user.id": "user-3"}, limit=1000),
        TraceQuery(tags={"req": f"req-{spans.index(late)}"}),
        TraceQuery(tags={"req": late.attributes["req"]}),
        TraceQuery(tags={"user.id": str(late.attributes["user.id"]), "shard": str(late.attributes["shard"])}),
        TraceQuery(tags={"req": later.attributes["req"]}),
        TraceQuery(tags={"user.id": str(later.attributes["user.id"])}, limit=1000),
        TraceQuery(errors_only=True, limit=1000),
        TraceQuery(service="svc-0", errors_only=True),
        TraceQuery(tags={"error": "true", "http.status_code": "404"}, limit=1000),
        TraceQuery(min_duration_us=99_000, limit=1000),
        TraceQuery(min_duration_us=10_000, max_duration_us=10_999, service="svc-4", limit=1000),
        TraceQuery(start_us=t_mid, end_us=t_mid + 2_000_000, limit=1000),
        TraceQuery(start_us=t_mid, end_us=t_mid + 5_000_000, tags={"shard": "11"}, limit=1000),
        TraceQuery(end_us=T0 // 1000 + 3_000_000, tags={"user.id": "user-5"}, limit=1000),
        TraceQuery(service="svc-3", start_us=t_mid, tags={"http.status_code": "500"}, errors_only=True),
    ]
    for query in queries:
        expected = oracle(spans, query)
        traces = store.find_traces(query)
        assert [t[0].trace_id for t in traces] == expected, query
        assert [len(t) for t in traces] == [by_trace[trace_id] for trace_id in expected], query
    for span in very_late:
        assert found(store, tags={"req": span.attributes["req"]}) == [span.trace_id.hex()]


def test_postings_survive_reopening(db: str) -> None:
    rng = random.Random(7)
    spans = sorted(plan_spans(rng, 900), key=lambda s: s.start)
    half = len(spans) // 2
    store = TraceStore(db)
    for i in range(0, half, 250):
        store.ingest_request(request_of(spans[i : min(i + 250, half)]))
    store.close()
    store = TraceStore(db)  # picks up its buckets where it left them
    try:
        for i in range(half, len(spans), 250):
            store.ingest_request(request_of(spans[i : i + 250]))
        for query in [
            TraceQuery(tags={"user.id": "user-9"}, limit=1000),
            TraceQuery(tags={"shard": "4"}, limit=1000),
            TraceQuery(service="svc-5", limit=1000),
        ]:
            assert [t[0].trace_id for t in store.find_traces(query)] == oracle(spans, query)
        assert store.stats()["spans"] == len(spans)
    finally:
        store.close()


# -- retention ------------------------------------------------------------------------------------------------


def test_retention_by_age(db: str) -> None:
    store = TraceStore(db, retention_secs=3600)
    try:
        sdk = Sdk()
        old_only = sdk.tracer("legacy")
        web, api = sdk.tracer("web"), sdk.tracer("api")
        ids = []
        for i in range(10):
            root = web.start_span("GET /", start_time=T0 + i * SECOND)
            child = api.start_span(
                f"call {i}", context=trace_api.set_span_in_context(root), start_time=T0 + i * SECOND + 10
            )
            child.end(end_time=T0 + i * SECOND + 20)
            root.end(end_time=T0 + i * SECOND + 30)
            ids.append(trace_hex(root))
        old_only.start_span("cron", start_time=T0 + 2 * SECOND).end(end_time=T0 + 3 * SECOND)
        store.ingest_request(sdk.take())
        assert store.stats() == {"spans": 21, "traces": 11, "bytes": store.stats()["bytes"]}

        # Now is an hour after T0 + 5 s: what started before T0 + 5 s goes.
        assert store.enforce_retention(now_ns=T0 + 5 * SECOND + 3600 * SECOND) == 11
        assert found(store) == ids[:4:-1]
        assert store.trace(ids[4]) == []
        assert store.services() == ["api", "web"]
        assert store.operations("api") == [(f"call {i}", 1) for i in range(5, 10)]
        assert store.stats()["spans"] == 10
        assert store.enforce_retention(now_ns=T0 + 5 * SECOND + 3600 * SECOND) == 0
        assert store.enforce_retention(now_ns=T0 + 100 * SECOND + 3600 * SECOND) == 10
        assert store.services() == []
        assert found(store) == []
    finally:
        store.close()


def test_retention_by_size_shrinks_the_file_and_keeps_it_bounded(db: str) -> None:
    max_bytes = 3 * 2**20
    store = TraceStore(db, retention_secs=10 * 365 * 86400, max_bytes=max_bytes)
    rng = random.Random(5)
    sent = 0

    def send(batches: int) -> None:
        nonlocal sent
        for _ in range(batches):
            request = ExportTraceServiceRequest()
            spans = request.resource_spans.add().scope_spans.add().spans
            for _ in range(100):
                sent += 1
                span = spans.add(
                    trace_id=sent.to_bytes(16, "big"),
                    span_id=sent.to_bytes(8, "big"),
                    name="fat",
                    start_time_unix_nano=T0 + sent * MS,
                    end_time_unix_nano=T0 + sent * MS + 1,
                )
                span.attributes.add(key="payload", value=AnyValue(string_value=rng.randbytes(1500).hex()))
                span.attributes.add(key="n", value=AnyValue(int_value=sent))
            store.ingest_request(request)

    try:
        send(30)  # ~9 MB
        assert os.path.getsize(db) > 2 * max_bytes
        deleted = store.enforce_retention(now_ns=T0)
        assert deleted > 0
        assert store.stats()["bytes"] <= max_bytes
        assert os.path.getsize(db) <= max_bytes  # the file itself gave the space back
        remaining = store.stats()["spans"]
        assert remaining == sent - deleted
        assert store.trace(f"{sent:032x}") != []  # the newest stay
        assert store.trace(f"{1:032x}") == []  # the oldest went first
        assert found(store, tags={"n": str(sent)}) == [f"{sent:032x}"]
        for _ in range(4):  # and it stops growing
            send(10)
            store.enforce_retention(now_ns=T0)
            assert os.path.getsize(db) <= max_bytes
            assert store.stats()["bytes"] <= max_bytes
    finally:
        store.close()


# -- concurrency and bad input --------------------------------------------------------------------------------


def test_concurrent_writers_and_a_reader(store: TraceStore) -> None:
    writers, batches, per_batch = 4, 15, 40
    barrier = threading.Barrier(writers + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    reads = 0

    def write(w: int) -> None:
        try:
            barrier.wait()
            for b in range(batches):
                request = ExportTraceServiceRequest()
                resource_spans = request.resource_spans.add()
                resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"w{w}"))
                spans = resource_spans.scope_spans.add().spans
                for i in range(per_batch):
                    n = (w * batches + b) * per_batch + i + 1
                    span = spans.add(
                        trace_id=n.to_bytes(16, "big"),
                        span_id=n.to_bytes(8, "big"),
                        name=f"op{i % 3}",
                        start_time_unix_nano=T0 + (b * per_batch + i) * MS,  # writers collide on start times
                    )
                    span.attributes.add(key="n", value=AnyValue(int_value=n))
                assert store.ingest_request(request) == per_batch
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        nonlocal reads
        try:
            barrier.wait()
            while not done.is_set():
                store.find_traces(TraceQuery(service="w1", limit=5))
                store.find_traces(TraceQuery(tags={"n": "7"}))
                store.services()
                store.stats()
                reads += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=read)
    for thread in [*threads, reader]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert errors == []
    assert reads > 0
    total = writers * batches * per_batch
    assert store.stats()["spans"] == total
    for n in range(1, total + 1):
        (span,) = store.trace(f"{n:032x}")
        assert span.attributes == {"n": n}
    assert store.services() == [f"w{w}" for w in range(writers)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand so that it can hold what protobuf would refuse."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",  # no such field
        b"\x0a\x05abc",  # a field longer than the message
        b"\x0a",  # a length that never comes
        # A span whose name is not UTF-8: protobuf parses it only with the message definition at hand.
        _field(1, _field(2, _field(2, _field(1, bytes(16)) + _field(2, bytes(8)) + _field(5, b"\xff\xfe")))),
    ],
)
def test_garbage_is_refused_and_the_store_carries_on(store: TraceStore, garbage: bytes) -> None:
    sdk = Sdk()
    rich_trace(sdk)
    store.ingest_request(sdk.take())
    before = store.stats()
    with pytest.raises(ValueError, match="not an OTLP ExportTraceServiceRequest"):
        store.ingest(garbage)
    assert store.stats() == before
    sdk.tracer("after").start_span("fine", start_time=T0).end(end_time=T0 + 1)
    assert store.ingest(sdk.take().SerializeToString()) == 1
    assert found(store, service="after") != []
    assert store.stats()["spans"] == before["spans"] + 1


def test_invalid_ids_are_skipped(store: TraceStore) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=bytes(15), span_id=bytes(8), name="short trace id")
    spans.add(trace_id=bytes(16), span_id=bytes(7), name="short span id")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="fine")
    assert store.ingest_request(request) == 1
    assert store.ingest_request(ExportTraceServiceRequest()) == 0
    assert [s.name for s in store.trace("01" * 16)] == ["fine"]
    assert store.stats()["spans"] == 1


def test_a_closed_store_refuses_work(db: str) -> None:
    store = TraceStore(db)
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.services()


def test_constructor_checks_its_limits(db: str) -> None:
    with pytest.raises(ValueError, match="retention_secs"):
        TraceStore(db, retention_secs=0)
    with pytest.raises(ValueError, match="max_bytes"):
        TraceStore(db, max_bytes=0)


def test_unknown_schema_versions_are_refused(db: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match="schema version 99"):
        TraceStore(db)
