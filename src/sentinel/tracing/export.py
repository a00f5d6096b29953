"""The span exporter that runs in the supervisor (SPEC §6.5; its counters feed the §8 `otel_exporter_*` metrics).

Workers hand over batches of already-encoded `Span` messages (bytes from `otlp.encode_span`), framed as the
repeated `ScopeSpans.spans` field (`otlp.frame_spans`); `SpanExporter.offer_framed` puts each buffer into one
bounded queue as it is, without ever waiting (`offer` takes a list of spans), and a background task turns
batches of up to `max_export_batch_size` spans into one request body each and sends it:

- every `schedule_delay_ms`, or as soon as a full batch is queued;
- the body depends on the backend: for OTLP (`backend "otlp"`, and `"jaeger"` and `"embedded"`, which are OTLP
  too) the framed buffers are wrapped, without being decoded, into an `ExportTraceServiceRequest`
  (`otlp.encode_framed_export_request`; a buffer is cut, at a span, only where a batch or the queue limit
  ends inside it); for
  `backend "zipkin"` they are decoded and converted into a Zipkin v2 JSON array (`zipkin.ZipkinEncoder`; a span
  that cannot be read is counted as failed, the rest are sent);
- over OTLP/gRPC (a unary call of `GRPC_EXPORT_METHOD` with the raw bytes on an HTTP/2 connection of our own,
  `grpc_channel`; TLS for `https://`, `headers` as metadata, gzip as gRPC compression, `timeout-ms` as deadline)
  or over HTTP with a small asyncio HTTP/1.1 client of its own that keeps its connection alive (TLS for
  `https://`, `headers`, optional gzip body with `Content-Encoding: gzip`): OTLP/HTTP (`http/protobuf`) POSTs the
  protobuf bytes to `<endpoint>/v1/traces`, Zipkin POSTs `application/json` to the endpoint URL exactly as
  configured (normally `.../api/v2/spans`; Zipkin answers 202);
- with the OTLP retry rules: gRPC CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS are
  retried, RESOURCE_EXHAUSTED only when the server sent a `google.rpc.RetryInfo`; HTTP 429, 502, 503, 504 (and
  connection failures and timeouts on either transport) are retried; every other answer is permanent. Zipkin
  gets the same HTTP rules. The delay is the server's (RetryInfo, `Retry-After` in seconds or as an HTTP date)
  or else exponential backoff with jitter; a batch that is still not delivered after `max_retry_time` seconds
  is given up and its spans counted as failed. An OTLP 2xx answer carrying `partial_success.rejected_spans`
  counts those spans as failed; any 2xx from Zipkin counts the whole batch as exported.

Only one batch is ever in flight, so memory stays flat when the collector is down or slow: the queue is bounded
(spans beyond it are dropped and counted with reason "queue_full"), the HTTP client keeps at most one
connection and reads at most `_MAX_RESPONSE_BODY` bytes of an answer, and durations go into a fixed-bucket
histogram. Everything here runs on the event loop of the supervisor (asyncio or uvloop): `offer` and
`offer_framed` must be called from that loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import logging
import random
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from sentinel import __version__
from sentinel.config.model import OtlpProtocol, TracingBackendKind, TracingConfig
from sentinel.tracing import grpc_channel
from sentinel.tracing.export_headers import TOKEN, header_problem
from sentinel.tracing.grpc_channel import GrpcChannel
from sentinel.tracing.otlp import (
    AttrValue,
    count_framed_spans,
    encode_framed_export_request,
    encode_resource,
    encode_scope,
    frame_spans,
    framed_spans_end,
    iter_fields,
    unframe_spans,
)
from sentinel.tracing.zipkin import CONTENT_TYPE as ZIPKIN_CONTENT_TYPE
from sentinel.tracing.zipkin import ZipkinEncoder

__all__ = [
    "DROP_QUEUE_FULL",
    "DROP_SHUTDOWN",
    "EXPORT_DURATION_BUCKETS",
    "GRPC_EXPORT_METHOD",
    "DurationHistogram",
    "ExporterConfigError",
    "SpanExporter",
]

log = logging.getLogger("sentinel.tracing.export")

GRPC_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_TRACES_PATH: Final = "/v1/traces"
OTLP_HTTP_CONTENT_TYPE: Final = "application/x-protobuf"
ZIPKIN_DEFAULT_PORT: Final = 9411
DROP_QUEUE_FULL: Final = "queue_full"
DROP_SHUTDOWN: Final = "shutdown"  # offered after shutdown began, or still queued when it ended
EXPORT_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_RETRYABLE_GRPC: Final = frozenset(
    {
        grpc_channel.CANCELLED,
        grpc_channel.DEADLINE_EXCEEDED,
        grpc_channel.ABORTED,
        grpc_channel.OUT_OF_RANGE,
        grpc_channel.UNAVAILABLE,
        grpc_channel.DATA_LOSS,
    }
)
_RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})
_MAX_RESPONSE_BODY: Final = 64 * 1024  # what is kept of an answer's body (only its error text is of interest)
_MAX_HEAD: Final = 64 * 1024
_LOG_INTERVAL: Final = 30.0


class ExporterConfigError(ValueError):
    """The tracing configuration asks for something this exporter cannot do."""


class DurationHistogram:
    """Durations (seconds) of export attempts, one per HTTP request or gRPC call, in fixed buckets.

    `counts[i]` is the number of observations <= `buckets[i]` and > the bucket before (not cumulative);
    `counts[-1]` is the overflow (+Inf) bucket. `count` and `sum` are over all observations.
    """

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float] = EXPORT_DURATION_BUCKETS) -> None:
        self.buckets: tuple[float, ...] = tuple(buckets)
        self.counts: list[int] = [0] * (len(self.buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        i = 0
        for i, bound in enumerate(self.buckets):  # noqa: B007 - the index is the result
            if seconds <= bound:
                break
        else:
            i = len(self.buckets)
        self.counts[i] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs ending with (inf, count): Prometheus `_bucket` samples."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


# --- collector answers (ExportTraceServiceResponse, google.rpc.Status), read with otlp.iter_fields --------


def _rejected_spans(response: bytes) -> tuple[int, str]:
    """`partial_success.rejected_spans` and `.error_message` of an ExportTraceServiceResponse (0, "" if none)."""
    rejected, message = 0, ""
    try:
        for number, _, value in iter_fields(response):
            if number == 1 and isinstance(value, bytes):
                for n2, _, v2 in iter_fields(value):
                    if n2 == 1 and isinstance(v2, int):
                        rejected = v2 if v2 < 1 << 63 else 0
                    elif n2 == 2 and isinstance(v2, bytes):
                        message = v2.decode("utf-8", "replace")
    except ValueError:
        return 0, ""
    return rejected, message


def _retry_info_delay(status_details: bytes) -> float | None:
    """The `RetryInfo.retry_delay` in a serialized `google.rpc.Status` (grpc-status-details-bin), if any."""
    try:
        for number, _, detail in iter_fields(status_details):
            if number != 3 or not isinstance(detail, bytes):
                continue
            type_url, payload = "", b""
            for n2, _, v2 in iter_fields(detail):  # google.protobuf.Any
                if n2 == 1 and isinstance(v2, bytes):
                    type_url = v2.decode("utf-8", "replace")
                elif n2 == 2 and isinstance(v2, bytes):
                    payload = v2
            if not type_url.endswith("/google.rpc.RetryInfo"):
                continue
            seconds = nanos = 0
            for n3, _, v3 in iter_fields(payload):  # RetryInfo
                if n3 == 1 and isinstance(v3, bytes):
                    for n4, _, v4 in iter_fields(v3):  # google.protobuf.Duration
                        if n4 == 1 and isinstance(v4, int):
                            seconds = v4 if v4 < 1 << 63 else 0
                        elif n4 == 2 and isinstance(v4, int):
                            nanos = v4 if v4 < 1 << 31 else 0
            return max(0.0, seconds + nanos / 1e9)
    except ValueError:
        return None
    return None


def _parse_retry_after(value: str | None) -> float | None:
    """`Retry-After`: delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# --- transports ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    retryable: bool = False
    retry_after: float | None = None  # the server's requested delay before retrying
    rejected: int = 0  # partial success: spans the server refused
    error: str = ""


