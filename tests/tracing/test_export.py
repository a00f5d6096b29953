"""The supervisor's span exporter (SPEC §6.5) against real OTLP receivers on 127.0.0.1 (no network mocks).

The receivers (tests/support/otlp_receivers.py) decode with the official `ExportTraceServiceRequest`; inputs are
built with `otlp.encode_span` and compared with what arrives after decoding with the official `Span`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvloop
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sentinel.config.model import OtlpProtocol, TracingBackend, TracingBackendKind, TracingConfig
from sentinel.tracing.export import (
    DROP_QUEUE_FULL,
    DROP_SHUTDOWN,
    ExporterConfigError,
    SpanExporter,
    _parse_endpoint,
    _parse_retry_after,
    _retry_info_delay,
)
from sentinel.tracing.otlp import AttrValue, SpanKind, encode_span, frame_spans, unframe_spans
from tests.support.otlp_receivers import (
    GrpcFailure,
    GrpcReceiver,
    Http2Sniffer,
    HttpAnswer,
    HttpReceiver,
    status_with_retry_info,
)

Receiver = GrpcReceiver | HttpReceiver
TRANSPORTS = ["grpc", "http"]


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = False) -> None:
    if use_uvloop:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


def make_spans(n: int, first: int = 0) -> list[bytes]:
    return [
        encode_span(
            (i + 1).to_bytes(16, "big"),
            (i + 1).to_bytes(8, "big"),
            b"",
            f"span-{i}",
            SpanKind.SERVER,
            1_700_000_000_000_000_000 + i,
            1_700_000_000_000_500_000 + i,
            attributes=[("i", i), ("http.request.method", "GET")],
        )
        for i in range(first, first + n)
    ]


def config(
    endpoint: str,
    protocol: OtlpProtocol,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    compression: str | None = None,
    timeout_ms: int = 5000,
    queue: int = 2048,
    batch: int = 512,
    delay_ms: int = 60_000,
    kind: TracingBackendKind = TracingBackendKind.OTLP,
) -> TracingConfig:
    backend = TracingBackend(kind, endpoint, protocol, headers, compression, timeout_ms)
    return TracingConfig(backend, max_queue_size=queue, max_export_batch_size=batch, schedule_delay_ms=delay_ms)


@asynccontextmanager
async def receiver(transport: str) -> AsyncIterator[tuple[Receiver, str, OtlpProtocol]]:
    rx: Receiver
    if transport == "grpc":
        rx = await GrpcReceiver().start()
        protocol = OtlpProtocol.GRPC
    else:
        rx = await HttpReceiver().start()
        protocol = OtlpProtocol.HTTP_PROTOBUF
    try:
        yield rx, f"http://127.0.0.1:{rx.port}", protocol
    finally:
        await rx.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition of the exporter (which has no notifier of its own) until a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def decoded(spans: list[bytes]) -> list[Span]:
    return [Span.FromString(s) for s in spans]


def accounted(exporter: SpanExporter) -> int:
    return (
        exporter.spans_exported
        + exporter.spans_failed
        + sum(exporter.spans_dropped.values())
        + exporter.queue_size
        + exporter.in_flight
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def started(
    cfg: TracingConfig,
    resource: list[tuple[str, AttrValue]] | None = None,
    *,
    initial_backoff: float = 0.01,
    max_backoff: float = 0.05,
    max_retry_time: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    grpc_root_certificates: bytes | None = None,
) -> SpanExporter:
    """A started exporter with short backoffs (the defaults of 1 s doubling to 30 s are for production)."""
    exporter = SpanExporter(
        cfg,
        resource or [],
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_retry_time=max_retry_time,
        ssl_context=ssl_context,
        grpc_root_certificates=grpc_root_certificates,
    )
    await exporter.start()
    return exporter


# --- delivery --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_arrive_exactly(transport: str, use_uvloop: bool) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            exporter = await started(config(endpoint, protocol), [("host.name", "box"), ("service.version", "1.2")])
            spans = make_spans(7)
            assert exporter.offer(spans[:3]) == 0
            assert exporter.offer(spans[3:]) == 0
            assert exporter.queue_size == 7
            assert await exporter.flush(5.0)
            assert rx.spans == decoded(spans)
            request = rx.requests[0].request
            resource = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}
            assert resource == {"service.name": "sentinel", "host.name": "box", "service.version": "1.2"}
            scope = request.resource_spans[0].scope_spans[0].scope
            assert scope.name == "sentinel"
            assert scope.version
            assert (exporter.spans_exported, exporter.spans_failed, exporter.queue_size) == (7, 0, 0)
            assert exporter.export_durations.count == 1
            assert exporter.export_durations.cumulative()[-1] == (float("inf"), 1)
            await exporter.shutdown(1.0)

    run(main(), use_uvloop=use_uvloop)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_batches_by_size(transport: str) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            exporter = await started(config(endpoint, protocol, batch=5, delay_ms=60_000), [])
            spans = make_spans(12)
            exporter.offer(spans)
            await rx.wait_until(lambda: len(rx.requests) == 2)
            assert [len(r.request.resource_spans[0].scope_spans[0].spans) for r in rx.requests] == [5, 5]
            await wait_for(lambda: exporter.spans_exported == 10)
            assert exporter.queue_size == 2  # not a full batch: waits for the timer (or a flush)
            assert await exporter.flush(5.0)
            assert [len(r.request.resource_spans[0].scope_spans[0].spans) for r in rx.requests] == [5, 5, 2]
            assert rx.spans == decoded(spans)
            await exporter.shutdown(1.0)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_batches_by_delay(transport: str) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            exporter = await started(config(endpoint, protocol, batch=512, delay_ms=100), [])
            loop = asyncio.get_running_loop()
            offered_at = loop.time()
            exporter.offer(make_spans(3))
            await rx.wait_until(lambda: len(rx.requests) == 1)
            assert loop.time() - offered_at >= 0.05  # sent by the timer, not at once
            assert len(rx.spans) == 3
            exporter.offer(make_spans(2, first=3))
            await rx.wait_until(lambda: len(rx.requests) == 2)
            assert rx.spans == decoded(make_spans(5))
            await exporter.shutdown(1.0)

    run(main())


def test_http_gzip_and_headers() -> None:
    async def main() -> None:
        async with receiver("http") as (rx, endpoint, protocol):
            assert isinstance(rx, HttpReceiver)
            cfg = config(endpoint, protocol, compression="gzip", headers=(("X-Api-Key", "s3cret"), ("x-tenant", "a")))
            exporter = await started(cfg, [])
            spans = make_spans(20)
            exporter.offer(spans)
            assert await exporter.flush(5.0)
            got = rx.requests[0]
            assert got.method == "POST"
            assert got.path == "/v1/traces"
            assert got.headers["content-type"] == "application/x-protobuf"
            assert got.headers["content-encoding"] == "gzip"
            assert got.raw_body[:2] == b"\x1f\x8b"
            assert got.headers["x-api-key"] == "s3cret"
            assert got.headers["x-tenant"] == "a"
            assert rx.spans == decoded(spans)
            await exporter.shutdown(1.0)

    run(main())


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_grpc_compression_and_metadata(compression: str | None) -> None:
    async def main() -> None:
        async with receiver("grpc") as (rx, _, protocol):
            sniffer = await Http2Sniffer(rx.port).start()
            try:
                cfg = config(
                    f"http://127.0.0.1:{sniffer.port}",
                    protocol,
                    compression=compression,
                    headers=(("X-Api-Key", "s3cret"),),
                )
                exporter = await started(cfg, [])
                spans = make_spans(20)
                exporter.offer(spans)
                assert await exporter.flush(5.0)
                assert rx.spans == decoded(spans)
                assert isinstance(rx, GrpcReceiver)
                assert rx.requests[0].metadata["x-api-key"] == "s3cret"
                assert list(sniffer.compressed_flags.values()) == [1 if compression else 0]
                await exporter.shutdown(1.0)
            finally:
                await sniffer.stop()

    run(main())


def test_http_keeps_the_connection_alive() -> None:
    async def main() -> None:
        async with receiver("http") as (rx, endpoint, protocol):
            assert isinstance(rx, HttpReceiver)
            exporter = await started(config(endpoint, protocol), [])
            for i in range(3):
                exporter.offer(make_spans(2, first=2 * i))
                assert await exporter.flush(5.0)
            assert len(rx.requests) == 3
            assert rx.connections == 1
            await exporter.shutdown(1.0)

    run(main())


def test_http_endpoint_path_is_kept_when_it_names_v1_traces() -> None:
    async def main() -> None:
        async with receiver("http") as (rx, endpoint, protocol):
            assert isinstance(rx, HttpReceiver)
            for ep in (f"{endpoint}/otlp/v1/traces", f"{endpoint}/otlp/"):
                exporter = await started(config(ep, protocol), [])
                exporter.offer(make_spans(1))
                assert await exporter.flush(5.0)
                assert rx.requests[-1].path == "/otlp/v1/traces"
                await exporter.shutdown(1.0)

    run(main())


# --- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_http_over_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def main() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        rx = await HttpReceiver(server_ctx).start()
        try:
            cfg = config(f"https://127.0.0.1:{rx.port}", OtlpProtocol.HTTP_PROTOBUF, compression="gzip")
            client_ctx = ssl.create_default_context(cafile=str(cert))
            exporter = await started(cfg, [], ssl_context=client_ctx)
            spans = make_spans(4)
            exporter.offer(spans)
            assert await exporter.flush(5.0)
            assert rx.spans == decoded(spans)
            await exporter.shutdown(1.0)
            # Without trusting the self-signed certificate, the handshake fails: retried, then given up.
            untrusting = await started(cfg, [], initial_backoff=0.01, max_backoff=0.02, max_retry_time=0.3)
            untrusting.offer(make_spans(2))
            assert not await untrusting.flush(5.0)
            assert untrusting.spans_failed == 2
            assert len(rx.requests) == 1
            await untrusting.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


def test_grpc_over_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def main() -> None:
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        rx = await GrpcReceiver(creds).start()
        try:
            cfg = config(f"https://127.0.0.1:{rx.port}", OtlpProtocol.GRPC)
            exporter = await started(cfg, [], grpc_root_certificates=cert.read_bytes())
            spans = make_spans(4)
            exporter.offer(spans)
            assert await exporter.flush(5.0)
            assert rx.spans == decoded(spans)
            await exporter.shutdown(1.0)
        finally:
            await rx.stop()

    run(main())


# --- retries ---------------------------------------------------------------------------------------------


def test_grpc_unavailable_is_retried_then_succeeds() -> None:
    async def main() -> None:
        async with receiver("grpc") as (rx, endpoint, protocol):
            assert isinstance(rx, GrpcReceiver)
            rx.failures.extend([GrpcFailure(grpc.StatusCode.UNAVAILABLE)] * 2)
            exporter = await started(config(endpoint, protocol), [])
            spans = make_spans(5)
            exporter.offer(spans)
            assert await exporter.flush(5.0)
            assert rx.attempts == 3
            assert rx.spans == decoded(spans)
            assert (exporter.spans_exported, exporter.spans_failed) == (5, 0)
            assert exporter.export_durations.count == 3
            await exporter.shutdown(1.0)

    run(main())


def test_grpc_resource_exhausted_is_retried_only_with_retry_info() -> None:
    async def main() -> None:
        async with receiver("grpc") as (rx, endpoint, protocol):
            assert isinstance(rx, GrpcReceiver)
            exporter = await started(config(endpoint, protocol), [])
            rx.failures.append(GrpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED))
            exporter.offer(make_spans(3))
            assert not await exporter.flush(5.0)
            assert (rx.attempts, exporter.spans_failed, exporter.spans_exported) == (1, 3, 0)

            rx.failures.append(GrpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.05))
            loop = asyncio.get_running_loop()
            began = loop.time()
            exporter.offer(make_spans(2, first=3))
            assert await exporter.flush(5.0)
            assert loop.time() - began >= 0.05  # the server's delay was honoured
            assert (rx.attempts, exporter.spans_failed, exporter.spans_exported) == (3, 3, 2)
            await exporter.shutdown(1.0)

    run(main())


def test_grpc_invalid_argument_is_permanent() -> None:
    async def main() -> None:
        async with receiver("grpc") as (rx, endpoint, protocol):
            assert isinstance(rx, GrpcReceiver)
            rx.failures.append(GrpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "bad spans"))
            exporter = await started(config(endpoint, protocol), [])
            exporter.offer(make_spans(4))
            assert not await exporter.flush(5.0)
            assert (rx.attempts, exporter.spans_failed, exporter.spans_exported) == (1, 4, 0)
            assert rx.requests == []
            await exporter.shutdown(1.0)

    run(main())


def test_http_503_with_retry_after_is_retried_then_succeeds() -> None:
    async def main() -> None:
        async with receiver("http") as (rx, endpoint, protocol):
            assert isinstance(rx, HttpReceiver)
            rx.answers.extend([HttpAnswer(503, [("Retry-After", "0")], b"busy")] * 2)
            rx.answers.append(HttpAnswer(429, [], b"slow down"))  # no Retry-After: exponential backoff
            # A backoff long enough that only Retry-After: 0 could make the first two retries this quick.
            cfg = config(endpoint, protocol)
            exporter = await started(cfg, initial_backoff=0.2, max_backoff=0.2, max_retry_time=5)
            loop = asyncio.get_running_loop()
            began = loop.time()
            spans = make_spans(5)
            exporter.offer(spans)
            assert await exporter.flush(5.0)
            elapsed = loop.time() - began
            assert 0.1 <= elapsed < 1.0  # one backoff (0.1-0.2 s with jitter), the Retry-After waits were 0
            assert rx.attempts == 4
            assert rx.spans == decoded(spans)
            assert (exporter.spans_exported, exporter.spans_failed) == (5, 0)
            await exporter.shutdown(1.0)

    run(main())


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_http_other_errors_are_permanent(status: int) -> None:
    async def main() -> None:
        async with receiver("http") as (rx, endpoint, protocol):
            assert isinstance(rx, HttpReceiver)
            rx.answers.append(HttpAnswer(status, [("Retry-After", "0")], b"no"))
            exporter = await started(config(endpoint, protocol), [])
            exporter.offer(make_spans(4))
            assert not await exporter.flush(5.0)
            assert (rx.attempts, exporter.spans_failed, exporter.spans_exported) == (1, 4, 0)
            # The connection is still usable afterwards.
            exporter.offer(make_spans(1))
            assert await exporter.flush(5.0)
            assert rx.connections == 1
            await exporter.shutdown(1.0)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_success_counts_rejected_spans_as_failed(transport: str) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            rx.rejected_spans = 2
            exporter = await started(config(endpoint, protocol), [])
            exporter.offer(make_spans(5))
            assert not await exporter.flush(5.0)
            assert (exporter.spans_exported, exporter.spans_failed) == (3, 2)
            await exporter.shutdown(1.0)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retries_give_up_after_the_retry_time(transport: str) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            if isinstance(rx, GrpcReceiver):
                rx.failures.extend([GrpcFailure(grpc.StatusCode.UNAVAILABLE)] * 1000)
            else:
                rx.answers.extend([HttpAnswer(502)] * 1000)
            cfg = config(endpoint, protocol, batch=3, delay_ms=10)
            exporter = await started(cfg, initial_backoff=0.01, max_backoff=0.02, max_retry_time=0.2)
            exporter.offer(make_spans(3))
            await wait_for(lambda: exporter.spans_failed == 3)
            assert rx.attempts >= 3
            assert exporter.spans_exported == 0
            await exporter.shutdown(1.0)

    run(main())


# --- collector down, flush and shutdown ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_collector_down_offer_never_blocks_and_queue_stays_bounded(transport: str) -> None:
    async def main() -> None:
        protocol = OtlpProtocol.GRPC if transport == "grpc" else OtlpProtocol.HTTP_PROTOBUF
        cfg = config(f"http://127.0.0.1:{free_port()}", protocol, queue=50, batch=10, delay_ms=5, timeout_ms=200)
        exporter = await started(cfg, [], initial_backoff=0.005, max_backoff=0.02, max_retry_time=0.1)
        spans = make_spans(20)
        offered = dropped = 0
        tracemalloc.start()
        try:
            baseline = 0
            for round_ in range(200):
                began = time.perf_counter()
                dropped += exporter.offer(spans)
                assert time.perf_counter() - began < 0.05  # never waits for the collector
                offered += len(spans)
                assert exporter.queue_size <= 50
                assert accounted(exporter) == offered
                await asyncio.sleep(0.001)  # let the sender run (not synchronisation: nothing waits on it)
                if round_ == 20:
                    baseline = tracemalloc.get_traced_memory()[0]
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert grown < 512 * 1024, f"memory grew by {grown} bytes while the collector was down"
        assert exporter.spans_dropped[DROP_QUEUE_FULL] == dropped > 0
        await wait_for(lambda: exporter.spans_failed > 0)
        assert exporter.spans_exported == 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        await exporter.shutdown(0.3)
        assert loop.time() - began < 2.0
        assert exporter.queue_size == 0
        assert accounted(exporter) == offered

    run(main())


async def _silent_server() -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    """Accepts connections and reads, but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    return await asyncio.start_server(hold, "127.0.0.1", 0), held


