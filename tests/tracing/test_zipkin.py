"""`backend "zipkin"` (SPEC §6.5): OTLP span bytes → Zipkin v2 JSON, and its export over HTTP.

- Conversion unit tests on spans written by `otlp.encode_span` (and by the proxy's own span builders).
- An oracle: the OpenTelemetry SDK's Zipkin JSON v2 encoder (opentelemetry-exporter-zipkin-json) given the same
  spans as SDK `ReadableSpan`s; every field is compared, and the deliberate differences are listed in
  `_without_deliberate_differences`.
- End to end: a `SpanExporter` configured through the config loader sends to a real Zipkin-like receiver on
  127.0.0.1 (tests/support/otlp_receivers.py `ZipkinReceiver`): plain, gzip, a 503 that is retried.
- Configuration: `sentinel test` takes `backend "zipkin"` and refuses `protocol` under it with file and line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.proto.common.v1.common_pb2 import AnyValue as PbAnyValue
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace import SpanKind as SdkSpanKind
from opentelemetry.trace.status import Status
from opentelemetry.trace.status import StatusCode as SdkStatusCode

from sentinel.config import load_config_text
from sentinel.config.model import TracingConfig
from sentinel.tracing.export import SpanExporter
from sentinel.tracing.otlp import AttrValue, SpanKind, StatusCode, encode_attributes, encode_span, unframe_spans
from sentinel.tracing.spans import agent_call_span
from sentinel.tracing.zipkin import ZipkinEncoder, decode_span, tag_value
from tests.support.otlp_receivers import HttpAnswer, ZipkinReceiver

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SERVER_ID = bytes.fromhex("00f067aa0ba902b7")
CLIENT_ID = bytes.fromhex("b7ad6b7169203331")
PARENT_ID = bytes.fromhex("53995c3f42cd8ad8")
START = 1_700_000_000_123_456_789  # ns; rounds to ...123457 µs
END = START + 2_345_678  # 2345.678 µs → 2346
RESOURCE: list[tuple[str, AttrValue]] = [
    ("service.name", "sentinel-test"),
    ("service.version", "1.2.3"),
    ("host.name", "proxy-1"),
]
SCOPE = ("sentinel", "0.9.0")


def encoder() -> ZipkinEncoder:
    return ZipkinEncoder(RESOURCE, *SCOPE)


def convert(span: bytes) -> dict[str, Any]:
    """Through the whole encoder (JSON bytes), as the exporter sends it."""
    payload, unreadable = encoder().encode([span])
    assert unreadable == 0
    (out,) = json.loads(payload)
    assert isinstance(out, dict)
    return out


# --- a span description both encoders are fed from ---------------------------------------------------------


@dataclass
class SpanSpec:
    name: str
    kind: int
    span_id: bytes
    parent_id: bytes = b""
    start_ns: int = START
    end_ns: int = END
    attributes: list[tuple[str, AttrValue]] = field(default_factory=list)
    status: int = StatusCode.UNSET
    message: str = ""
    events: list[tuple[int, str, list[tuple[str, AttrValue]]]] = field(default_factory=list)

    def otlp(self) -> bytes:
        return encode_span(
            TRACE_ID,
            self.span_id,
            self.parent_id,
            self.name,
            self.kind,
            self.start_ns,
            self.end_ns,
            self.attributes,
            status_code=self.status,
            status_message=self.message,
            trace_state="vendor=x",  # nothing in Zipkin for these two: they must simply be skipped
            flags=0x101,
            events=self.events,
        )

    def sdk(self) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = SpanContext(int.from_bytes(TRACE_ID), int.from_bytes(self.parent_id), True, flags)
        return ReadableSpan(
            self.name,
            context=SpanContext(int.from_bytes(TRACE_ID), int.from_bytes(self.span_id), False, flags),
            parent=parent if self.parent_id else None,
            resource=Resource(dict(RESOURCE)),
            attributes=dict(self.attributes),
            events=[Event(name, dict(attrs), time_ns) for time_ns, name, attrs in self.events],
            kind=SdkSpanKind(self.kind - 1),  # the API's enum starts at INTERNAL = 0
            status=Status(SdkStatusCode(self.status), self.message or None),
            start_time=self.start_ns,
            end_time=self.end_ns,
            instrumentation_scope=InstrumentationScope(*SCOPE),
        )


SERVER = SpanSpec(
    "GET /api/*",
    SpanKind.SERVER,
    SERVER_ID,
    PARENT_ID,
    attributes=[
        ("http.request.method", "GET"),
        ("http.route", "/api/*"),
        ("http.response.status_code", 502),
        ("server.address", "api.example"),  # not a remote endpoint on a SERVER span
        ("sentinel.cache.hit", False),
        ("sentinel.retry", True),
        ("sentinel.ratio", 0.25),
        ("sentinel.agent.tags", ["bearer", "expired"]),
        ("user_agent.original", "curl/8.5 \u00e9\u4e16"),
    ],
    status=StatusCode.ERROR,
    message="upstream timed out",
    events=[
        (START + 1_000_400, "exception", [("exception.type", "TimeoutError"), ("exception.escaped", False)]),
        (START + 2_000_600, "retry", [("attempt", 2)]),
        (START + 2_100_000, "done", []),
    ],
)
CLIENT = SpanSpec(
    "GET",
    SpanKind.CLIENT,
    CLIENT_ID,
    SERVER_ID,
    attributes=[
        ("http.request.method", "GET"),
        ("url.full", "http://backend:8080/api/x"),
        ("server.address", "backend"),
        ("server.port", 8080),
        ("network.peer.address", "10.1.2.3"),
        ("network.peer.port", 8081),
    ],
    status=StatusCode.OK,
)
ROOT = SpanSpec("housekeeping", SpanKind.INTERNAL, PARENT_ID, attributes=[("sentinel.task", "reload")])


# --- conversion --------------------------------------------------------------------------------------------


def test_server_span_with_attributes_error_status_and_events() -> None:
    z = convert(SERVER.otlp())
    assert z["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert z["id"] == "00f067aa0ba902b7"
    assert z["parentId"] == "53995c3f42cd8ad8"
    assert z["name"] == "GET /api/*"
    assert z["kind"] == "SERVER"
    assert z["timestamp"] == 1_700_000_000_123_457
    assert z["duration"] == 2346
    assert z["localEndpoint"] == {"serviceName": "sentinel-test"}
    assert "remoteEndpoint" not in z
    assert z["tags"] == {
        "service.version": "1.2.3",
        "host.name": "proxy-1",
        "http.request.method": "GET",
        "http.route": "/api/*",
        "http.response.status_code": "502",
        "server.address": "api.example",
        "sentinel.cache.hit": "false",
        "sentinel.retry": "true",
        "sentinel.ratio": "0.25",
        "sentinel.agent.tags": '["bearer","expired"]',
        "user_agent.original": "curl/8.5 \u00e9\u4e16",
        "otel.scope.name": "sentinel",
        "otel.scope.version": "0.9.0",
        "otel.status_code": "ERROR",
        "error": "upstream timed out",
    }
    assert z["annotations"] == [
        {
            "timestamp": 1_700_000_000_124_457,
            "value": '"exception":{"exception.type":"TimeoutError","exception.escaped":false}',
        },
        {"timestamp": 1_700_000_000_125_457, "value": '"retry":{"attempt":2}'},
        {"timestamp": 1_700_000_000_125_557, "value": '"done":{}'},
    ]


def test_client_span_gets_a_remote_endpoint_from_server_and_peer_attributes() -> None:
    z = convert(CLIENT.otlp())
    assert z["kind"] == "CLIENT"
    assert z["parentId"] == SERVER_ID.hex()
    assert z["remoteEndpoint"] == {"serviceName": "backend", "ipv4": "10.1.2.3", "port": 8081}
    assert z["tags"]["otel.status_code"] == "OK"
    assert "error" not in z["tags"]
    assert "annotations" not in z


@pytest.mark.parametrize(
    ("kind", "attributes", "remote"),
    [
        (
            SpanKind.CLIENT,
            [("server.address", "backend"), ("server.port", 9000)],
            {"serviceName": "backend", "port": 9000},
        ),
        (
            SpanKind.CLIENT,
            [("peer.service", "billing"), ("server.address", "10.0.0.9"), ("server.port", 443)],
            {"serviceName": "billing", "ipv4": "10.0.0.9", "port": 443},
        ),
        (
            SpanKind.CLIENT,
            [("server.address", "10.0.0.9"), ("server.port", 443)],
            {"serviceName": "10.0.0.9", "ipv4": "10.0.0.9", "port": 443},
        ),
        (
            SpanKind.PRODUCER,
            [("network.peer.address", "2001:db8::1"), ("network.peer.port", 5672)],
            {"ipv6": "2001:db8::1", "port": 5672},
        ),
        (SpanKind.CLIENT, [("network.peer.address", "::ffff:192.0.2.7")], {"ipv4": "192.0.2.7"}),
        (SpanKind.CLIENT, [("net.peer.name", "legacy"), ("net.peer.port", 81)], {"serviceName": "legacy", "port": 81}),
        (SpanKind.CLIENT, [("network.peer.address", "not-an-ip"), ("db.name", "orders")], {"serviceName": "orders"}),
        (SpanKind.CLIENT, [("http.request.method", "GET")], None),
        (SpanKind.SERVER, [("peer.service", "billing")], None),
        (SpanKind.CONSUMER, [("server.address", "broker")], None),
    ],
)
def test_remote_endpoint_follows_the_ranking(
    kind: int, attributes: list[tuple[str, AttrValue]], remote: dict[str, object] | None
) -> None:
    z = convert(SpanSpec("op", kind, CLIENT_ID, attributes=attributes).otlp())
    assert z.get("remoteEndpoint") == remote


def test_root_internal_span_has_no_parent_and_no_kind() -> None:
    z = convert(ROOT.otlp())
    assert "parentId" not in z
    assert "kind" not in z
    assert "annotations" not in z
    assert z["tags"] == {
        "service.version": "1.2.3",
        "host.name": "proxy-1",
        "sentinel.task": "reload",
        "otel.scope.name": "sentinel",
        "otel.scope.version": "0.9.0",
    }  # status UNSET: no otel.status_code, no error


def test_times_are_whole_microseconds_and_duration_at_least_one() -> None:
    z = convert(SpanSpec("t", SpanKind.SERVER, SERVER_ID, start_ns=1_000_000_499, end_ns=1_000_000_499).otlp())
    assert (z["timestamp"], z["duration"]) == (1_000_000, 1)
    z = convert(SpanSpec("t", SpanKind.SERVER, SERVER_ID, start_ns=1_000_000_500, end_ns=1_000_001_734).otlp())
    assert (z["timestamp"], z["duration"]) == (1_000_001, 1)  # 1234 ns is 1 µs, as the specification says


def test_error_status_without_message_and_boolean_error_attribute() -> None:
    z = convert(SpanSpec("e", SpanKind.SERVER, SERVER_ID, status=StatusCode.ERROR).otlp())
    assert (z["tags"]["otel.status_code"], z["tags"]["error"]) == ("ERROR", "")
    z = convert(SpanSpec("e", SpanKind.SERVER, SERVER_ID, attributes=[("error", False)]).otlp())
    assert "error" not in z["tags"]  # Zipkin counts any `error` tag as a failure
    z = convert(SpanSpec("e", SpanKind.SERVER, SERVER_ID, attributes=[("error", False)], status=StatusCode.OK).otlp())
    assert "error" not in z["tags"]
    assert z["tags"]["otel.status_code"] == "OK"


def test_attributes_appended_late_are_tags_too() -> None:
    # The proxy splices attribute fields onto a finished span body (otlp.encode_attributes).
    body = CLIENT.otlp() + encode_attributes([("sentinel.upstream.id", "backend-pool"), ("server.port", 9443)])
    z = convert(body)
    assert z["tags"]["sentinel.upstream.id"] == "backend-pool"
    assert z["tags"]["server.port"] == "9443"  # the later value wins, as in protobuf map semantics


def test_agent_call_span_from_the_span_builder() -> None:
    raw = agent_call_span(
        TRACE_ID,
        SERVER_ID,
        CLIENT_ID,
        "auth",
        "request_headers",
        START,
        END,
        decision="block",
        outcome="timeout",
        failure_mode="closed",
        audit={"tags": ["bearer", "expired"]},
    )
    (body,) = unframe_spans(raw)  # framed for the recorder
    z = convert(body)
    assert (z["name"], z["kind"], z["parentId"]) == ("agent auth request_headers", "CLIENT", SERVER_ID.hex())
    assert "remoteEndpoint" not in z  # no peer attributes on agent calls
    assert z["tags"]["sentinel.agent.tags"] == '["bearer","expired"]'
    assert z["tags"]["error.type"] == "timeout"
    assert z["tags"]["error"] == ""


def test_every_any_value_type_written_by_the_official_serializer() -> None:
    span = PbSpan(
        trace_id=TRACE_ID,
        span_id=SERVER_ID,
        name="types",
        kind=PbSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=START,
        end_time_unix_nano=END,
        dropped_attributes_count=3,
        dropped_events_count=1,
        dropped_links_count=2,
    )

    def add(key: str, value: PbAnyValue) -> None:
        span.attributes.append(KeyValue(key=key, value=value))

    add("s", PbAnyValue(string_value=""))
    add("neg", PbAnyValue(int_value=-42))
    add("d", PbAnyValue(double_value=1.5))
    add("b", PbAnyValue(bytes_value=b"\x00\xff"))
    array = PbAnyValue()
    array.array_value.values.add(int_value=1)
    array.array_value.values.add(bool_value=True)
    array.array_value.values.add(string_value="x")
    add("arr", array)
    kvlist = PbAnyValue()
    kvlist.kvlist_value.values.add(key="k", value=PbAnyValue(string_value="v"))
    add("map", kvlist)
    add("empty", PbAnyValue())
    link = span.links.add()
    link.trace_id, link.span_id = TRACE_ID, CLIENT_ID
    z = convert(span.SerializeToString())
    tags = z["tags"]
    assert (tags["s"], tags["neg"], tags["d"], tags["b"]) == ("", "-42", "1.5", "AP8=")
    assert (tags["arr"], tags["map"], tags["empty"]) == ('[1,true,"x"]', '{"k":"v"}', "")
    assert tags["otel.dropped_attributes_count"] == "3"
    assert tags["otel.dropped_events_count"] == "1"
    assert tags["otel.dropped_links_count"] == "2"
    decoded = decode_span(span.SerializeToString())
    assert (decoded.trace_id, decoded.span_id, decoded.start_ns, decoded.end_ns) == (TRACE_ID, SERVER_ID, START, END)


def test_tag_values() -> None:
    assert [tag_value(v) for v in ("a", True, False, 7, -1.25, b"hi", ["a", "b"], None)] == [
        "a",
        "true",
        "false",
        "7",
        "-1.25",
        "aGk=",
        '["a","b"]',
        "",
    ]


def test_unreadable_spans_are_left_out_and_counted() -> None:
    payload, unreadable = encoder().encode([SERVER.otlp(), b"\x0a\x10short", CLIENT.otlp(), b"\x07"])
    assert unreadable == 2
    assert [s["id"] for s in json.loads(payload)] == [SERVER_ID.hex(), CLIENT_ID.hex()]
    assert payload == json.dumps(json.loads(payload), separators=(",", ":")).encode()  # compact, ASCII


def test_resource_without_service_name() -> None:
    payload, _ = ZipkinEncoder([]).encode([ROOT.otlp()])
    (z,) = json.loads(payload)
    assert z["localEndpoint"] == {"serviceName": "unknown_service"}
    assert z["tags"] == {"sentinel.task": "reload"}


# --- oracle: the OpenTelemetry SDK's Zipkin JSON v2 encoder ------------------------------------------------


def _sdk_json(specs: Sequence[SpanSpec]) -> list[dict[str, Any]]:
    local = NodeEndpoint()
    local.service_name = "sentinel-test"  # the SDK takes it from the global tracer provider otherwise
    # max_tag_value_length 0: no truncation. The SDK cuts tag values to 128 characters by default; Zipkin has no
    # such limit and neither do we (attribute values are already bounded where the proxy records them).
    readable: list[Any] = [s.sdk() for s in specs]  # the encoder is annotated for API spans, but reads these
    out = json.loads(JsonV2Encoder(max_tag_value_length=0).serialize(readable, local))
    assert isinstance(out, list)
    return out


def _without_deliberate_differences(ours: dict[str, Any], sdk: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The differences between the two encoders that are choices, each checked, then taken out."""
    ours, sdk = json.loads(json.dumps(ours)), json.loads(json.dumps(sdk))
    # 1. The SDK writes `"kind": null` for INTERNAL; the specification says to omit it, and we do.
    if sdk.get("kind", "") is None:
        assert "kind" not in ours
        del sdk["kind"]
    # 2. The SDK sets `debug` on every sampled span, which makes Zipkin bypass its own sampling and storage
    #    rules for it; every span we export is sampled, so we never set it.
    assert sdk.pop("debug") is True
    assert "debug" not in ours
    # 3. The SDK repeats `service.name` as a tag (it is already localEndpoint.serviceName) and also sends the
    #    deprecated `otel.library.name`/`otel.library.version` aliases of `otel.scope.*`; we do not.
    tags = sdk["tags"]
    assert tags.pop("service.name") == ours["localEndpoint"]["serviceName"]
    assert tags.pop("otel.library.name") == tags["otel.scope.name"]
    assert tags.pop("otel.library.version") == tags["otel.scope.version"]
    # 4. The SDK has no remoteEndpoint at all; ours is checked by the conversion tests above.
    ours.pop("remoteEndpoint", None)
    # 5. Annotation values: we write the specification's `"name":{attributes}` (as opentelemetry-java does);
    #    the SDK wraps that in braces (`{"name": {...}}`, spaced, keys sorted). Same content.
    for a_ours, a_sdk in zip(ours.get("annotations", []), sdk.get("annotations", []), strict=True):
        assert json.loads("{" + a_ours["value"] + "}") == json.loads(a_sdk["value"])
        a_ours["value"] = a_sdk["value"]
    return ours, sdk


