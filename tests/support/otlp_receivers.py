"""Real OTLP receivers for the exporter tests, on 127.0.0.1 with a port chosen by the system.

- `GrpcReceiver`: a grpcio asyncio server with a generic handler for TraceService/Export that decodes with the
  official `ExportTraceServiceRequest`; answers can be scripted as gRPC errors (with a RetryInfo if wanted).
- `HttpReceiver`: an asyncio HTTP/1.1 server (keep-alive, optional TLS) for POST /v1/traces; scripted answers.
- `ZipkinReceiver`: the same server as a Zipkin collector: JSON arrays of spans, answered 202.
- `Http2Sniffer`: a TCP relay in front of the gRPC receiver that reads the client's HTTP/2 frames and records
  the gRPC message "compressed" flag of each stream (the server API does not tell whether a request was gzip).

All of them run on the test's event loop; `wait_until` waits on a condition that every request notifies.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gzip
import json
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def status_with_retry_info(code: grpc.StatusCode, message: str, delay: float) -> bytes:
    """A serialized google.rpc.Status with one RetryInfo detail (googleapis-common-protos is not installed,
    so it is written by hand: Status{1: code, 2: message, 3: Any{1: type_url, 2: RetryInfo{1: Duration}}})."""
    seconds, nanos = int(delay), round((delay - int(delay)) * 1e9)
    duration = (b"\x08" + _varint(seconds) if seconds else b"") + (b"\x10" + _varint(nanos) if nanos else b"")
    retry_info = _ld(1, duration)
    any_msg = _ld(1, b"type.googleapis.com/google.rpc.RetryInfo") + _ld(2, retry_info)
    return b"\x08" + _varint(code.value[0]) + _ld(2, message.encode()) + _ld(3, any_msg)


class _Notifier:
    def __init__(self) -> None:
        self._cond = asyncio.Condition()

    async def notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (at most `timeout` s, else TimeoutError) until `predicate()` holds after some request."""
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(predicate)


@dataclass
class GrpcFailure:
    code: grpc.StatusCode
    details: str = "scripted failure"
    retry_delay: float | None = None  # sends a RetryInfo when set


@dataclass
class GrpcReceived:
    request: ExportTraceServiceRequest
    metadata: dict[str, str]


class GrpcReceiver(_Notifier):
    def __init__(self, server_credentials: grpc.ServerCredentials | None = None) -> None:
        super().__init__()
        self.requests: list[GrpcReceived] = []
        self.failures: deque[GrpcFailure] = deque()
        self.attempts = 0
        self.rejected_spans = 0  # answer with partial_success.rejected_spans = this
        self._credentials = server_credentials
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.request.resource_spans for ss in rs.scope_spans for s in ss.spans]

    async def _export(self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.attempts += 1
        if self.failures:
            failure = self.failures.popleft()
            trailers: tuple[tuple[str, str | bytes], ...] = ()
            if failure.retry_delay is not None:
                details = status_with_retry_info(failure.code, failure.details, failure.retry_delay)
                trailers = (("grpc-status-details-bin", details),)
            await self.notify()
            await context.abort(failure.code, failure.details, trailing_metadata=trailers)
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.requests.append(GrpcReceived(request, metadata))
        await self.notify()
        response = ExportTraceServiceResponse()
        if self.rejected_spans:
            response.partial_success.rejected_spans = self.rejected_spans
            response.partial_success.error_message = "scripted rejection"
        return response

    async def start(self) -> GrpcReceiver:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export,
                    request_deserializer=ExportTraceServiceRequest.FromString,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        if self._credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0", self._credentials)
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)


@dataclass
class HttpReceived:
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    request: ExportTraceServiceRequest


@dataclass
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _Http1Receiver(_Notifier, abc.ABC):
    """An asyncio HTTP/1.1 server for the exporter's POSTs (keep-alive, Content-Length bodies, which is what the
    exporter sends; gzip bodies are inflated). Scripted `answers` go out first; then `_accept` answers."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.answers: deque[HttpAnswer] = deque()
        self.attempts = 0
        self.connections = 0
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @abc.abstractmethod
    def _accept(self, method: str, path: str, headers: dict[str, str], raw: bytes, body: bytes) -> HttpAnswer:
        """Record a request the scripted answers did not cover, and answer it (OTLP or Zipkin)."""

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
                self.attempts += 1
                answer = self.answers.popleft() if self.answers else None
                if answer is None:
                    answer = self._accept(method, path, headers, raw, body)
                head = f"HTTP/1.1 {answer.status} X\r\nContent-Length: {len(answer.body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in answer.headers)
                writer.write(head.encode("latin-1") + b"\r\n" + answer.body)
                await writer.drain()
                await self.notify()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class HttpReceiver(_Http1Receiver):
    """POST /v1/traces (OTLP/HTTP, protobuf), decoded with the official `ExportTraceServiceRequest`."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self.requests: list[HttpReceived] = []
        self.rejected_spans = 0

    @property
    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.request.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def _accept(self, method: str, path: str, headers: dict[str, str], raw: bytes, body: bytes) -> HttpAnswer:
        self.requests.append(HttpReceived(method, path, headers, raw, ExportTraceServiceRequest.FromString(body)))
        response = ExportTraceServiceResponse()
        if self.rejected_spans:
            response.partial_success.rejected_spans = self.rejected_spans
        return HttpAnswer(200, [("Content-Type", "application/x-protobuf")], response.SerializeToString())


@dataclass
class ZipkinReceived:
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    spans: list[dict[str, Any]]  # the JSON array, parsed


class ZipkinReceiver(_Http1Receiver):
    """A Zipkin collector's `POST /api/v2/spans` (any path is taken and recorded): the body must be a JSON array
    of span objects; answered 202 Accepted with an empty body, as Zipkin does."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self.requests: list[ZipkinReceived] = []

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [s for r in self.requests for s in r.spans]

    def _accept(self, method: str, path: str, headers: dict[str, str], raw: bytes, body: bytes) -> HttpAnswer:
        try:
            spans = json.loads(body)
        except ValueError:
            return HttpAnswer(400, body=b"not JSON")
        if not isinstance(spans, list) or not all(isinstance(s, dict) for s in spans):
            return HttpAnswer(400, body=b"expected a JSON array of spans")
        self.requests.append(ZipkinReceived(method, path, headers, raw, spans))
        return HttpAnswer(202)


class Http2Sniffer:
    """A TCP relay to `port` recording, per HTTP/2 stream from the client, the first byte of its DATA: the
    gRPC length-prefixed message's compressed flag (1 = compressed)."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.compressed_flags: dict[int, int] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> Http2Sniffer:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        task = asyncio.get_running_loop().create_task(downstream())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            preface = await reader.readexactly(len(self.PREFACE))
            up_writer.write(preface)
            while True:
                frame_head = await reader.readexactly(9)
                length = int.from_bytes(frame_head[:3], "big")
                frame_type, flags = frame_head[3], frame_head[4]
                stream = int.from_bytes(frame_head[5:9], "big") & 0x7FFFFFFF
                payload = await reader.readexactly(length)
                if frame_type == 0 and payload and stream not in self.compressed_flags:
                    data = payload[1:] if flags & 0x8 else payload  # PADDED: skip the pad length
                    if data:
                        self.compressed_flags[stream] = data[0]
                up_writer.write(frame_head + payload)
                await up_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            up_writer.close()
            writer.close()
