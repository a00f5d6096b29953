"""bench/otlp_sink.py, the benchmarks' stand-in collector, against the real exporter over grpcio: every
export is answered as a successful gRPC call, and the sink's counts match what was sent."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from sentinel.config.model import OtlpProtocol, TracingBackend, TracingBackendKind, TracingConfig
from sentinel.tracing.export import SpanExporter
from sentinel.tracing.otlp import SpanKind, encode_span
from tests.support.process import wait_for

SINK = Path(__file__).resolve().parents[2] / "bench" / "otlp_sink.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_sink_answers_grpcio_exports_and_counts_them() -> None:
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(SINK), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: listening(port), what="the sink listening")
        # 600 spans of ~1 KiB in batches of 256: requests larger than HTTP/2's default 64 KiB window and
        # 16 KiB frames, on one connection.
        spans = [
            encode_span(i.to_bytes(16, "big"), i.to_bytes(8, "big"), b"", "x" * 1000, SpanKind.SERVER, 1, 2, [])
            for i in range(1, 601)
        ]
        backend = TracingBackend(
            kind=TracingBackendKind.OTLP, endpoint=f"http://127.0.0.1:{port}", protocol=OtlpProtocol.GRPC
        )
        config = TracingConfig(backend=backend, max_queue_size=4096, max_export_batch_size=256)

        async def export() -> SpanExporter:
            exporter = SpanExporter(config, [], max_retry_time=5.0)
            await exporter.start()
            for start in range(0, 600, 100):
                exporter.offer(spans[start : start + 100])
            assert await exporter.flush(10.0)
            await exporter.shutdown(5.0)
            return exporter

        exporter = asyncio.run(export())
        assert (exporter.spans_exported, exporter.spans_failed) == (600, 0)
        assert exporter.export_durations.count == 3  # 256 + 256 + 88, each answered at the first attempt
    finally:
        sink.send_signal(signal.SIGTERM)
        out, _ = sink.communicate(timeout=10)
    counts = json.loads(out)
    assert counts["exports"] == 3
    # The three requests' gRPC messages: 5-byte prefix and an ExportTraceServiceRequest each.
    assert counts["bytes"] > 600 * 1000