def test_flush_returns_within_its_timeout_when_the_collector_hangs() -> None:
    async def main() -> None:
        server, held = await _silent_server()
        port = server.sockets[0].getsockname()[1]
        try:
            cfg = config(f"http://127.0.0.1:{port}", OtlpProtocol.HTTP_PROTOBUF, timeout_ms=30_000, batch=4)
            exporter = await started(cfg, [])
            exporter.offer(make_spans(6))  # one full batch goes out at once and hangs
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert not await exporter.flush(0.3)
            assert 0.25 <= loop.time() - began < 1.0
            await wait_for(lambda: exporter.in_flight == 0)
            assert exporter.spans_failed == 4  # the batch cut off at the deadline
            assert exporter.queue_size == 2  # a flush that ran out of time leaves the rest queued
            began = loop.time()
            await exporter.shutdown(0.2)
            assert loop.time() - began < 1.0
            assert exporter.spans_dropped[DROP_SHUTDOWN] + exporter.spans_failed == 6
        finally:
            for writer in held:
                writer.close()
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shutdown_sends_what_is_queued(transport: str) -> None:
    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            exporter = await started(config(endpoint, protocol, batch=4, delay_ms=60_000), [])
            spans = make_spans(11)
            exporter.offer(spans)
            await exporter.shutdown(5.0)
            assert rx.spans == decoded(spans)
            assert (exporter.spans_exported, exporter.queue_size) == (11, 0)
            assert exporter.offer(make_spans(3)) == 3
            assert exporter.spans_dropped[DROP_SHUTDOWN] == 3
            await exporter.shutdown(1.0)  # a second shutdown is harmless

    run(main())