class _Transport(Protocol):
    def prepare(self, request: bytes) -> bytes: ...

    async def send(self, payload: bytes, timeout: float) -> _Outcome: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Endpoint:
    secure: bool
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parse_endpoint(
    endpoint: str, protocol: OtlpProtocol, kind: TracingBackendKind = TracingBackendKind.OTLP
) -> _Endpoint:
    """`http(s)://host[:port][/path]` (a bare `host:port` is plain http). Without a port: 443 for https, else
    4317 (gRPC), 4318 (OTLP/HTTP) or 9411 (Zipkin). OTLP/HTTP appends `/v1/traces` to the path unless it ends
    so already; Zipkin uses the path and query as they are (`/` when there is none)."""
    raw = endpoint.strip()
    parts = urllib.parse.urlsplit(raw if "://" in raw else f"http://{raw}")
    if parts.scheme not in ("http", "https"):
        raise ExporterConfigError(f"tracing endpoint {endpoint!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ExporterConfigError(f"tracing endpoint {endpoint!r} has no host")
    try:
        port = parts.port
    except ValueError as e:
        raise ExporterConfigError(f"tracing endpoint {endpoint!r}: {e}") from None
    secure = parts.scheme == "https"
    if port is None:
        if secure:
            port = 443
        elif kind is TracingBackendKind.ZIPKIN:
            port = ZIPKIN_DEFAULT_PORT
        else:
            port = 4317 if protocol is OtlpProtocol.GRPC else 4318
    if kind is TracingBackendKind.ZIPKIN:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise ExporterConfigError(f"tracing endpoint {endpoint!r}: the path cannot be sent as it is")
    else:
        path = parts.path.rstrip("/")
        if not path.endswith(HTTP_TRACES_PATH):
            path += HTTP_TRACES_PATH
    return _Endpoint(secure, parts.hostname, port, path)


def _check_headers(headers: Sequence[tuple[str, str]], grpc: bool) -> None:
    """The config reader refuses these already; a programmatic config gets the same rules here."""
    for key, value in headers:
        problem = header_problem(key, value, grpc)
        if problem is not None:
            raise ExporterConfigError(f"tracing header {key!r} {problem}")


class _GrpcTransport:
    """OTLP/gRPC: unary calls of the Export method carrying the raw bytes, on a channel of our own
    (`grpc_channel`), which opens a new connection when the old one is gone."""

    def __init__(
        self,
        endpoint: _Endpoint,
        headers: Sequence[tuple[str, str]],
        use_gzip: bool,
        root_certificates: bytes | None,
    ) -> None:
        _check_headers(headers, grpc=True)
        context: ssl.SSLContext | None = None
        if endpoint.secure:
            context = ssl.create_default_context(cadata=root_certificates.decode() if root_certificates else None)
            context.set_alpn_protocols(["h2"])
        self._use_gzip = use_gzip
        self._channel = GrpcChannel(
            endpoint.host,
            endpoint.port,
            endpoint.authority,
            GRPC_EXPORT_METHOD,
            tuple((k.lower(), v) for k, v in headers),
            f"sentinel-otlp-exporter/{__version__}",
            context,
            compressed=use_gzip,
        )

    def prepare(self, request: bytes) -> bytes:
        return gzip.compress(request, compresslevel=6) if self._use_gzip else request

    async def send(self, payload: bytes, timeout: float) -> _Outcome:
        result = await self._channel.call(payload, timeout)
        if result.code != grpc_channel.OK:
            delay = _retry_info_delay(result.details) if result.details else None
            code = result.code
            retryable = code in _RETRYABLE_GRPC or (code == grpc_channel.RESOURCE_EXHAUSTED and delay is not None)
            return _Outcome(False, retryable, delay, error=f"gRPC {result.code_name}: {result.message}")
        rejected, message = _rejected_spans(result.response)
        return _Outcome(True, rejected=rejected, error=message)

    async def close(self) -> None:
        await self._channel.close()


class _HttpProtocolError(Exception):
    """The collector's answer is not valid HTTP/1.1 (the connection is dropped)."""


class _HttpTransport:
    """POSTs of request bodies to `endpoint.path` over one keep-alive HTTP/1.1 connection (reopened when needed):
    OTLP/HTTP (protobuf, whose 2xx answers may report a partial success) or Zipkin (JSON, `otlp_answers` off)."""

    def __init__(
        self,
        endpoint: _Endpoint,
        headers: Sequence[tuple[str, str]],
        use_gzip: bool,
        ssl_context: ssl.SSLContext | None,
        content_type: str = OTLP_HTTP_CONTENT_TYPE,
        otlp_answers: bool = True,
        user_agent: str = f"sentinel-otlp-exporter/{__version__}",
    ) -> None:
        _check_headers(headers, grpc=False)
        extra = [f"{key}: {value}\r\n" for key, value in headers]
        self._endpoint = endpoint
        self._gzip = use_gzip
        self._otlp_answers = otlp_answers
        self._ssl: ssl.SSLContext | None = None
        if endpoint.secure:
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        head = (
            f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.authority}\r\n"
            f"User-Agent: {user_agent}\r\nContent-Type: {content_type}\r\n"
        )
        if use_gzip:
            head += "Content-Encoding: gzip\r\n"
        self._head = head + "".join(extra)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connections_opened = 0

    def prepare(self, request: bytes) -> bytes:
        return gzip.compress(request, compresslevel=6, mtime=0) if self._gzip else request

    async def send(self, payload: bytes, timeout: float) -> _Outcome:
        try:
            async with asyncio.timeout(timeout):
                status, headers, body = await self._exchange(payload)
        except TimeoutError:
            await self.close()
            return _Outcome(False, True, error=f"no answer within {timeout:.3g} s")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _HttpProtocolError) as e:
            await self.close()
            return _Outcome(False, True, error=f"HTTP connection failed: {e!r}")
        if 200 <= status < 300:
            rejected, message = _rejected_spans(body) if body and self._otlp_answers else (0, "")
            return _Outcome(True, rejected=rejected, error=message)
        detail = body[:200].decode("utf-8", "replace")
        return _Outcome(
            False,
            status in _RETRYABLE_HTTP,
            _parse_retry_after(headers.get("retry-after")),
            error=f"HTTP {status}: {detail!r}",
        )

    async def _exchange(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        reused = self._writer is not None
        try:
            return await self._request(payload)
        except (OSError, asyncio.IncompleteReadError, _HttpProtocolError) as e:
            # A kept-alive connection the server closed meanwhile: one more try on a fresh connection.
            stale = (isinstance(e, asyncio.IncompleteReadError) and not e.partial) or isinstance(e, ConnectionError)
            if not (reused and stale):
                raise
            await self.close()
            return await self._request(payload)

    async def _request(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None:
            ep = self._endpoint
            self._reader, self._writer = await asyncio.open_connection(
                ep.host, ep.port, ssl=self._ssl, server_hostname=ep.host if self._ssl else None, limit=_MAX_HEAD
            )
            self.connections_opened += 1
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(f"{self._head}Content-Length: {len(payload)}\r\n\r\n".encode("latin-1") + payload)
        await writer.drain()
        while True:
            status, version, headers = await self._read_head(reader)
            if status >= 200:
                break
            if status == 101:
                raise _HttpProtocolError("unexpected 101 Switching Protocols")
        body, framed = await self._read_body(reader, headers)
        connection = headers.get("connection", "").lower()
        keep = framed and ("close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection)
        if not keep:
            await self.close()
        return status, headers, body

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
        line = await reader.readuntil(b"\r\n")
        try:
            version, code, *_ = line.decode("latin-1").split(" ", 2)
            status = int(code.strip())
        except ValueError:
            raise _HttpProtocolError(f"bad status line {line[:100]!r}") from None
        if version not in ("HTTP/1.1", "HTTP/1.0") or not 100 <= status <= 999:
            raise _HttpProtocolError(f"bad status line {line[:100]!r}")
        headers: dict[str, str] = {}
        size = len(line)
        while True:
            line = await reader.readuntil(b"\r\n")
            size += len(line)
            if size > _MAX_HEAD:
                raise _HttpProtocolError("response head too large")
            if line == b"\r\n":
                return status, version, headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not TOKEN.fullmatch(name):
                raise _HttpProtocolError(f"bad header line {line[:100]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The body (at most _MAX_RESPONSE_BODY bytes kept, the rest read and discarded) and whether it was
        delimited (so that the connection can be reused)."""
        kept = bytearray()

        async def take(n: int) -> None:
            while n > 0:
                chunk = await reader.read(min(n, 65536))
                if not chunk:
                    raise asyncio.IncompleteReadError(bytes(kept), n)
                n -= len(chunk)
                if len(kept) < _MAX_RESPONSE_BODY:
                    kept.extend(chunk[: _MAX_RESPONSE_BODY - len(kept)])

        te = headers.get("transfer-encoding")
        if te is not None:
            if te.lower() != "chunked":
                raise _HttpProtocolError(f"unsupported Transfer-Encoding {te!r}")
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _HttpProtocolError(f"bad chunk size {size_line[:40]!r}") from None
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return bytes(kept), True
                await take(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise _HttpProtocolError("bad chunk end")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _HttpProtocolError(f"bad Content-Length {length!r}")
            await take(int(length))
            return bytes(kept), True
        # Delimited by the connection's end.
        while chunk := await reader.read(65536):
            if len(kept) < _MAX_RESPONSE_BODY:
                kept.extend(chunk[: _MAX_RESPONSE_BODY - len(kept)])
        return bytes(kept), False

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# --- the exporter ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _FlushState:
    deadline: float
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class SpanExporter:
    """Batches encoded spans from the workers and exports them over OTLP or as Zipkin JSON (see the module
    docstring).

    Counters, for the metrics code: `spans_exported`, `spans_failed` (permanent errors, retries given up,
    spans a collector rejected), `spans_dropped` by reason (`"queue_full"`, `"shutdown"`), `queue_size`, and
    `export_durations` (a `DurationHistogram` of each export attempt). Every span offered ends up in exactly
    one of: exported, failed, dropped, queued, or the one batch in flight (`in_flight`).
    """

    def __init__(
        self,
        config: TracingConfig,
        resource_attributes: Sequence[tuple[str, AttrValue]],
        *,
        scope_name: str = "sentinel",
        scope_version: str = __version__,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_time: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        grpc_root_certificates: bytes | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`resource_attributes` (normally `tracing.resource.resource_attributes(...)`) gets `service.name` =
        `config.service_name` (or "sentinel") only if it has none. `ssl_context`
        (HTTP) and `grpc_root_certificates` (PEM, gRPC) replace the system's trusted CAs for https endpoints.
        Retries back off from `initial_backoff` doubling up to `max_backoff` seconds, each delay multiplied
        by 0.5 + `jitter()` / 2; a batch is given up `max_retry_time` seconds after its first attempt."""
        backend = config.backend
        if config.max_queue_size < 1 or config.max_export_batch_size < 1 or config.schedule_delay_ms < 0:
            raise ExporterConfigError("tracing queue and batch sizes must be positive")
        if backend.compression not in (None, "gzip"):
            raise ExporterConfigError(f'tracing compression {backend.compression!r}: only "gzip" is supported')
        if backend.timeout_ms <= 0:
            raise ExporterConfigError("tracing timeout-ms must be positive")
        endpoint = _parse_endpoint(backend.endpoint, backend.protocol, backend.kind)
        use_gzip = backend.compression == "gzip"
        attrs = list(resource_attributes)
        if not any(key == "service.name" for key, _ in attrs):
            attrs.insert(0, ("service.name", config.service_name or "sentinel"))
        self._transport: _Transport
        self._encode_batch: Callable[[list[bytes]], tuple[bytes, int]]
        if backend.kind is TracingBackendKind.ZIPKIN:  # always JSON over HTTP: the config refuses `protocol`
            self._transport = _HttpTransport(
                endpoint,
                backend.headers,
                use_gzip,
                ssl_context,
                content_type=ZIPKIN_CONTENT_TYPE,
                otlp_answers=False,
                user_agent=f"sentinel-zipkin-exporter/{__version__}",
            )
            zipkin = ZipkinEncoder(attrs, scope_name, scope_version)
            self._encode_batch = lambda framed: zipkin.encode([s for chunk in framed for s in unframe_spans(chunk)])
        else:
            if backend.protocol is OtlpProtocol.GRPC:
                self._transport = _GrpcTransport(endpoint, backend.headers, use_gzip, grpc_root_certificates)
            else:
                self._transport = _HttpTransport(endpoint, backend.headers, use_gzip, ssl_context)
            resource, scope = encode_resource(attrs), encode_scope(scope_name, scope_version)
            self._encode_batch = lambda framed: (encode_framed_export_request(resource, scope, framed), 0)
        self._max_queue = config.max_queue_size
        self._batch_size = min(config.max_export_batch_size, config.max_queue_size)
        self._delay = config.schedule_delay_ms / 1000
        self._timeout = backend.timeout_ms / 1000
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_retry_time = max_retry_time
        self._jitter = jitter

        # Spans as the workers sent them: `frame_spans` buffers, each with the offset where its unsent spans
        # start (a batch can end inside a buffer) and how many those are.
        self._queue: deque[tuple[bytes, int, int]] = deque()
        self._queued = 0  # spans in the queue
        self._wake = asyncio.Event()  # work to do: a full batch, a flush, shutdown
        self._urgent = asyncio.Event()  # a flush or shutdown is waiting: shorten backoff waits
        self._flush: _FlushState | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._last_log = -_LOG_INTERVAL
        self._suppressed_logs = 0

        self.in_flight = 0
        self.spans_exported = 0
        self.spans_failed = 0
        self.spans_dropped: dict[str, int] = {DROP_QUEUE_FULL: 0, DROP_SHUTDOWN: 0}
        self.export_durations = DurationHistogram()

    @property
    def queue_size(self) -> int:
        return self._queued

    def offer(self, spans: Sequence[bytes]) -> int:
        """Queue encoded spans (bytes) without waiting; returns how many were dropped (queue full, or shut
        down)."""
        return self._offer(frame_spans(spans), len(spans))

    def offer_framed(self, framed: bytes) -> int:
        """Queue a `frame_spans` buffer (a worker's SPANS frame) without waiting; returns how many of its
        spans were dropped (queue full, or shut down). Its framing is checked first: ValueError, and
        nothing queued, if it is broken."""
        return self._offer(framed, count_framed_spans(framed))

    def _offer(self, framed: bytes, count: int) -> int:
        if not count:
            return 0
        if self._closing:
            self.spans_dropped[DROP_SHUTDOWN] += count
            return count
        room = self._max_queue - self._queued
        dropped = 0
        if count > room:
            dropped = count - max(room, 0)
            self.spans_dropped[DROP_QUEUE_FULL] += dropped
            if room <= 0:
                return dropped
            framed, count = framed[: framed_spans_end(framed, 0, room)], room
        self._queue.append((framed, 0, count))
        self._queued += count
        if self._queued >= self._batch_size:
            self._wake.set()
        return dropped

    def _take(self, n: int) -> list[bytes]:
        """The first `n` queued spans (or all, if fewer), as framed buffers, out of the queue."""
        batch: list[bytes] = []
        taken = 0
        while taken < n and self._queue:
            framed, start, count = self._queue.popleft()
            if taken + count > n:
                # The rest stays queued as an offset into the same buffer: no copy of it per batch.
                cut = framed_spans_end(framed, start, n - taken)
                self._queue.appendleft((framed, cut, count - (n - taken)))
                batch.append(framed[start:cut])
                taken = n
                break
            batch.append(framed[start:] if start else framed)
            taken += count
        self._queued -= taken
        return batch

    async def start(self) -> None:
        """Start the background sender on the running loop."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sentinel-span-exporter")
            self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("span exporter stopped", exc_info=task.exception())

    async def flush(self, timeout: float) -> bool:
        """Send everything queued now, within `timeout` seconds. True when the queue was emptied, nothing is in
        flight and no span failed meanwhile; a batch still being retried at the deadline is given up."""
        if self._task is None or self._task.done():
            return not self._queue and not self.in_flight
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        failed_before = self.spans_failed
        if self._flush is None:
            self._flush = _FlushState(deadline)
        else:
            self._flush.deadline = min(self._flush.deadline, deadline)
        waiter: asyncio.Future[None] = loop.create_future()
        self._flush.waiters.append(waiter)
        self._urgent.set()
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(waiter)
        except TimeoutError:
            return False
        return not self._queue and not self.in_flight and self.spans_failed == failed_before

    async def shutdown(self, timeout: float) -> None:
        """Stop taking spans, send what is queued within `timeout` seconds, then close the connection. Spans
        left unsent are counted as dropped ("shutdown") or, for a batch cut off mid-retry, as failed."""
        if self._closed:
            return
        self._closing = True
        try:
            if self._task is not None and not self._task.done():
                await self.flush(timeout)
        finally:
            self._closed = True
            task, self._task = self._task, None
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.spans_dropped[DROP_SHUTDOWN] += self._queued
            self._queue.clear()
            self._queued = 0
            self._finish_flush()
            await self._transport.close()

    # --- background sender ---

    def _finish_flush(self) -> None:
        flush, self._flush = self._flush, None
        self._urgent.clear()
        if flush is not None:
            for waiter in flush.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timed_out = False
            if self._flush is None and self._queued < self._batch_size:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._delay)
                except TimeoutError:
                    timed_out = True
            while self._queue:
                flush = self._flush
                if flush is None and not timed_out and self._queued < self._batch_size:
                    break
                if flush is not None and loop.time() >= flush.deadline:
                    break
                n = min(self._batch_size, self._queued)
                batch = self._take(n)
                self.in_flight = n
                try:
                    await self._export(batch, n)
                except asyncio.CancelledError:
                    self.spans_failed += self.in_flight  # what _export had not counted yet
                    raise
                finally:
                    self.in_flight = 0
            if self._flush is not None:
                self._finish_flush()

    def _limit(self, give_up: float) -> float:
        return give_up if self._flush is None else min(give_up, self._flush.deadline)

    async def _export(self, batch: list[bytes], n: int) -> None:
        """Send one batch (framed buffers holding `n` spans), retrying as the OTLP rules say; count its spans
        as exported or failed."""
        loop = asyncio.get_running_loop()
        try:
            request, unreadable = self._encode_batch(batch)
            payload = self._transport.prepare(request)
        except Exception as e:  # cannot happen with checked framing; a bug must not end the exporter
            self.spans_failed += n
            self._problem(f"cannot encode a batch of {n} spans: {e!r}")
            return
        if unreadable:  # left out of the request (Zipkin, which decodes the spans)
            self.spans_failed += unreadable
            self.in_flight -= unreadable
            self._problem(f"cannot read {unreadable} of a batch of {n} spans; they are not exported")
            n -= unreadable
            if not n:
                return
        give_up = loop.time() + self._max_retry_time
        attempt = 0
        while True:
            remaining = self._limit(give_up) - loop.time()
            if remaining <= 0:
                self.spans_failed += n
                self._problem(f"gave up exporting {n} spans: no time left for another attempt")
                return
            started = time.perf_counter()
            try:
                outcome = await self._transport.send(payload, min(self._timeout, remaining))
            except Exception as e:
                outcome = _Outcome(False, False, error=f"unexpected error: {e!r}")
            self.export_durations.observe(time.perf_counter() - started)
            if outcome.ok:
                rejected = min(max(outcome.rejected, 0), n)
                self.spans_exported += n - rejected
                self.spans_failed += rejected
                if rejected:
                    self._problem(f"collector rejected {rejected} of {n} spans: {outcome.error}")
                return
            if not outcome.retryable:
                self.spans_failed += n
                self._problem(f"export of {n} spans failed permanently: {outcome.error}")
                return
            if outcome.retry_after is not None:
                delay = outcome.retry_after
            else:
                delay = min(self._max_backoff, self._initial_backoff * 2**attempt) * (0.5 + self._jitter() / 2)
            attempt += 1
            if not await self._backoff(loop.time() + delay, give_up):
                self.spans_failed += n
                self._problem(f"gave up exporting {n} spans after {attempt} attempts: {outcome.error}")
                return

    async def _backoff(self, wake_at: float, give_up: float) -> bool:
        """Wait until `wake_at`; False (at once) if that is past the time left for this batch, which a flush
        or shutdown starting meanwhile can shorten."""
        loop = asyncio.get_running_loop()
        while True:
            if wake_at >= self._limit(give_up):
                return False
            now = loop.time()
            if now >= wake_at:
                return True
            if self._urgent.is_set():
                await asyncio.sleep(wake_at - now)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), wake_at - now)

    def _problem(self, message: str) -> None:
        """Log an export problem, at most once per _LOG_INTERVAL (a collector that is down would flood)."""
        now = time.monotonic()
        if now - self._last_log < _LOG_INTERVAL:
            self._suppressed_logs += 1
            return
        more = f" ({self._suppressed_logs} similar messages suppressed)" if self._suppressed_logs else ""
        self._last_log, self._suppressed_logs = now, 0
        log.warning("%s%s", message, more)