@pytest.mark.parametrize("spec", [SERVER, CLIENT, ROOT], ids=["server", "client", "root"])
def test_same_json_as_the_sdk_encoder(spec: SpanSpec) -> None:
    ours = convert(spec.otlp())
    (sdk,) = _sdk_json([spec])
    ours, sdk = _without_deliberate_differences(ours, sdk)
    assert ours.keys() == sdk.keys()
    for key in sdk:
        assert ours[key] == sdk[key], key


# --- export over HTTP --------------------------------------------------------------------------------------

LISTENERS = 'listeners {\n    listener "http" { address "127.0.0.1:8080"; }\n}\n'


def tracing_config(backend_body: str, *, batch: int = 512) -> TracingConfig:
    text = (
        LISTENERS
        + "observability {\n    tracing {\n"
        + f'        backend "zipkin" {{\n{backend_body}        }}\n'
        + f'        service-name "edge-proxy"\n        max-export-batch-size {batch}\n'
        + "        schedule-delay-ms 60000\n    }\n}\n"
    )
    tracing = load_config_text(text, "zipkin.kdl").observability.tracing
    assert tracing is not None
    return tracing


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def spans(n: int) -> list[bytes]:
    return [
        SpanSpec(
            f"span-{i}", SpanKind.SERVER, (i + 1).to_bytes(8, "big"), attributes=[("i", i)], start_ns=START + i
        ).otlp()
        for i in range(n)
    ]


