"""The demo backend of the quick start: the `api-backend` of the tracing guide, traced with the
OpenTelemetry SDK so that its spans join the proxy's trace (it continues the incoming `traceparent`).

    python examples/demo_backend/app.py [--listen 127.0.0.1:3000] [--otlp-endpoint http://127.0.0.1:4317]

Answers `GET /api/users`, `GET /api/products`, `POST /api/orders` (echoes the order), `GET /health`,
anything else under /api/ with 404. Each request is a SERVER span with a child `db.query` span.
Prints `demo backend listening on HOST:PORT` once it accepts connections; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

USERS = [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Linus"}]
PRODUCTS = [{"id": "widget", "price": 9.5}, {"id": "gadget", "price": 24.0}]
_PROPAGATOR = TraceContextTextMapPropagator()


def make_handler(tracer: Tracer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "demo-backend"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the proxy's access log is the one to read

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(200, {"status": "ok"})
                return
            parent = _PROPAGATOR.extract(dict(self.headers.items()))
            with tracer.start_as_current_span(f"{self.command} {path}", context=parent, kind=SpanKind.SERVER) as span:
                span.set_attribute("http.request.method", self.command)
                span.set_attribute("url.path", path)
                status, answer = self._route(path, body)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            self._send(status, answer)

        def _route(self, path: str, body: bytes) -> tuple[int, Any]:
            with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT) as db:
                db.set_attribute("db.system.name", "sqlite")
                time.sleep(0.002)  # a stand-in for the query, so the waterfall has something to show
                if self.command == "GET" and path == "/api/users":
                    db.set_attribute("db.query.text", "SELECT id, name FROM users")
                    return 200, USERS
                if self.command == "GET" and path == "/api/products":
                    db.set_attribute("db.query.text", "SELECT id, price FROM products")
                    return 200, PRODUCTS
                if self.command == "POST" and path == "/api/orders":
                    db.set_attribute("db.query.text", "INSERT INTO orders (item) VALUES (?)")
                    try:
                        order = json.loads(body or b"{}")
                    except ValueError:
                        return 400, {"error": "the order is not JSON"}
                    return 201, {"order": order, "status": "accepted"}
            return 404, {"error": "not found", "path": path}

        def _send(self, status: int, answer: Any) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-backend")
    parser.add_argument("--listen", default="127.0.0.1:3000", metavar="HOST:PORT")
    parser.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        help="where its spans go (default $OTEL_EXPORTER_OTLP_ENDPOINT, else %(default)s)",
    )
    parser.add_argument("--service-name", default=os.environ.get("OTEL_SERVICE_NAME", "api-backend"))
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    provider = TracerProvider(resource=Resource.create({"service.name": args.service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=args.otlp_endpoint, insecure=True), schedule_delay_millis=500)
    )
    server = ThreadingHTTPServer((host, int(port)), make_handler(provider.get_tracer("demo-backend")))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"demo backend listening on {host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