def test_queue_full_drops_are_counted_before_start() -> None:
    cfg = config("http://127.0.0.1:4318", OtlpProtocol.HTTP_PROTOBUF, queue=10, batch=5)
    exporter = SpanExporter(cfg, [])
    assert exporter.offer(make_spans(8)) == 0
    assert exporter.offer(make_spans(5)) == 3
    assert exporter.queue_size == 10
    assert exporter.spans_dropped == {DROP_QUEUE_FULL: 3, DROP_SHUTDOWN: 0}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_worker_buffers_are_cut_at_batch_boundaries(transport: str) -> None:
    """Framed buffers from two workers (3 and 6 spans) in batches of 4: the second buffer is cut between
    spans, once per batch boundary that falls inside it, and every span arrives once, in order."""

    async def main() -> None:
        async with receiver(transport) as (rx, endpoint, protocol):
            exporter = await started(config(endpoint, protocol, batch=4, delay_ms=60_000), [])
            spans = make_spans(9)
            assert exporter.offer_framed(frame_spans(spans[:3])) == 0
            assert exporter.offer_framed(frame_spans(spans[3:])) == 0
            await rx.wait_until(lambda: len(rx.requests) == 2)
            assert await exporter.flush(5.0)
            assert [len(r.request.resource_spans[0].scope_spans[0].spans) for r in rx.requests] == [4, 4, 1]
            assert rx.spans == decoded(spans)
            await exporter.shutdown(1.0)

    run(main())