async def started(cfg: TracingConfig) -> SpanExporter:
    exporter = SpanExporter(
        cfg, [("service.instance.id", "i-1")], initial_backoff=0.01, max_backoff=0.05, max_retry_time=5.0
    )
    await exporter.start()
    return exporter


def test_exporter_posts_zipkin_json_to_the_configured_path() -> None:
    async def main() -> None:
        rx = await ZipkinReceiver().start()
        try:
            endpoint = f"http://127.0.0.1:{rx.port}/api/v2/spans"
            cfg = tracing_config(
                f'            endpoint "{endpoint}"\n            headers {{ x-tenant "t1"; }}\n', batch=4
            )
            exporter = await started(cfg)
            exporter.offer(spans(6))
            assert await exporter.flush(5.0)
            assert [len(r.spans) for r in rx.requests] == [4, 2]
            request = rx.requests[0]
            assert (request.method, request.path) == ("POST", "/api/v2/spans")
            assert request.headers["content-type"] == "application/json"
            assert request.headers["x-tenant"] == "t1"
            assert "content-encoding" not in request.headers
            assert request.headers["user-agent"].startswith("sentinel-zipkin-exporter/")
            assert [s["name"] for s in rx.spans] == [f"span-{i}" for i in range(6)]
            first = rx.spans[0]
            assert first["traceId"] == TRACE_ID.hex()
            assert first["localEndpoint"] == {"serviceName": "edge-proxy"}
            assert first["tags"]["service.instance.id"] == "i-1"
            assert first["tags"]["otel.scope.name"] == "sentinel"
            assert (exporter.spans_exported, exporter.spans_failed) == (6, 0)
            assert rx.connections == 1  # kept alive between the two batches
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


