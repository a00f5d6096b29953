"""The trace viewer's servers (SPEC §9): OTLP/gRPC and OTLP/HTTP receivers feeding the store, and one HTTP
server for the web UI and the Jaeger query API.

Everything is threaded (grpcio's server, stdlib `ThreadingHTTPServer`): this is a single-machine tool
whose work is in SQLite and protobuf decoding, both of which release the GIL for the heavy parts.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc

from sentinel.config.model import SocketAddress
from sentinel.viewer import jaeger
from sentinel.viewer.store import TraceStore

log = logging.getLogger("sentinel.viewer")

_EXPORT_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
RETENTION_INTERVAL = 60.0
_MAX_BODY = 64 * 1024 * 1024  # an OTLP/HTTP request larger than this is refused (413)
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_TRACE_PATH = re.compile(r"^/api/traces/([0-9a-fA-F]{1,32})$")
_OPERATIONS_PATH = re.compile(r"^/api/services/([^/]+)/operations$")
_UI_PATH = re.compile(r"^/(search|trace/[0-9a-fA-F]{1,32})?/?$")


class ViewerServer:
    """The receivers and the UI/API server around one store. `start()` binds everything (port 0 allowed);
    `bound` then holds the actual addresses."""

    def __init__(
        self, store: TraceStore, grpc_address: SocketAddress, http_address: SocketAddress, ui_address: SocketAddress
    ) -> None:
        self.store = store
        self.addresses = {"otlp grpc": grpc_address, "otlp http": http_address, "ui": ui_address}
        self.bound: dict[str, tuple[str, int]] = {}
        self._grpc: grpc.Server | None = None
        self._http: list[ThreadingHTTPServer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        grpc_address = self.addresses["otlp grpc"]
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
            options=[("grpc.max_receive_message_length", _MAX_BODY)],
        )
        # Bytes in, bytes out: the store decodes the request once, and an empty message is a valid
        # ExportTraceServiceResponse.
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(self._export)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_EXPORT_SERVICE, {"Export": handler})])
        try:
            port = server.add_insecure_port(f"{_host(grpc_address)}:{grpc_address.port}")
        except RuntimeError:  # grpcio reports a failed bind this way
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {grpc_address} for OTLP/gRPC (in use?)")
        server.start()
        self._grpc = server
        self.bound["otlp grpc"] = (grpc_address.host, port)
        for name in ("otlp http", "ui"):
            address = self.addresses[name]
            http = _HttpServer((address.host, address.port), self.store)
            self._http.append(http)
            self.bound[name] = (address.host, http.server_address[1])
            self._spawn(http.serve_forever, f"viewer-{name.replace(' ', '-')}")
        self._spawn(self._retention, "viewer-retention")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            self.store.ingest(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an ExportTraceServiceRequest: {exc}")
        return b""

    def _retention(self) -> None:
        while not self._stop.wait(RETENTION_INTERVAL):
            try:
                deleted = self.store.enforce_retention()
            except Exception:
                log.exception("trace retention failed")
                continue
            if deleted:
                log.info("retention removed %d spans", deleted)

    def stop(self) -> None:
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
        for http in self._http:
            http.shutdown()
            http.server_close()
        for thread in self._threads:
            thread.join(5)


def _host(address: SocketAddress) -> str:
    return f"[{address.host}]" if ":" in address.host else address.host


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: TraceStore) -> None:
        self.store = store
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "sentinel-traces"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routes -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        params = parse_qs(url.query)
        store = self.server.store
        try:
            if path == "/api/services":
                self._json(jaeger.services_response(store.services()))
            elif (match := _OPERATIONS_PATH.match(path)) is not None:
                self._json(jaeger.operations_response(store.operations(unquote(match.group(1)))))
            elif path == "/api/operations":
                service = params.get("service", [""])[0]
                kind = params.get("spanKind", [""])[0]
                self._json(jaeger.operations_by_kind_response(store.operations(service), kind))
            elif path == "/api/traces":
                self._json(jaeger.traces_response(store.find_traces(jaeger.query_from_params(params))))
            elif (match := _TRACE_PATH.match(path)) is not None:
                trace_id = match.group(1).lower().rjust(32, "0")
                spans = store.trace(trace_id)
                if spans:
                    self._json(jaeger.trace_response(spans))
                else:
                    self._json(jaeger.not_found_response(trace_id), HTTPStatus.NOT_FOUND)
            elif path.startswith("/static/"):
                self._static(path.removeprefix("/static/"))
            elif _UI_PATH.match(path):
                self._static("index.html")  # the UI routes itself from the URL
            else:
                self._json(jaeger.error_response(404, f"no such path {path}"), HTTPStatus.NOT_FOUND)
        except ValueError as exc:
            self._json(jaeger.error_response(400, str(exc)), HTTPStatus.BAD_REQUEST)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path != "/v1/traces":
            self._drain()
            self._json(jaeger.error_response(404, f"no such path {path}"), HTTPStatus.NOT_FOUND)
            return
        if self.headers.get("transfer-encoding"):
            # OTLP exporters send a Content-Length; a chunked body is not read here, so the connection ends.
            self.close_connection = True
            self._plain(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            return
        length_text = self.headers.get("content-length") or "0"
        if not length_text.isdigit():
            self.close_connection = True
            self._plain(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return
        length = int(length_text)
        if length > _MAX_BODY:
            self.close_connection = True
            self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
            return
        body = self.rfile.read(length)
        content_type = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        try:
            body = _decompress(body, (self.headers.get("content-encoding") or "").lower())
            if content_type == "application/json":
                self.server.store.ingest_request(request_from_json(json.loads(body)))
                self._send(HTTPStatus.OK, "application/json", b"{}")
            elif content_type in ("application/x-protobuf", "application/protobuf"):
                self.server.store.ingest(body)
                self._send(HTTPStatus.OK, "application/x-protobuf", b"")
            else:
                self._plain(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "use application/x-protobuf or application/json")
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            self._plain(HTTPStatus.BAD_REQUEST, f"not an OTLP trace export request: {exc}")

    # -- answers ------------------------------------------------------------------------------------

    def _json(self, body: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, "application/json", json.dumps(body, separators=(",", ":")).encode())

    def _plain(self, status: HTTPStatus, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", text.encode())

    def _static(self, name: str) -> None:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in _STATIC_TYPES:
            self._plain(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            data = resources.files("sentinel.viewer").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            self._plain(HTTPStatus.NOT_FOUND, "not found")
            return
        self._send(HTTPStatus.OK, _STATIC_TYPES[suffix], data, cache=name != "index.html")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain(self) -> None:
        text = self.headers.get("content-length") or "0"
        if text.isdigit() and int(text) <= _MAX_BODY and not self.headers.get("transfer-encoding"):
            self.rfile.read(int(text))
        else:
            self.close_connection = True


def _decompress(body: bytes, encoding: str) -> bytes:
    """The body as sent, decompressed up to the same 64 MiB limit (a small bomb must not fill memory)."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise ValueError(f"unsupported content-encoding {encoding!r}")
    data = inflater.decompress(body, _MAX_BODY + 1)
    if len(data) > _MAX_BODY or inflater.unconsumed_tail:
        raise ValueError(f"the body decompresses to more than {_MAX_BODY} bytes")
    if not inflater.eof:
        raise ValueError("truncated compressed body")
    return data


# OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def request_from_json(document: Any) -> Any:
    """An OTLP/JSON export request as the protobuf message (ids converted from hex)."""
    from google.protobuf import json_format  # noqa: PLC0415
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    try:
        return json_format.ParseDict(_hex_ids_to_base64(document), ExportTraceServiceRequest())
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None


def _hex_ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _ID_KEYS and isinstance(item, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError:
                    raise ValueError(f"{key} {item!r} is not hex") from None
            else:
                out[key] = _hex_ids_to_base64(item)
        return out
    if isinstance(value, list):
        return [_hex_ids_to_base64(item) for item in value]
    return value