def test_queue_full_cuts_a_worker_buffer_at_a_span() -> None:
    cfg = config("http://127.0.0.1:4318", OtlpProtocol.HTTP_PROTOBUF, queue=10, batch=5)
    exporter = SpanExporter(cfg, [])
    spans = make_spans(13)
    assert exporter.offer_framed(frame_spans(spans[:8])) == 0
    assert exporter.offer_framed(frame_spans(spans[8:])) == 3  # two fit
    assert exporter.queue_size == 10
    assert exporter.spans_dropped == {DROP_QUEUE_FULL: 3, DROP_SHUTDOWN: 0}
    assert unframe_spans(b"".join(framed[start:] for framed, start, _ in exporter._queue)) == spans[:10]


def test_a_broken_worker_buffer_is_refused_whole() -> None:
    exporter = SpanExporter(config("http://127.0.0.1:4318", OtlpProtocol.HTTP_PROTOBUF), [])
    with pytest.raises(ValueError, match="truncated span"):
        exporter.offer_framed(frame_spans(make_spans(2)) + b"\x12\x40cut short")
    assert exporter.queue_size == 0
    assert accounted(exporter) == 0


# --- configuration and parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://h:9411/api/v2/spans", (False, "h", 9411, "/api/v2/spans")),
        ("http://zipkin/api/v2/spans/", (False, "zipkin", 9411, "/api/v2/spans/")),  # the path as written
        ("https://zipkin.example/custom?tenant=a", (True, "zipkin.example", 443, "/custom?tenant=a")),
        ("http://[::1]:9412", (False, "::1", 9412, "/")),
    ],
)
def test_zipkin_endpoint_is_used_as_configured(endpoint: str, expected: tuple[bool, str, int, str]) -> None:
    ep = _parse_endpoint(endpoint, OtlpProtocol.HTTP_PROTOBUF, TracingBackendKind.ZIPKIN)
    assert (ep.secure, ep.host, ep.port, ep.path) == expected
    # An exporter is built for it (no refusal); `protocol` is not consulted.
    SpanExporter(config(endpoint, OtlpProtocol.GRPC, kind=TracingBackendKind.ZIPKIN), [])