def test_exporter_gzips_the_json_body() -> None:
    async def main() -> None:
        rx = await ZipkinReceiver().start()
        try:
            cfg = tracing_config(
                f'            endpoint "http://127.0.0.1:{rx.port}/api/v2/spans"\n            compression "gzip"\n'
            )
            exporter = await started(cfg)
            exporter.offer(spans(3))
            assert await exporter.flush(5.0)
            (request,) = rx.requests
            assert request.headers["content-encoding"] == "gzip"
            assert request.raw_body[:2] == b"\x1f\x8b"
            assert [s["id"] for s in request.spans] == [(i + 1).to_bytes(8, "big").hex() for i in range(3)]
            assert exporter.spans_exported == 3
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


def test_503_is_retried_then_accepted() -> None:
    async def main() -> None:
        rx = await ZipkinReceiver().start()
        try:
            rx.answers.append(HttpAnswer(503, [("Retry-After", "0")], b"busy"))
            cfg = tracing_config(f'            endpoint "http://127.0.0.1:{rx.port}/api/v2/spans"\n')
            exporter = await started(cfg)
            exporter.offer(spans(5))
            assert await exporter.flush(5.0)
            await rx.wait_until(lambda: len(rx.requests) == 1)
            assert rx.attempts == 2
            assert len(rx.spans) == 5
            assert (exporter.spans_exported, exporter.spans_failed, exporter.export_durations.count) == (5, 0, 2)
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


