"""The hand-written OTLP encoder (SPEC §6.4, §6.5) against the official opentelemetry-proto messages.

What `encode_export_request` produces is decoded with the official `ExportTraceServiceRequest` and compared
field by field; spans are also compared byte for byte with `SerializeToString()` of the same message built
with the official classes (both write fields in field-number order and leave proto3 defaults out).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, SpanFlags, Status

from sentinel.tracing import otlp
from sentinel.tracing.otlp import (
    AttrValue,
    SpanKind,
    StatusCode,
    encode_attributes,
    encode_export_request,
    encode_resource,
    encode_scope,
    encode_span,
)

Attrs = list[tuple[str, AttrValue]]
Event = tuple[int, str, Attrs]

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
PARENT_ID = bytes.fromhex("b7ad6b7169203331")
CHILD_ID = bytes.fromhex("53995c3f42cd8ad8")
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

# Every kind of attribute value, including the ones whose encoding has an edge (defaults that a oneof
# still writes, two-byte lengths, ten-byte negative varints, non-finite doubles, non-ASCII text).
EVERY_TYPE: Attrs = [
    ("str", "GET"),
    ("str.empty", ""),
    ("str.unicode", "héllo ☃ 𝄞 — 日本"),
    ("str.long", "x" * 300),
    ("str.127", "y" * 127),
    ("str.128", "z" * 128),
    ("bool.true", True),
    ("bool.false", False),
    ("int.zero", 0),
    ("int.one", 1),
    ("int.127", 127),
    ("int.128", 128),
    ("int.status", 200),
    ("int.port", 51234),
    ("int.big", 1 << 40),
    ("int.max", INT64_MAX),
    ("int.minus_one", -1),
    ("int.negative", -200),
    ("int.min", INT64_MIN),
    ("float", 1.5),
    ("float.zero", 0.0),
    ("float.negative_zero", -0.0),
    ("float.negative", -123.456e-7),
    ("float.inf", math.inf),
    ("float.minus_inf", -math.inf),
    ("float.nan", math.nan),
    ("bytes", b"\x00\x01\xfe\xff"),
    ("bytes.empty", b""),
    ("bytes.long", bytes(range(256))),
    ("array", ["a", "", "☃"]),
    ("array.empty", []),
    ("", "empty key"),
    ("ключ.ünïcode", "value"),
    ("k" * 200, "long key"),
]


# --- building the same messages with the official classes, and reading them back -------------------------


def official_value(value: AttrValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=item) for item in value]))


def official_attributes(attrs: Iterable[tuple[str, AttrValue]]) -> list[KeyValue]:
    return [KeyValue(key=key, value=official_value(value)) for key, value in attrs]


def official_span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Attrs = [],  # noqa: B006 - never mutated
    status_code: int = 0,
    status_message: str = "",
    trace_state: str = "",
    flags: int = 0,
    events: Sequence[Event] = (),
) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,  # type: ignore[arg-type]  # the stub wants the enum's NewType, the value is a plain int
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        attributes=official_attributes(attributes),
        trace_state=trace_state,
        flags=flags,
        events=[
            Span.Event(time_unix_nano=time_ns, name=event_name, attributes=official_attributes(event_attrs))
            for time_ns, event_name, event_attrs in events
        ],
    )
    if status_code or status_message:  # the encoder writes Status only when it holds something
        span.status.CopyFrom(Status(code=status_code, message=status_message))  # type: ignore[arg-type]
    return span


def decoded_value(value: AnyValue) -> AttrValue:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value
    assert which == "array_value", which
    items = []
    for item in value.array_value.values:
        assert item.WhichOneof("value") == "string_value"
        items.append(item.string_value)
    return items


def comparable(value: AttrValue) -> tuple[type, object]:
    """The type and value, with doubles by their bits (NaN equals itself, -0.0 differs from 0.0)."""
    if isinstance(value, float):
        return float, struct.pack("<d", value)
    return type(value), value


def assert_attributes(got: Iterable[KeyValue], want: Iterable[tuple[str, AttrValue]]) -> None:
    got_list = [(kv.key, comparable(decoded_value(kv.value))) for kv in got]
    assert got_list == [(key, comparable(value)) for key, value in want]


def request_of(*spans: bytes, resource: bytes = b"", scope: bytes = b"") -> ExportTraceServiceRequest:
    request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(
        encode_export_request(resource, scope, spans)
    )
    return request


def only_scope_spans(request: ExportTraceServiceRequest) -> ScopeSpans:
    assert len(request.resource_spans) == 1
    resource_spans = request.resource_spans[0]
    assert resource_spans.HasField("resource")
    assert len(resource_spans.scope_spans) == 1
    scope_spans: ScopeSpans = resource_spans.scope_spans[0]
    assert scope_spans.HasField("scope")
    return scope_spans


# --- decoding what we send -----------------------------------------------------------------------------------

SERVER_ATTRS: Attrs = [
    ("http.request.method", "GET"),
    ("url.path", "/api/v1/users/12345"),
    ("url.scheme", "http"),
    ("http.route", "/api/*"),
    ("http.response.status_code", 503),
    ("server.address", "example.com"),
    ("server.port", 8080),
    ("client.address", "203.0.113.7"),
    ("network.peer.address", "203.0.113.7"),
    ("network.peer.port", 51234),
    ("network.protocol.version", "1.1"),
    ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0"),
    ("http.request.body.size", 0),
    ("http.response.body.size", 1532),
    ("error.type", "503"),
    ("sentinel.correlation_id", "2Qx7abcDEFg"),
]
RESOURCE_ATTRS: Attrs = [
    ("service.name", "sentinel"),
    ("service.version", "0.1.0"),
    ("service.instance.id", "627cc493-f310-47de-96bd-71410b7dec09"),
    ("host.name", "hôte-1"),
    ("telemetry.sdk.name", "sentinel"),
    ("telemetry.sdk.language", "python"),
    ("process.pid", 4242),
    ("deployment.tags", ["blue", "eu"]),
]


def test_export_request_decodes_with_the_official_classes() -> None:
    start = 1_700_000_000_123_456_789
    server = encode_span(
        TRACE_ID,
        SPAN_ID,
        PARENT_ID,
        "GET /api/*",
        SpanKind.SERVER,
        start,
        start + 2_500_000,
        SERVER_ATTRS,
        status_code=StatusCode.ERROR,
        status_message="upstream unavailable",
        trace_state="vendor=abc,other=x:y",
        flags=0x301,
    )
    client = encode_span(
        TRACE_ID,
        CHILD_ID,
        SPAN_ID,
        "GET",
        SpanKind.CLIENT,
        start + 100_000,
        start + 2_400_000,
        [("http.request.resend_count", 1), ("url.full", "http://10.0.0.1:8080/api/v1/users/12345")],
        status_code=StatusCode.OK,
        flags=0x01,
        events=[
            (start + 200_000, "exception", [("exception.type", "ConnectionResetError"), ("retry", True)]),
            (start + 300_000, "", []),
            (0, "no time", [("n", -5)]),
        ],
    )
    root = encode_span(TRACE_ID, PARENT_ID, b"", "root", SpanKind.INTERNAL, 1, UINT64_MAX)
    resource = encode_resource(RESOURCE_ATTRS)
    scope = encode_scope("sentinel", "0.1.0")

    request = request_of(server, client, root, resource=resource, scope=scope)

    resource_spans = request.resource_spans[0]
    assert_attributes(resource_spans.resource.attributes, RESOURCE_ATTRS)
    assert resource_spans.resource.dropped_attributes_count == 0
    assert resource_spans.schema_url == ""
    scope_spans = only_scope_spans(request)
    assert scope_spans.scope.name == "sentinel"
    assert scope_spans.scope.version == "0.1.0"
    assert len(scope_spans.spans) == 3
    got_server, got_client, got_root = scope_spans.spans

    assert got_server.trace_id == TRACE_ID
    assert got_server.span_id == SPAN_ID
    assert got_server.parent_span_id == PARENT_ID
    assert got_server.name == "GET /api/*"
    assert got_server.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert got_server.start_time_unix_nano == start
    assert got_server.end_time_unix_nano == start + 2_500_000
    assert_attributes(got_server.attributes, SERVER_ATTRS)
    assert got_server.HasField("status")
    assert got_server.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert got_server.status.message == "upstream unavailable"
    assert got_server.trace_state == "vendor=abc,other=x:y"
    assert got_server.flags == 0x301
    assert got_server.flags & 0xFF == 0x01  # W3C sampled
    assert got_server.flags & SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
    assert got_server.flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    assert list(got_server.events) == []
    assert list(got_server.links) == []

    assert got_client.span_id == CHILD_ID
    assert got_client.parent_span_id == SPAN_ID
    assert got_client.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert got_client.status.code == Status.StatusCode.STATUS_CODE_OK
    assert got_client.status.message == ""
    assert got_client.trace_state == ""
    assert got_client.flags == 0x01
    assert len(got_client.events) == 3
    first, second, third = got_client.events
    assert first.time_unix_nano == start + 200_000
    assert first.name == "exception"
    assert_attributes(first.attributes, [("exception.type", "ConnectionResetError"), ("retry", True)])
    assert second.time_unix_nano == start + 300_000
    assert second.name == ""
    assert list(second.attributes) == []
    assert third.time_unix_nano == 0
    assert third.name == "no time"
    assert_attributes(third.attributes, [("n", -5)])

    assert got_root.parent_span_id == b""
    assert got_root.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    assert got_root.start_time_unix_nano == 1
    assert got_root.end_time_unix_nano == UINT64_MAX
    assert not got_root.HasField("status")
    assert got_root.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert got_root.flags == 0


def test_every_attribute_type_round_trips() -> None:
    span = encode_span(TRACE_ID, SPAN_ID, b"", "attrs", SpanKind.SERVER, 10, 20, EVERY_TYPE)
    (got,) = only_scope_spans(request_of(span)).spans
    assert_attributes(got.attributes, EVERY_TYPE)
    assert got.attributes[0].value.WhichOneof("value") == "string_value"
    assert got.attributes[1].value.WhichOneof("value") == "string_value"  # "" is still a string value
    assert got.attributes[7].value.WhichOneof("value") == "bool_value"  # False too
    assert got.attributes[8].value.WhichOneof("value") == "int_value"  # and 0


def test_every_attribute_type_in_resource_and_events() -> None:
    span = encode_span(TRACE_ID, SPAN_ID, b"", "e", SpanKind.SERVER, 10, 20, events=[(15, "ev", EVERY_TYPE)])
    scope_spans = only_scope_spans(request_of(span, resource=encode_resource(EVERY_TYPE)))
    assert_attributes(scope_spans.spans[0].events[0].attributes, EVERY_TYPE)
    assert_attributes(Resource.FromString(encode_resource(EVERY_TYPE)).attributes, EVERY_TYPE)


def test_times_cover_the_whole_uint64_range() -> None:
    for start, end in [(0, 0), (0, 1), (1 << 63, UINT64_MAX), (UINT64_MAX, 0), (2**62 + 12345, 2**63 - 1)]:
        got = Span.FromString(encode_span(TRACE_ID, SPAN_ID, b"", "t", SpanKind.SERVER, start, end))
        assert (got.start_time_unix_nano, got.end_time_unix_nano) == (start, end)


def test_unicode_and_empty_strings() -> None:
    got = Span.FromString(
        encode_span(
            TRACE_ID,
            SPAN_ID,
            b"",
            "GET /naïve/☃/𝄞",
            SpanKind.SERVER,
            1,
            2,
            [("ключ", "значение"), ("", "")],
            status_code=StatusCode.ERROR,
            status_message="échec ☠",
            trace_state="k=v",
        )
    )
    assert got.name == "GET /naïve/☃/𝄞"
    assert_attributes(got.attributes, [("ключ", "значение"), ("", "")])
    assert got.status.message == "échec ☠"
    empty = Span.FromString(encode_span(TRACE_ID, SPAN_ID, b"", "", 0, 0, 0))
    assert empty.name == ""
    assert empty.kind == Span.SpanKind.SPAN_KIND_UNSPECIFIED
    assert empty == Span(trace_id=TRACE_ID, span_id=SPAN_ID)


def test_lone_surrogates_are_replaced_not_raised() -> None:
    bad = "a\udcffb"  # what a surrogateescape decode of a non-UTF-8 byte gives
    got = Span.FromString(
        encode_span(TRACE_ID, SPAN_ID, b"", bad, SpanKind.SERVER, 1, 2, [(bad, bad), ("k", [bad])], 2, bad, bad)
    )
    assert got.name == "a?b"
    assert_attributes(got.attributes, [("a?b", "a?b"), ("k", ["a?b"])])
    assert got.status.message == "a?b"
    assert got.trace_state == "a?b"


def test_status_and_flags_are_left_out_when_unset() -> None:
    span = encode_span(TRACE_ID, SPAN_ID, PARENT_ID, "n", SpanKind.CLIENT, 1, 2)
    got = Span.FromString(span)
    assert not got.HasField("status")
    assert got.flags == 0
    assert span == official_span(TRACE_ID, SPAN_ID, PARENT_ID, "n", SpanKind.CLIENT, 1, 2).SerializeToString()
    message_only = Span.FromString(encode_span(TRACE_ID, SPAN_ID, b"", "n", 1, 1, 2, status_message="why"))
    assert message_only.HasField("status")
    assert message_only.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert message_only.status.message == "why"


def test_enum_values_match_the_proto() -> None:
    assert SpanKind.INTERNAL == Span.SpanKind.SPAN_KIND_INTERNAL
    assert SpanKind.SERVER == Span.SpanKind.SPAN_KIND_SERVER
    assert SpanKind.CLIENT == Span.SpanKind.SPAN_KIND_CLIENT
    assert SpanKind.PRODUCER == Span.SpanKind.SPAN_KIND_PRODUCER
    assert SpanKind.CONSUMER == Span.SpanKind.SPAN_KIND_CONSUMER
    assert StatusCode.UNSET == Status.StatusCode.STATUS_CODE_UNSET
    assert StatusCode.OK == Status.StatusCode.STATUS_CODE_OK
    assert StatusCode.ERROR == Status.StatusCode.STATUS_CODE_ERROR


def test_scope_and_resource_messages() -> None:
    assert InstrumentationScope.FromString(encode_scope("sentinel", "1.2.3")) == InstrumentationScope(
        name="sentinel", version="1.2.3"
    )
    assert encode_scope("sentinel") == InstrumentationScope(name="sentinel").SerializeToString()
    assert encode_scope("") == b""
    assert encode_resource([]) == b""
    assert (
        encode_resource(RESOURCE_ATTRS) == Resource(attributes=official_attributes(RESOURCE_ATTRS)).SerializeToString()
    )
    scope_spans = only_scope_spans(request_of())  # empty batch, empty resource and scope: still present
    assert list(scope_spans.spans) == []
    assert scope_spans.scope == InstrumentationScope()


# --- byte for byte against SerializeToString() -------------------------------------------------------------

FIXED_SPANS: list[dict[str, object]] = [
    {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "parent_span_id": PARENT_ID,
        "name": "GET /api/*",
        "kind": SpanKind.SERVER,
        "start_ns": 1_700_000_000_123_456_789,
        "end_ns": 1_700_000_000_125_956_789,
        "attributes": SERVER_ATTRS,
        "status_code": StatusCode.ERROR,
        "status_message": "",
        "trace_state": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "flags": 0x301,
        "events": [],
    },
    {
        "trace_id": TRACE_ID,
        "span_id": CHILD_ID,
        "parent_span_id": SPAN_ID,
        "name": "agent waf request_headers",
        "kind": SpanKind.CLIENT,
        "start_ns": UINT64_MAX - 1,
        "end_ns": UINT64_MAX,
        "attributes": EVERY_TYPE,
        "status_code": StatusCode.OK,
        "status_message": "fine ✓",
        "trace_state": "",
        "flags": 0x1FF,
        "events": [(UINT64_MAX, "ev", EVERY_TYPE), (0, "", []), (1, "x", [("a", 1)])],
    },
    {
        "trace_id": TRACE_ID,
        "span_id": PARENT_ID,
        "parent_span_id": b"",
        "name": "n" * 200,
        "kind": SpanKind.CONSUMER,
        "start_ns": 5,
        "end_ns": 0,
        "attributes": [("k", "v" * 20_000), ("big", b"\xab" * 70_000)],
        "status_code": 0,
        "status_message": "",
        "trace_state": "",
        "flags": 0xFFFFFFFF,
        "events": [],
    },
]


def encode_fixed(spec: dict[str, object]) -> bytes:
    return encode_span(**spec)  # type: ignore[arg-type]


def official_fixed(spec: dict[str, object]) -> Span:
    return official_span(**spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", FIXED_SPANS, ids=["server", "client-every-type", "root-long-fields"])
def test_span_bytes_equal_official_serialization(spec: dict[str, object]) -> None:
    encoded = encode_fixed(spec)
    official = official_fixed(spec)
    assert encoded == official.SerializeToString()
    assert Span.FromString(encoded).SerializeToString() == encoded


def test_request_bytes_equal_official_serialization() -> None:
    spans = [encode_fixed(spec) for spec in FIXED_SPANS]
    official = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=official_attributes(RESOURCE_ATTRS)),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="sentinel", version="0.1.0"),
                        spans=[official_fixed(spec) for spec in FIXED_SPANS],
                    )
                ],
            )
        ]
    )
    encoded = encode_export_request(encode_resource(RESOURCE_ATTRS), encode_scope("sentinel", "0.1.0"), spans)
    assert encoded == official.SerializeToString()


# --- framed span buffers (the worker -> supervisor hand-off) -------------------------------------------------


def framing_spans() -> list[bytes]:
    """Spans whose bodies straddle the one- and two-byte length boundaries (127, 128 bytes) and beyond."""
    spans = []
    for name_size in (0, 1, 60, 80, 90, 200, 20_000):
        spans.append(encode_span(TRACE_ID, SPAN_ID, b"", "n" * name_size, SpanKind.SERVER, 1, 2, []))
    assert {len(s) < 0x80 for s in spans} == {True, False}
    assert any(0x80 <= len(s) < 0x4000 for s in spans)
    assert any(len(s) >= 0x4000 for s in spans)
    return spans


def test_framed_spans_are_the_scope_spans_field_and_concatenate() -> None:
    spans = framing_spans()
    framed = otlp.frame_spans(spans)
    # Exactly the official serializer's bytes of ScopeSpans.spans (a ScopeSpans holding only them).
    assert framed == ScopeSpans(spans=[Span.FromString(s) for s in spans]).SerializeToString()
    assert otlp.count_framed_spans(framed) == len(spans)
    assert otlp.unframe_spans(framed) == spans
    assert otlp.frame_spans([]) == b""
    assert otlp.count_framed_spans(b"") == 0
    # Two workers' buffers in one request: the spans of both, in order.
    first, second = otlp.frame_spans(spans[:3]), otlp.frame_spans(spans[3:])
    request = ExportTraceServiceRequest.FromString(
        otlp.encode_framed_export_request(encode_resource(RESOURCE_ATTRS), encode_scope("sentinel"), [first, second])
    )
    assert [s.SerializeToString() for s in only_scope_spans(request).spans] == spans
    assert otlp.encode_framed_export_request(b"", b"", [framed]) == encode_export_request(b"", b"", spans)


def test_framed_spans_split_at_span_boundaries() -> None:
    spans = framing_spans()
    framed = otlp.frame_spans(spans)
    for n in range(len(spans) + 2):
        cut = otlp.framed_spans_end(framed, 0, n)
        head, rest = framed[:cut], framed[cut:]
        assert head + rest == framed
        assert otlp.unframe_spans(head) == spans[:n]
        assert otlp.unframe_spans(rest) == spans[n:]


@pytest.mark.parametrize(
    "broken",
    [
        b"\x0a\x01x",  # another field's tag
        b"\x12",  # no length
        b"\x12\x05abc",  # shorter than its length
        b"\x12\x80",  # length varint cut off
        b"\x12\xff\xff\xff\xff\xff\x01",  # length varint too long for a span
    ],
)
def test_broken_framing_is_an_error(broken: bytes) -> None:
    good = otlp.frame_spans([b"\x0a\x00"])
    with pytest.raises(ValueError, match="span"):
        otlp.count_framed_spans(good + broken)
    with pytest.raises(ValueError, match="span"):
        otlp.unframe_spans(broken)


# --- splicing and the caches ---------------------------------------------------------------------------------


def test_encode_attributes_splices_into_each_message() -> None:
    attrs: Attrs = [("late", "value"), ("n", 7)]
    span = encode_span(TRACE_ID, SPAN_ID, b"", "n", SpanKind.SERVER, 1, 2, [("early", True)], flags=1)
    # Appended after the other fields: parsers accept any field order and append repeated fields.
    spliced = Span.FromString(span + encode_attributes(attrs))
    assert_attributes(spliced.attributes, [("early", True), *attrs])
    assert spliced.flags == 1
    assert encode_attributes(attrs, otlp.SPAN_ATTRIBUTES) == encode_attributes(attrs)
    assert_attributes(Resource.FromString(encode_attributes(attrs, otlp.RESOURCE_ATTRIBUTES)).attributes, attrs)
    assert_attributes(Span.Event.FromString(encode_attributes(attrs, otlp.EVENT_ATTRIBUTES)).attributes, attrs)
    assert_attributes(
        InstrumentationScope.FromString(encode_attributes(attrs, otlp.SCOPE_ATTRIBUTES)).attributes, attrs
    )
    assert encode_attributes([]) == b""


def test_cached_prefixes_depend_on_key_length_and_field() -> None:
    # The same key with strings and ints of every encoded length, in every attribute field, twice (the
    # second pass reads the cached prefixes).
    values: list[AttrValue] = [
        *("s" * n for n in (0, 1, 2, 100, 120, 121, 122, 123, 124, 125, 126, 127, 128)),
        *(1 << shift for shift in range(0, 63, 7)),
        *(-(1 << shift) for shift in range(0, 64, 7)),
    ]
    for _ in range(2):
        for field, parse in [
            (otlp.SPAN_ATTRIBUTES, Span.FromString),
            (otlp.RESOURCE_ATTRIBUTES, Resource.FromString),
            (otlp.EVENT_ATTRIBUTES, Span.Event.FromString),
        ]:
            for key in ("same.key", "k" * 120):
                attrs: Attrs = [(key, value) for value in values]
                assert_attributes(parse(encode_attributes(attrs, field)).attributes, attrs)


def test_many_distinct_keys_beyond_the_cache_bound() -> None:
    attrs: Attrs = [(f"key.{i}", f"value {i}" if i % 2 else i) for i in range(3000)]
    for _ in range(2):
        got = Span.FromString(encode_span(TRACE_ID, SPAN_ID, b"", "n", SpanKind.SERVER, 1, 2, attrs))
        assert_attributes(got.attributes, attrs)


def test_subclasses_of_the_value_types() -> None:
    class Port(int):
        pass

    class Text(str):
        pass

    attrs: Attrs = [("port", Port(8080)), ("text", Text("abc"))]
    got = Span.FromString(encode_span(TRACE_ID, SPAN_ID, b"", "n", SpanKind.SERVER, 1, 2, attrs))
    assert_attributes(got.attributes, [("port", 8080), ("text", "abc")])


def test_invalid_attribute_values_raise() -> None:
    with pytest.raises(ValueError, match="int64"):
        encode_attributes([("n", INT64_MAX + 1)])
    with pytest.raises(ValueError, match="int64"):
        encode_attributes([("n", INT64_MIN - 1)])
    # Interpreted, the encoder names the type; compiled (mypyc), the argument check does first.
    with pytest.raises(TypeError, match=r"None"):
        encode_attributes([("n", None)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be strings"):
        encode_attributes([("n", [1, 2])])  # type: ignore[list-item]


# --- property: random spans round-trip exactly -------------------------------------------------------------

keys = st.text(max_size=30)
values: st.SearchStrategy[AttrValue] = st.one_of(
    st.text(max_size=200),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(),
    st.binary(max_size=200),
    st.lists(st.text(max_size=20), max_size=5),
)
attribute_lists = st.lists(st.tuples(keys, values), max_size=20)
uint64 = st.integers(0, UINT64_MAX)


@st.composite
def spans(draw: st.DrawFn) -> dict[str, object]:
    return {
        "trace_id": draw(st.binary(min_size=16, max_size=16)),
        "span_id": draw(st.binary(min_size=8, max_size=8)),
        "parent_span_id": draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=8))),
        "name": draw(st.text(max_size=150)),
        "kind": draw(st.integers(0, 5)),
        "start_ns": draw(uint64),
        "end_ns": draw(uint64),
        "attributes": draw(attribute_lists),
        "status_code": draw(st.integers(0, 2)),
        "status_message": draw(st.text(max_size=50)),
        "trace_state": draw(st.text(max_size=50)),
        "flags": draw(st.integers(0, 0xFFFFFFFF)),
        "events": draw(st.lists(st.tuples(uint64, st.text(max_size=20), attribute_lists), max_size=3)),
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(spans(), min_size=1, max_size=4), attribute_lists, st.text(max_size=20), st.text(max_size=20))
def test_random_spans_round_trip(
    specs: list[dict[str, object]], resource_attrs: Attrs, scope_name: str, scope_version: str
) -> None:
    encoded = [encode_fixed(spec) for spec in specs]
    request = request_of(
        *encoded, resource=encode_resource(resource_attrs), scope=encode_scope(scope_name, scope_version)
    )
    assert_attributes(request.resource_spans[0].resource.attributes, resource_attrs)
    scope_spans = only_scope_spans(request)
    assert scope_spans.scope.name == scope_name
    assert scope_spans.scope.version == scope_version
    assert len(scope_spans.spans) == len(specs)
    for got, spec, raw in zip(scope_spans.spans, specs, encoded, strict=True):
        assert got.trace_id == spec["trace_id"]
        assert got.span_id == spec["span_id"]
        assert got.parent_span_id == spec["parent_span_id"]
        assert got.name == spec["name"]
        assert got.kind == spec["kind"]
        assert got.start_time_unix_nano == spec["start_ns"]
        assert got.end_time_unix_nano == spec["end_ns"]
        assert_attributes(got.attributes, spec["attributes"])  # type: ignore[arg-type]
        assert got.status.code == spec["status_code"]
        assert got.status.message == spec["status_message"]
        assert got.trace_state == spec["trace_state"]
        assert got.flags == spec["flags"]
        events: list[Event] = spec["events"]  # type: ignore[assignment]
        assert len(got.events) == len(events)
        for got_event, (time_ns, name, event_attrs) in zip(got.events, events, strict=True):
            assert got_event.time_unix_nano == time_ns
            assert got_event.name == name
            assert_attributes(got_event.attributes, event_attrs)
        assert raw == official_fixed(spec).SerializeToString()


# --- the request path's span pieces (as tracing/spans.py assembles them) ------------------------------------

str_or_int = st.one_of(st.text(max_size=300), st.integers(INT64_MIN, INT64_MAX))


@settings(max_examples=300, deadline=None)
@given(spans(), st.lists(st.tuples(keys, str_or_int), max_size=12), attribute_lists, st.booleans())
def test_span_pieces_join_into_the_official_serialization(
    spec: dict[str, object], typed: list[tuple[str, str | int]], spliced: Attrs, head_and_payload: bool
) -> None:
    # What server_span and client_span do: fixed heads, then cached or computed pieces, joined once and
    # framed as one ScopeSpans.spans field.
    spec = {**spec, "start_ns": spec["start_ns"] or 1, "end_ns": spec["end_ns"] or 1}  # both set on the request path
    parent = spec["parent_span_id"]
    parts = [otlp.TRACE_ID_HEAD, spec["trace_id"], otlp.SPAN_ID_HEAD, spec["span_id"]]
    parts.append(otlp.span_trace_state(spec["trace_state"]))  # type: ignore[arg-type]
    if parent:
        parts += [otlp.PARENT_SPAN_ID_HEAD, parent]
    parts.append(otlp.span_name_and_kind(spec["name"], spec["kind"]))  # type: ignore[arg-type]
    parts.append(otlp.span_times(spec["start_ns"], spec["end_ns"]))  # type: ignore[arg-type]
    for key, value in typed:
        if isinstance(value, str):
            if head_and_payload:
                payload = value.encode("utf-8", "replace")
                parts += [otlp.string_attribute_head(key, len(payload)), payload]
            else:
                parts.append(otlp.string_attribute(key, value))
        else:
            parts.append(otlp.int_attribute(key, value))
    parts.append(encode_attributes(spliced))
    parts.append(otlp.span_status_and_flags(spec["status_code"], spec["flags"], spec["status_message"]))  # type: ignore[arg-type]
    body = b"".join(parts)  # type: ignore[arg-type]
    expected = {**spec, "attributes": [*typed, *spliced], "events": []}
    assert body == official_fixed(expected).SerializeToString()
    assert body == encode_fixed(expected)
    framed = otlp.framed_span_head(len(body)) + body
    assert framed == otlp.frame_spans([body])
    assert otlp.unframe_spans(framed) == [body]


def test_ids_and_times_size() -> None:
    pieces = otlp.TRACE_ID_HEAD + bytes(16) + otlp.SPAN_ID_HEAD + bytes(8) + otlp.span_times(1, 2)
    assert len(pieces) == otlp.IDS_AND_TIMES_SIZE


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16383, 16384, 2_100_000])
def test_framed_span_head_at_each_length_width(size: int) -> None:
    body = b"\x0a" + bytes(size - 1) if size else b""
    head = otlp.framed_span_head(size)
    assert head == otlp.framed_span_head(size)  # the cached head is the same
    assert head[0] == 0x12  # ScopeSpans.spans, length-delimited
    assert otlp.iter_fields(head + body).__next__() == (2, 2, body)
