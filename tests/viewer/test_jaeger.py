"""The Jaeger query API's JSON (SPEC §9) for spans made by the OpenTelemetry SDK and read from a real store,
and the parsing of `/api/traces` query strings."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sentinel.viewer import jaeger
from sentinel.viewer.store import TraceQuery, TraceStore
from tests.viewer.test_store import MS, T0, Sdk, rich_trace, span_hex, trace_hex


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    store = TraceStore(str(tmp_path / "traces.db"))
    yield store
    store.close()


def strict_json(value: Any) -> Any:
    """Through JSON and back, refusing what is not JSON (NaN, Infinity): what a client will parse."""
    return json.loads(json.dumps(value, allow_nan=False))


def test_services_and_operations() -> None:
    assert jaeger.services_response(["a", "b"]) == {
        "data": ["a", "b"],
        "total": 2,
        "limit": 0,
        "offset": 0,
        "errors": None,
    }
    ops = [("GET /cart", 2), ("publish", 4), ("GET /cart", 3), ("render", 1), ("legacy", 0)]
    assert jaeger.operations_response(ops)["data"] == ["GET /cart", "legacy", "publish", "render"]
    assert jaeger.operations_response(ops)["total"] == 4
    assert jaeger.operations_by_kind_response(ops) == {
        "data": [
            {"name": "GET /cart", "spanKind": "server"},
            {"name": "GET /cart", "spanKind": "client"},
            {"name": "legacy", "spanKind": ""},
            {"name": "publish", "spanKind": "producer"},
            {"name": "render", "spanKind": "internal"},
        ],
        "total": 5,
        "limit": 0,
        "offset": 0,
        "errors": None,
    }
    assert jaeger.operations_by_kind_response(ops, "client")["data"] == [{"name": "GET /cart", "spanKind": "client"}]
    assert jaeger.operations_by_kind_response([], "server")["data"] == []


def test_errors_as_jaeger_query_sends_them() -> None:
    assert jaeger.not_found_response("4bf92f3577b34da6a3ce929d0e0e4736") == {
        "data": None,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": 404, "msg": "trace not found"}],
    }
    assert jaeger.error_response(400, "bad limit")["errors"] == [{"code": 400, "msg": "bad limit"}]


def tag_map(tags: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    return {tag["key"]: (tag["type"], tag["value"]) for tag in tags}


def test_a_trace_from_the_sdk(store: TraceStore) -> None:
    sdk = Sdk()
    rich_trace(sdk)
    spans = sdk.spans()
    store.ingest_request(sdk.take())
    root = next(s for s in spans if s.name == "GET /cart")
    by_name = {s.name: s for s in spans}
    response = strict_json(jaeger.trace_response(store.trace(trace_hex(root))))
    assert (response["total"], response["limit"], response["offset"], response["errors"]) == (0, 0, 0, None)
    (trace,) = response["data"]
    assert trace["traceID"] == trace_hex(root)
    assert trace["warnings"] is None

    # One process per resource: web's spans share one, db's has its own; service.name is the name, not a tag.
    assert sorted(p["serviceName"] for p in trace["processes"].values()) == ["db", "web"]
    web = next(pid for pid, p in trace["processes"].items() if p["serviceName"] == "web")
    db = next(pid for pid, p in trace["processes"].items() if p["serviceName"] == "db")
    web_tags = tag_map(trace["processes"][web]["tags"])
    assert web_tags["host.name"] == ("string", "web-1")
    assert web_tags["process.pid"] == ("int64", 4242)
    assert web_tags["process.command_args"] == ("string", '["python","app.py"]')
    assert "service.name" not in web_tags
    db_tags = tag_map(trace["processes"][db]["tags"])
    assert (db_tags["db.replica"], db_tags["load"]) == (("bool", True), ("float64", 0.75))

    got = {span["operationName"]: span for span in trace["spans"]}
    assert list(got) == ["GET /cart", "SELECT cart", "render", "publish cart.viewed", "consume cart.viewed"]
    server = got["GET /cart"]
    assert server["spanID"] == span_hex(root)
    assert server["traceID"] == trace_hex(root)
    assert server["processID"] == web
    assert (server["startTime"], server["duration"]) == (T0 // 1000, 50 * MS // 1000)
    assert server["warnings"] is None
    nightly = by_name["nightly"]
    assert server["references"] == [
        {"refType": "CHILD_OF", "traceID": trace_hex(root), "spanID": "00f067aa0ba902b7"},  # the remote parent
        {"refType": "FOLLOWS_FROM", "traceID": trace_hex(nightly), "spanID": span_hex(nightly)},  # the link
    ]
    assert server["tags"] == [
        {"key": "otel.scope.name", "type": "string", "value": "shop.instrumentation"},
        {"key": "otel.scope.version", "type": "string", "value": "1.2.3"},
        {"key": "http.method", "type": "string", "value": "GET"},
        {"key": "http.status_code", "type": "int64", "value": 200},
        {"key": "http.response_content_length", "type": "int64", "value": 1 << 40},
        {"key": "latency.ratio", "type": "float64", "value": 0.125},
        {"key": "negative", "type": "float64", "value": -3.5e-7},
        {"key": "cache.hit", "type": "bool", "value": False},
        {"key": "empty", "type": "string", "value": ""},
        {"key": "unicode", "type": "string", "value": "héllo ☃ 𝄞"},
        {"key": "tags", "type": "string", "value": '["a","b",""]'},
        {"key": "ports", "type": "string", "value": "[80,443,-1]"},
        {"key": "weights", "type": "string", "value": "[0.5,1.0]"},
        {"key": "flags", "type": "string", "value": "[true,false]"},
        {"key": "span.kind", "type": "string", "value": "server"},
        {"key": "w3c.tracestate", "type": "string", "value": "vendor=v1,other=x"},
    ]
    assert server["logs"] == [
        {
            "timestamp": (T0 + 1_000) // 1000,
            "fields": [
                {"key": "event", "type": "string", "value": "request.received"},
                {"key": "bytes", "type": "int64", "value": 512},
                {"key": "compressed", "type": "bool", "value": True},
            ],
        },
        {"timestamp": (T0 + 2_000) // 1000, "fields": [{"key": "event", "type": "string", "value": "no attributes"}]},
    ]
    assert server["flags"] == 0  # the SDK's OTLP flags carry only the is-remote bits

    client = got["SELECT cart"]
    assert client["processID"] == db
    assert client["references"] == [{"refType": "CHILD_OF", "traceID": trace_hex(root), "spanID": span_hex(root)}]
    assert (client["startTime"], client["duration"]) == ((T0 + MS) // 1000, 123)
    client_tags = tag_map(client["tags"])
    assert client_tags["span.kind"] == ("string", "client")
    assert client_tags["otel.status_code"] == ("string", "ERROR")
    assert client_tags["error"] == ("bool", True)
    assert client_tags["otel.status_description"] == ("string", "deadlock detected")
    (exception,) = client["logs"]
    assert exception["fields"][0] == {"key": "event", "type": "string", "value": "exception"}
    assert tag_map(exception["fields"])["exception.type"] == ("string", "ValueError")

    kinds = {name: tag_map(span["tags"]).get("span.kind") for name, span in got.items()}
    assert kinds == {
        "GET /cart": ("string", "server"),
        "SELECT cart": ("string", "client"),
        "render": ("string", "internal"),
        "publish cart.viewed": ("string", "producer"),
        "consume cart.viewed": ("string", "consumer"),
    }
    render = tag_map(got["render"]["tags"])
    assert render["otel.status_code"] == ("string", "OK")
    assert "error" not in render
    assert "otel.status_code" not in tag_map(got["publish cart.viewed"]["tags"])  # unset status: no tag


def test_search_results_and_values_json_cannot_carry(store: TraceStore) -> None:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    spans = resource_spans.scope_spans.add().spans
    for n, (key, value) in enumerate(
        [
            ("nan", AnyValue(double_value=float("nan"))),
            ("inf", AnyValue(double_value=float("inf"))),
            ("minus.inf", AnyValue(double_value=float("-inf"))),
            ("blob", AnyValue(bytes_value=b"\x01\xff")),
            ("unset", AnyValue()),
        ],
        start=1,
    ):
        span = spans.add(
            trace_id=n.to_bytes(16, "big"),
            span_id=n.to_bytes(8, "big"),
            name=key,
            start_time_unix_nano=T0 + n * 10**9,
            end_time_unix_nano=T0 + n * 10**9 - 5,  # ends before it starts: a duration of 0, not negative
        )
        span.attributes.add(key=key, value=value)
    store.ingest_request(request)
    response = strict_json(jaeger.traces_response(store.find_traces(TraceQuery(service="unknown_service"))))
    assert [t["spans"][0]["operationName"] for t in response["data"]] == ["unset", "blob", "minus.inf", "inf", "nan"]
    values = {t["spans"][0]["operationName"]: tag_map(t["spans"][0]["tags"]) for t in response["data"]}
    assert values["nan"]["nan"] == ("string", "NaN")
    assert values["inf"]["inf"] == ("string", "Infinity")
    assert values["minus.inf"]["minus.inf"] == ("string", "-Infinity")
    assert values["blob"]["blob"] == ("string", "01ff")
    assert values["unset"]["unset"] == ("string", "")
    assert {t["spans"][0]["duration"] for t in response["data"]} == {0}
    assert [p["serviceName"] for t in response["data"] for p in t["processes"].values()] == ["unknown_service"] * 5
    assert jaeger.traces_response([]) == {"data": [], "total": 0, "limit": 0, "offset": 0, "errors": None}


# -- query strings ---------------------------------------------------------------------------------------


def parse(query: str | dict[str, str], now_us: int = 1_000_000_000_000_000) -> TraceQuery:
    text = query if isinstance(query, str) else urlencode(query)
    return jaeger.query_from_params(parse_qs(text), now_us=now_us)


def test_what_jaegers_ui_sends() -> None:
    query = parse(
        {
            "service": "checkout",
            "operation": "SELECT cart",
            "tags": '{"http.status_code":"500","error":"true"}',
            "minDuration": "1.2s",
            "maxDuration": "5s",
            "start": "1700000000000000",
            "end": "1700000360000000",
            "lookback": "custom",
            "limit": "50",
        }
    )
    assert query == TraceQuery(
        service="checkout",
        operation="SELECT cart",
        tags={"http.status_code": "500"},
        min_duration_us=1_200_000,
        max_duration_us=5_000_000,
        start_us=1_700_000_000_000_000,
        end_us=1_700_000_360_000_000,
        errors_only=True,
        limit=50,
    )


def test_defaults_and_empty_values() -> None:
    assert parse("") == TraceQuery(limit=20)
    assert parse("service=web&operation=&tags=&minDuration=&limit=") == TraceQuery(service="web")
    assert parse("service=a&service=b").service == "a"  # the first, as Go's FormValue


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ('{"a":"1","b":"two words"}', {"a": "1", "b": "two words"}),
        ('{"n":500,"ok":true,"r":0.5}', {"n": "500", "ok": "true", "r": "0.5"}),
        ("a=1 b=two", {"a": "1", "b": "two"}),
        ('http.url="http://x/?q=1 2" user.id=u1', {"http.url": "http://x/?q=1 2", "user.id": "u1"}),
        ('"key with space"=v  empty=', {"key with space": "v", "empty": ""}),
        ('q="say \\"hi\\""', {"q": 'say "hi"'}),
    ],
)
def test_tags_as_json_or_logfmt(tags: str, expected: dict[str, str]) -> None:
    assert dict(parse({"tags": tags}).tags) == expected


def test_error_true_means_errors_only() -> None:
    assert parse({"tags": "error=true http.method=GET"}) == TraceQuery(tags={"http.method": "GET"}, errors_only=True)
    assert parse({"tags": '{"error":"false"}'}) == TraceQuery(tags={"error": "false"})


def test_jaegers_tag_parameter() -> None:
    assert dict(parse("tag=http.url:http://x:8080/&tag=a:1").tags) == {"http.url": "http://x:8080/", "a": "1"}
    with pytest.raises(ValueError, match="key:value"):
        parse("tag=novalue")


@pytest.mark.parametrize(
    ("text", "min_us", "max_us"),
    [
        ("100ms", 100_000, 100_000),
        ("500us", 500, 500),
        ("500µs", 500, 500),
        ("500μs", 500, 500),
        ("1m", 60_000_000, 60_000_000),
        ("1h30m", 5_400_000_000, 5_400_000_000),
        ("1.5s", 1_500_000, 1_500_000),
        (".5ms", 500, 500),
        ("1500ns", 2, 1),  # a minimum rounds up to whole microseconds, a maximum down
        ("0", 0, 0),
        ("+2s", 2_000_000, 2_000_000),
    ],
)
def test_go_durations(text: str, min_us: int, max_us: int) -> None:
    assert parse({"minDuration": text}).min_duration_us == min_us
    assert parse({"maxDuration": text}).max_duration_us == max_us


def test_lookback() -> None:
    now = 1_700_000_000_000_000
    assert parse({"lookback": "1h"}, now_us=now) == TraceQuery(start_us=now - 3_600_000_000)
    assert parse({"lookback": "2d"}, now_us=now).start_us == now - 2 * 86_400_000_000
    assert parse({"lookback": "90m", "end": "5000000000"}, now_us=now) == TraceQuery(
        start_us=5_000_000_000 - 5_400_000_000, end_us=5_000_000_000
    )
    assert parse({"lookback": "1h", "start": "7"}, now_us=now).start_us == 7  # start says it
    assert parse({"lookback": "custom"}, now_us=now).start_us is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"minDuration": "5x"}, "minDuration: '5x' is not a duration"),
        ({"maxDuration": "1.2.3s"}, "maxDuration: '1.2.3s' is not a duration"),
        ({"minDuration": "ms"}, "minDuration: 'ms' is not a duration"),
        ({"minDuration": "10"}, "minDuration: '10' is not a duration"),  # Go wants a unit
        ({"minDuration": "-1s"}, "minDuration must not be negative"),
        ({"minDuration": "2s", "maxDuration": "1s"}, "maxDuration must not be less than minDuration"),
        ({"start": "yesterday"}, "start: 'yesterday' is not an integer"),
        ({"end": "1.5"}, "end: '1.5' is not an integer"),
        ({"start": "10", "end": "5"}, "end must not be before start"),
        ({"limit": "many"}, "limit: 'many' is not an integer"),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"lookback": "a while"}, "lookback: 'a while' is not a duration"),
        ({"tags": '{"a":'}, "is not a JSON object"),
        ({"tags": '["a"]'}, "neither a JSON object nor logfmt"),
        ({"tags": '{"a":{"b":"c"}}'}, "the value of 'a' is not a string"),
        ({"tags": "justakey"}, "neither a JSON object nor logfmt"),
        ({"tags": 'a="unterminated'}, "neither a JSON object nor logfmt"),
    ],
)
def test_bad_values_are_refused_with_a_reason(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(params)


def test_from_query_string_to_answer(store: TraceStore) -> None:
    sdk = Sdk()
    rich_trace(sdk)
    store.ingest_request(sdk.take())
    params = parse_qs(urlencode({"service": "db", "tags": "error=true", "minDuration": "100us", "limit": "5"}))
    response = strict_json(jaeger.traces_response(store.find_traces(jaeger.query_from_params(params))))
    (trace,) = response["data"]
    assert [span["operationName"] for span in trace["spans"]][:2] == ["GET /cart", "SELECT cart"]
    params = parse_qs(urlencode({"service": "db", "minDuration": "124us"}))
    assert jaeger.traces_response(store.find_traces(jaeger.query_from_params(params)))["data"] == []
