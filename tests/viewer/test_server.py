"""`sentinel traces` as a real process: OTLP over gRPC (the OpenTelemetry SDK's exporter) and over HTTP
(protobuf and JSON), the Jaeger query API and the UI routes over HTTP, bad input; and `backend "embedded"`,
where the proxy runs the viewer itself and a trace id from the access log opens its trace."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id

from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.process import sentinel, wait_for
from tests.support.upstream import UpstreamServer
from tests.support.viewer import ViewerProcess, http, viewer_process


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[ViewerProcess]:
    with viewer_process(tmp_path / "traces.db") as v:
        yield v


def sdk_spans(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def make_trace(provider: TracerProvider) -> tuple[str, str, str]:
    tracer = provider.get_tracer("checkout", "1.2.3")
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.response.status_code", 500)
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
            child.set_attribute("payment.amount", 12.5)
            child.set_attribute("payment.retry", True)
            child.add_event("declined", {"reason": "insufficient funds"})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    ctx, child_ctx = root.get_span_context(), child.get_span_context()
    return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id), format_span_id(child_ctx.span_id)


def test_grpc_export_and_the_jaeger_api(viewer: ViewerProcess) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{viewer.ports['otlp grpc']}", insecure=True))
    )
    trace_id, root_id, _child_id = make_trace(provider)
    provider.shutdown()
    wait_for(lambda: viewer.get(f"/api/traces/{trace_id}")[0] == 200, what="the trace to be stored")

    assert viewer.api("/api/services")["data"] == ["shop"]
    assert viewer.api("/api/services/shop/operations")["data"] == ["GET /checkout", "charge"]
    (trace,) = viewer.api(f"/api/traces/{trace_id}")["data"]
    spans = {s["operationName"]: s for s in trace["spans"]}
    assert spans["GET /checkout"]["spanID"] == root_id
    assert spans["charge"]["references"] == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": root_id}]
    tags = {t["key"]: t for t in spans["charge"]["tags"]}
    assert tags["payment.amount"]["value"] == 12.5
    assert tags["payment.retry"]["value"] is True
    assert tags["error"]["value"] is True
    assert trace["processes"][spans["charge"]["processID"]]["serviceName"] == "shop"
    found = viewer.api("/api/traces?service=shop&tags=%7B%22error%22%3A%22true%22%7D&limit=5")["data"]
    assert [t["traceID"] for t in found] == [trace_id]
    assert viewer.api("/api/traces?service=shop&operation=charge&minDuration=1h")["data"] == []


def test_http_export_protobuf_and_json(viewer: ViewerProcess) -> None:
    provider, memory = sdk_spans("billing")
    trace_id, _root_id, _ = make_trace(provider)
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    port = viewer.ports["otlp http"]
    status, headers, answer = http("POST", port, "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    assert status == 200
    assert headers["content-type"] == "application/x-protobuf"
    assert answer == b""  # an empty ExportTraceServiceResponse
    assert len(viewer.api(f"/api/traces/{trace_id}")["data"][0]["spans"]) == 2

    # OTLP/JSON: ids in hex, as the OTLP specification writes them.
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "json span",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "k", "value": {"intValue": "7"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, _, answer = http(
        "POST", port, "/v1/traces", json.dumps(document).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    assert answer == b"{}"
    (trace,) = viewer.api("/api/traces/5b8efff798038103d269b633813fc60c")["data"]
    (span,) = trace["spans"]
    assert span["spanID"] == "eee19b7ec3c1b174"
    assert span["startTime"] == 1544712660000000
    assert span["duration"] == 1_000_000
    assert {t["key"]: t["value"] for t in span["tags"]}["k"] == 7


def test_bad_input_gets_4xx_and_the_viewer_carries_on(viewer: ViewerProcess) -> None:
    port = viewer.ports["otlp http"]
    assert http("POST", port, "/v1/traces", b"\xff\x00garbage", {"Content-Type": "application/x-protobuf"})[0] == 400
    assert http("POST", port, "/v1/traces", b"{not json", {"Content-Type": "application/json"})[0] == 400
    assert http("POST", port, "/v1/traces", b"x", {"Content-Type": "text/plain"})[0] == 415
    assert http("POST", port, "/v1/metrics", b"x", {"Content-Type": "application/x-protobuf"})[0] == 404
    assert viewer.get("/api/traces?minDuration=soon")[0] == 400
    assert viewer.get("/api/traces/0123456789abcdef0123456789abcdef")[0] == 404
    assert viewer.get("/nothing/here")[0] == 404
    assert viewer.get("/static/../server.py")[0] == 404
    assert viewer.api("/api/services")["data"] == []


def test_ui_routes_serve_the_page(viewer: ViewerProcess) -> None:
    for path in ("/", "/search?service=x", "/trace/4bf92f3577b34da6a3ce929d0e0e4736"):
        status, headers, body = viewer.get(path)
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b"<html" in body.lower()
    status, headers, _ = viewer.get("/static/app.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_embedded_backend_runs_the_viewer(tmp_path: Path, upstream: UpstreamServer) -> None:
    otlp, ui = free_port(), free_port()
    tracing = (
        "observability {\n    tracing {\n"
        f'        backend "embedded" {{\n            endpoint "http://127.0.0.1:{otlp}"\n'
        f'            ui "127.0.0.1:{ui}"\n            db "{tmp_path / "embedded.db"}"\n        }}\n'
        "        sampling-rate 1.0\n        schedule-delay-ms 50\n    }\n"
        "    logging {\n        access-log {\n            enabled #true\n        }\n    }\n}\n"
    )
    with sentinel(tmp_path, proxy_config(upstream.address, extra=tracing)) as proc:
        wait_for(lambda: proc.saw(f"sentinel traces: ui on 127.0.0.1:{ui}"), 20, what="the embedded viewer")
        resp = request(proc.port, path="/api/orders")
        assert resp.status == 200
        # The access log's trace id opens the trace in the viewer.
        wait_for(lambda: '"path":"/api/orders"' in proc.log(), what="the access-log line")
        line = next(json.loads(x) for x in proc.log().splitlines() if '"path":"/api/orders"' in x)
        trace_id = line["trace_id"]
        wait_for(lambda: http("GET", ui, f"/api/traces/{trace_id}")[0] == 200, 20, what="the trace in the viewer")
        (trace,) = json.loads(http("GET", ui, f"/api/traces/{trace_id}")[2])["data"]
        assert {s["operationName"] for s in trace["spans"]} == {"GET /*", "GET"}
        assert http("GET", ui, f"/trace/{trace_id}")[0] == 200
    # The viewer stopped with the proxy.
    wait_for(lambda: http_refused(ui), what="the viewer to stop")


def http_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_framing_on_the_otlp_http_receiver(viewer: ViewerProcess) -> None:
    port = viewer.ports["otlp http"]
    negative = raw_exchange(
        port,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: -1\r\n\r\n",
    )
    assert negative.startswith(b"HTTP/1.1 400")
    chunked = raw_exchange(
        port,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 411")
    assert chunked.count(b"HTTP/1.1 ") == 1  # the chunk bytes were not read as another request
    # A gzip body that inflates past the limit is refused without inflating it all.
    bomb = gzip.compress(b"\0" * (80 * 1024 * 1024))
    status, _, _ = http(
        "POST", port, "/v1/traces", bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    )
    assert status == 400
    assert viewer.api("/api/services")["data"] == []


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sentinel.cli.main",
                "traces",
                "--db",
                str(tmp_path / "t.db"),
                "--grpc",
                f"127.0.0.1:{port}",
                "--http",
                "127.0.0.1:0",
                "--ui",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