@pytest.mark.parametrize(
    ("endpoint", "protocol", "expected"),
    [
        ("http://localhost:4317", OtlpProtocol.GRPC, (False, "localhost", 4317)),
        ("localhost:4317", OtlpProtocol.GRPC, (False, "localhost", 4317)),
        ("https://otlp.example.com", OtlpProtocol.GRPC, (True, "otlp.example.com", 443)),
        ("http://collector", OtlpProtocol.HTTP_PROTOBUF, (False, "collector", 4318)),
        ("http://[::1]:4318/", OtlpProtocol.HTTP_PROTOBUF, (False, "::1", 4318)),
    ],
)
def test_endpoint_parsing(endpoint: str, protocol: OtlpProtocol, expected: tuple[bool, str, int]) -> None:
    ep = _parse_endpoint(endpoint, protocol)
    assert (ep.secure, ep.host, ep.port) == expected
    assert ep.path == "/v1/traces"


@pytest.mark.parametrize("endpoint", ["ftp://h:1", "http://:80", "http://h:99999"])
def test_bad_endpoints_are_config_errors(endpoint: str) -> None:
    with pytest.raises(ExporterConfigError):
        SpanExporter(config(endpoint, OtlpProtocol.GRPC), [])


@pytest.mark.parametrize(
    ("protocol", "header"),
    [
        (OtlpProtocol.HTTP_PROTOBUF, ("X-A", "a\r\nb")),
        (OtlpProtocol.HTTP_PROTOBUF, ("Content-Length", "1")),
        (OtlpProtocol.HTTP_PROTOBUF, ("User-Agent", "x")),
        (OtlpProtocol.HTTP_PROTOBUF, ("X-A", "euro \u20ac")),
        (OtlpProtocol.HTTP_PROTOBUF, ("X-A", "a\x01b")),
        (OtlpProtocol.HTTP_PROTOBUF, ("K\u212a", "v")),
        (OtlpProtocol.GRPC, ("bad key", "v")),
        (OtlpProtocol.GRPC, ("TE", "x")),
        (OtlpProtocol.GRPC, ("grpc-timeout", "1S")),
        (OtlpProtocol.GRPC, ("Connection", "x")),
        (OtlpProtocol.GRPC, ("x-a", "a\rb")),
        (OtlpProtocol.GRPC, ("x-a", "é")),
        (OtlpProtocol.GRPC, ("content-length", "1")),
        (OtlpProtocol.GRPC, ("k\u212a", "v")),
        (OtlpProtocol.GRPC, ("x-data-bin", "AAAA")),
    ],
)
def test_bad_headers_are_config_errors(protocol: OtlpProtocol, header: tuple[str, str]) -> None:
    with pytest.raises(ExporterConfigError):
        SpanExporter(config("http://h:1", protocol, headers=(header,)), [])


def test_retry_after_and_retry_info_parsing() -> None:
    assert _parse_retry_after("0") == 0.0
    assert _parse_retry_after(" 7 ") == 7.0
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_info_delay(status_with_retry_info(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", 1.5)) == 1.5
    assert _retry_info_delay(b"\x08\x08") is None  # a Status without details
    assert _retry_info_delay(b"\xff") is None  # malformed