def test_400_is_permanent_and_counted_as_failed() -> None:
    async def main() -> None:
        rx = await ZipkinReceiver().start()
        try:
            rx.answers.append(HttpAnswer(400, body=b"bad span"))
            cfg = tracing_config(f'            endpoint "http://127.0.0.1:{rx.port}/api/v2/spans"\n')
            exporter = await started(cfg)
            exporter.offer(spans(2))
            assert not await exporter.flush(5.0)
            assert (rx.attempts, exporter.spans_exported, exporter.spans_failed) == (1, 0, 2)
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


def test_an_unreadable_span_fails_alone() -> None:
    async def main() -> None:
        rx = await ZipkinReceiver().start()
        try:
            cfg = tracing_config(f'            endpoint "http://127.0.0.1:{rx.port}/api/v2/spans"\n')
            exporter = await started(cfg)
            good = spans(2)
            exporter.offer([good[0], b"\x0a\xffbroken", good[1]])
            assert not await exporter.flush(5.0)  # a span failed meanwhile
            assert [s["name"] for s in rx.spans] == ["span-0", "span-1"]
            assert (exporter.spans_exported, exporter.spans_failed, exporter.in_flight) == (2, 1, 0)
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


# --- configuration through `sentinel test` -----------------------------------------------------------------


def sentinel_test(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", "test", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sentinel_test_accepts_zipkin_and_refuses_protocol_under_it(tmp_path: Path) -> None:
    good = tmp_path / "zipkin.kdl"
    good.write_text(
        LISTENERS
        + 'observability {\n    tracing {\n        backend "zipkin" { endpoint "http://h:9411/api/v2/spans"; }\n'
        "    }\n}\n"
    )
    result = sentinel_test(good)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sentinel: configuration file {good} test is successful\n"

    bad = tmp_path / "zipkin-protocol.kdl"
    bad.write_text(
        LISTENERS + 'observability {\n    tracing {\n        backend "zipkin" {\n            protocol "http/protobuf"\n'
        "        }\n    }\n}\n"
    )
    result = sentinel_test(bad)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"sentinel: {bad}:7:13: observability > tracing > backend > protocol:")
    assert "zipkin always sends JSON over HTTP" in lines[0]
    assert lines[-1] == f"sentinel: configuration file {bad} test failed"
