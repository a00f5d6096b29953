"""One connected trace across the caller, Sentinel and an upstream traced with the OpenTelemetry SDK
(SPEC §6.4, §6.5): caller span → Sentinel SERVER → Sentinel CLIENT → upstream SERVER, all exported for
real (Sentinel over OTLP/gRPC to a receiver built from the official messages)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.metrics import scrape, value
from tests.support.otlp_receivers import GrpcReceiver
from tests.support.process import rss, sentinel, wait_for
from tests.support.threaded import LoopThread
from tests.support.upstream import UpstreamServer

PROPAGATOR = TraceContextTextMapPropagator()


class TracedUpstream:
    """An HTTP upstream that continues the incoming trace with the OpenTelemetry SDK."""

    def __init__(self, provider: TracerProvider) -> None:
        tracer = provider.get_tracer("api-backend")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                context = PROPAGATOR.extract(dict(self.headers.items()))
                with tracer.start_as_current_span("GET /api/users", context=context, kind=SpanKind.SERVER):
                    body = b'{"users":[]}'
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_one_connected_trace(tmp_path: Path, otlp_receiver: tuple[LoopThread, GrpcReceiver]) -> None:
    loop, otlp = otlp_receiver
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    upstream = TracedUpstream(provider)
    tracing = (
        "observability {\n    tracing {\n"
        f'        backend "otlp" {{\n            endpoint "http://127.0.0.1:{otlp.port}"\n        }}\n'
        '        sampling-rate 1.0\n        service-name "sentinel"\n        schedule-delay-ms 50\n    }\n}\n'
    )
    try:
        with sentinel(tmp_path, proxy_config(upstream.address, extra=tracing)) as proc:
            caller = provider.get_tracer("caller")
            with caller.start_as_current_span("caller", kind=SpanKind.CLIENT) as caller_span:
                headers: dict[str, str] = {}
                PROPAGATOR.inject(headers)
                resp = request(proc.port, path="/api/users", headers=headers)
            assert resp.status == 200
            wait_for(lambda: len(loop.call(lambda: otlp.spans)) >= 2, timeout=15, what="Sentinel's spans")
            exported = loop.call(lambda: list(otlp.spans))
            resource = loop.call(lambda: otlp.requests[0].request.resource_spans[0].resource)
    finally:
        upstream.stop()

    trace_id = caller_span.get_span_context().trace_id
    (server,) = [s for s in exported if s.kind == 2]
    (client,) = [s for s in exported if s.kind == 3]
    (backend,) = [s for s in memory.get_finished_spans() if s.name == "GET /api/users"]

    for span in (server, client):
        assert span.trace_id.hex() == format_trace_id(trace_id)
    assert server.parent_span_id.hex() == format_span_id(caller_span.get_span_context().span_id)
    assert client.parent_span_id == server.span_id
    assert backend.context is not None
    assert backend.parent is not None
    assert backend.context.trace_id == trace_id
    assert format_span_id(backend.parent.span_id) == client.span_id.hex()

    assert server.name == "GET /*"
    assert client.name == "GET"
    server_attrs = {kv.key: kv.value for kv in server.attributes}
    assert server_attrs["http.request.method"].string_value == "GET"
    assert server_attrs["url.path"].string_value == "/api/users"
    assert server_attrs["http.route"].string_value == "/*"
    assert server_attrs["http.response.status_code"].int_value == 200
    assert server_attrs["sentinel.route.id"].string_value == "api"
    assert server_attrs["sentinel.upstream.id"].string_value == "backend"
    assert server_attrs["sentinel.correlation_id"].string_value == resp.header("x-correlation-id")
    client_attrs = {kv.key: kv.value for kv in client.attributes}
    assert client_attrs["server.address"].string_value == "127.0.0.1"
    assert client_attrs["url.full"].string_value == f"http://{upstream.address}/api/users"
    assert client_attrs["http.response.status_code"].int_value == 200
    resource_attrs = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert resource_attrs["service.name"] == "sentinel"


def _sample_everything(port: int) -> str:
    """Tracing at sampling 1.0, exported to the receiver on `port` every 50 ms."""
    return (
        "observability {\n    tracing {\n"
        f'        backend "otlp" {{\n            endpoint "http://127.0.0.1:{port}"\n        }}\n'
        "        sampling-rate 1.0\n        schedule-delay-ms 50\n    }\n}\n"
    )


def test_every_workers_spans_arrive(
    tmp_path: Path, otlp_receiver: tuple[LoopThread, GrpcReceiver], upstream: UpstreamServer
) -> None:
    loop, otlp = otlp_receiver
    tracing = _sample_everything(otlp.port)
    config = proxy_config(upstream.address, extra=tracing, workers=2)
    with sentinel(tmp_path, config) as proc:
        instances = set()
        correlation_ids = set()
        for i in range(60):
            resp = request(proc.port, path=f"/api/{i}")
            assert resp.status == 200
            correlation_ids.add(resp.header("x-correlation-id"))
            instances.add(request(proc.port, path="/status").json()["instance_id"])
        assert len(instances) == 2  # both workers served traffic (fresh connections spread over them)

        def server_ids() -> set[str]:
            spans = loop.call(lambda: list(otlp.spans))
            return {
                kv.value.string_value
                for s in spans
                if s.kind == 2
                for kv in s.attributes
                if kv.key == "sentinel.correlation_id"
            }

        wait_for(lambda: correlation_ids <= server_ids(), timeout=15, what="a SERVER span for every request")


def test_collector_down_does_not_break_requests_and_memory_stays_flat(tmp_path: Path, upstream: UpstreamServer) -> None:
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: every export is refused
        tracing = (
            "observability {\n    tracing {\n"
            f'        backend "otlp" {{\n            endpoint "http://127.0.0.1:{dead.getsockname()[1]}"\n        }}\n'
            "        sampling-rate 1.0\n        max-queue-size 200\n        max-export-batch-size 100\n"
            "        schedule-delay-ms 20\n    }\n"
            '    metrics {\n        address "127.0.0.1:0"\n    }\n}\n'
        )
        config = proxy_config(upstream.address, extra=tracing).replace(
            "worker-threads 1", "worker-threads 1\n    graceful-shutdown-timeout-secs 1"
        )
        with sentinel(tmp_path, config) as proc:
            supervisor = proc.proc.pid
            for _ in range(200):  # warm-up: queue filled, retry machinery running
                assert request(proc.port, path="/x").status == 200
            before = rss(supervisor)
            for _ in range(2000):
                assert request(proc.port, path="/x").status == 200
            after = rss(supervisor)
            assert after - before < 16 * 1024 * 1024, (before, after)
            # The drops are counted where operators look: 2200 requests made a SERVER and a CLIENT span
            # each; once the worker's last batch has reached the exporter, all but the batch in flight
            # (100) are dropped or queued.
            wait_for(lambda: proc.metrics_port != 0, what="the metrics endpoint")

            def figures() -> tuple[float, float, float, float]:
                text = scrape(proc.metrics_port).body.decode()
                return (
                    value(text, "otel_exporter_spans_dropped_total", reason="queue_full"),
                    value(text, "otel_exporter_queue_size"),
                    value(text, "otel_exporter_spans_exported_total"),
                    value(text, "sentinel_spans_started_total", sampled="true"),
                )

            wait_for(lambda: sum(figures()[:2]) >= 2 * 2200 - 100, what="every span to be dropped or queued")
            dropped, queued, exported, started = figures()
            assert exported == 0
            assert started == 2200
            assert queued <= 200
            assert dropped + queued <= 2 * 2200


def test_server_span_host_and_user_agent_follow_each_request_on_a_connection(
    tmp_path: Path, otlp_receiver: tuple[LoopThread, GrpcReceiver], upstream: UpstreamServer
) -> None:
    # server.address and user_agent.original are encoded once per connection and remade when they
    # change: three requests on one keep-alive connection, each must carry its own.
    loop, otlp = otlp_receiver
    tracing = _sample_everything(otlp.port)
    heads = [
        b"GET /one HTTP/1.1\r\nHost: a.test:8080\r\nUser-Agent: first/1\r\n\r\n",
        b"GET /two HTTP/1.1\r\nHost: b.test\r\nUser-Agent: second/2\r\n\r\n",
        b"GET /three HTTP/1.1\r\nHost: b.test\r\n\r\n",
    ]
    with sentinel(tmp_path, proxy_config(upstream.address, extra=tracing)) as proc:
        with RawClient(proc.port) as client:
            for head in heads:
                client.send(head)
                assert client.read_response().status == 200
        wait_for(lambda: len(loop.call(lambda: otlp.spans)) >= 6, timeout=15, what="the SERVER and CLIENT spans")
        exported = loop.call(lambda: list(otlp.spans))
    seen = {}
    for span in exported:
        if span.kind == 2:
            attrs = {kv.key: kv.value.string_value for kv in span.attributes}
            seen[attrs["url.path"]] = (attrs["server.address"], attrs.get("user_agent.original"))
    assert seen == {"/one": ("a.test", "first/1"), "/two": ("b.test", "second/2"), "/three": ("b.test", None)}


def test_server_and_client_spans_field_by_field(
    tmp_path: Path, otlp_receiver: tuple[LoopThread, GrpcReceiver], upstream: UpstreamServer
) -> None:
    # Every field and attribute of both spans of two requests on one connection: a failed POST that
    # continues a remote trace (query recorded, tracestate, a body size beyond two-byte varints), then a
    # GET whose path is longer than the span encoder's cached string lengths.
    loop, otlp = otlp_receiver
    recording_query = "sampling-rate 1.0\n        record-query #true"
    tracing = _sample_everything(otlp.port).replace("sampling-rate 1.0", recording_query)
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    body = b"b" * 20000
    long_path = "/" + "segment-" * 20
    with sentinel(tmp_path, proxy_config(upstream.address, extra=tracing)) as proc:
        with RawClient(proc.port) as client:
            client_port = client.sock.getsockname()[1]
            client.send(
                b"POST /status/503?q=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: probe/1.0\r\n"
                b"traceparent: 00-%s-%s-01\r\ntracestate: vendor=abc\r\nContent-Length: %d\r\n\r\n%s"
                % (trace_id.encode(), parent_id.encode(), len(body), body)
            )
            failed = client.read_response()
            client.send(b"GET %s HTTP/1.1\r\nHost: test.local:8080\r\n\r\n" % long_path.encode())
            echoed = client.read_response()
        assert (failed.status, echoed.status) == (503, 200)
        wait_for(lambda: len(loop.call(lambda: otlp.spans)) >= 4, timeout=15, what="two SERVER and two CLIENT spans")
        exported = loop.call(lambda: list(otlp.spans))

    def attrs(span: Any) -> dict[str, object]:
        out: dict[str, object] = {}
        for kv in span.attributes:
            assert kv.key not in out, kv.key  # no attribute twice
            out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
        return out

    servers = {attrs(s)["url.path"]: s for s in exported if s.kind == 2}
    clients = {s.parent_span_id: s for s in exported if s.kind == 3}
    assert len(servers) == len(clients) == 2
    connection = {
        "url.scheme": "http",
        "client.address": "127.0.0.1",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": client_port,
        "network.protocol.version": "1.1",
    }
    route = {"http.route": "/*", "sentinel.route.id": "api", "sentinel.upstream.id": "backend"}
    target = {
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "network.peer.address": "127.0.0.1",
        "sentinel.upstream.id": "backend",
    }

    server = servers["/status/503"]
    assert (server.name, server.kind, server.trace_id.hex(), server.parent_span_id.hex()) == (
        "POST /*",
        2,
        trace_id,
        parent_id,
    )
    assert (server.trace_state, server.flags, server.status.code, server.status.message) == ("vendor=abc", 0x301, 2, "")
    assert 0 < server.end_time_unix_nano - server.start_time_unix_nano < 10**10
    assert attrs(server) == {
        "http.request.method": "POST",
        "url.path": "/status/503",
        "url.query": "q=1",
        "http.response.status_code": 503,
        "http.request.body.size": 20000,
        "http.response.body.size": len(failed.body),
        "error.type": "503",
        "sentinel.correlation_id": failed.header("x-correlation-id"),
        **connection,
        "server.address": "test.local",
        "server.port": proc.port,  # the Host field has none: the listener's
        "user_agent.original": "probe/1.0",
        **route,
    }
    client_span = clients[server.span_id]
    assert (client_span.name, client_span.kind, client_span.trace_id.hex(), client_span.trace_state) == (
        "POST",
        3,
        trace_id,
        "",
    )
    assert (client_span.flags, client_span.status.code) == (0x101, 2)
    assert server.start_time_unix_nano <= client_span.start_time_unix_nano <= client_span.end_time_unix_nano
    assert client_span.end_time_unix_nano <= server.end_time_unix_nano
    assert attrs(client_span) == {
        "http.request.method": "POST",
        "url.full": f"http://{upstream.address}/status/503",
        "http.response.status_code": 503,
        "error.type": "503",
        **target,
    }

    server = servers[long_path]
    assert (server.name, server.kind, server.parent_span_id, server.trace_state) == ("GET /*", 2, b"", "")
    assert server.trace_id.hex() != trace_id
    # W3C flags random + sampled; the parent (none: a local root) is known not to be remote.
    assert (server.flags & 0xFF, server.flags >> 8, server.status.code) == (0x03, 0x01, 0)
    assert attrs(server) == {
        "http.request.method": "GET",
        "url.path": long_path,
        "http.response.status_code": 200,
        "http.request.body.size": 0,
        "http.response.body.size": len(echoed.body),
        "sentinel.correlation_id": echoed.header("x-correlation-id"),
        **connection,
        "server.address": "test.local",
        "server.port": 8080,  # the Host field's
        **route,
    }
    client_span = clients[server.span_id]
    # Its W3C flags are the traceparent's it sent: sampled, and random (the proxy made the trace id).
    assert (client_span.name, client_span.flags, client_span.status.code) == ("GET", 0x103, 0)
    assert attrs(client_span) == {
        "http.request.method": "GET",
        "url.full": f"http://{upstream.address}{long_path}",
        "http.response.status_code": 200,
        **target,
    }


def test_retried_attempts_unrouted_requests_and_http10_spans(
    tmp_path: Path, otlp_receiver: tuple[LoopThread, GrpcReceiver], upstream: UpstreamServer
) -> None:
    # The span encoder's rarer branches, decoded by the official messages: a CLIENT span ended by a
    # transport error, the retry's CLIENT span (resend count), an HTTP/1.0 request and a request no
    # route matches (SERVER span without route attributes).
    loop, otlp = otlp_receiver
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    config = proxy_config(dead, upstream.address, extra=_sample_everything(otlp.port)).replace(
        'matches { path-prefix "/"; }', 'matches { path-prefix "/api/"; }'
    )
    with sentinel(tmp_path, config) as proc:
        statuses = [request(proc.port, path=f"/api/r{n}").status for n in range(2)]
        with RawClient(proc.port) as client:
            client.send(b"GET /api/old HTTP/1.0\r\nHost: test.local\r\n\r\n")
            old = client.read_response()
        unrouted = request(proc.port, path="/elsewhere")
        assert (statuses, old.status, unrouted.status) == ([200, 200], 200, 404)
        wait_for(lambda: len(loop.call(lambda: otlp.spans)) >= 8, timeout=15, what="the spans of four requests")
        exported = loop.call(lambda: list(otlp.spans))

    def attrs(span: Any) -> dict[str, object]:
        return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}

    servers = {str(attrs(s)["url.path"]): s for s in exported if s.kind == 2}
    children: dict[bytes, list[Any]] = {}
    for span in exported:
        if span.kind == 3:
            children.setdefault(span.parent_span_id, []).append(span)
    # Round robin: one of the two /api/r requests went to the dead target first, then to the live one.
    retried = [children[servers[f"/api/r{n}"].span_id] for n in range(2)]
    (attempts,) = [spans for spans in retried if len(spans) == 2]
    failed, answered = sorted(attempts, key=lambda s: s.start_time_unix_nano)
    assert (failed.status.code, failed.flags) == (2, 0x103)
    assert attrs(failed)["error.type"] == "connect_refused"
    assert attrs(failed)["server.address"] == "127.0.0.1"
    assert "http.response.status_code" not in attrs(failed)
    assert (answered.status.code, answered.flags) == (0, 0x103)
    assert (attrs(answered)["http.request.resend_count"], attrs(answered)["http.response.status_code"]) == (1, 200)
    assert failed.span_id != answered.span_id
    seen = {r.header("traceparent") for r in upstream.requests}
    assert f"00-{answered.trace_id.hex()}-{answered.span_id.hex()}-03" in seen  # the retry named its own span
    old_server = servers["/api/old"]
    assert attrs(old_server)["network.protocol.version"] == "1.0"
    assert (old_server.name, attrs(old_server)["http.route"]) == ("GET /api/*", "/api/*")
    lost = servers["/elsewhere"]
    assert (lost.name, lost.status.code, attrs(lost)["http.response.status_code"]) == ("GET", 0, 404)
    assert not {"http.route", "sentinel.route.id", "sentinel.upstream.id"} & set(attrs(lost))
    assert lost.span_id not in children  # nothing was sent upstream
