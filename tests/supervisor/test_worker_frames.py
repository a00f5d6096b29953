"""The supervisor's reader of a worker's control socket: a malformed SPANS frame (a worker bug) is logged and
dropped, and the frames after it are still read."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

import pytest

from sentinel.config import load_config_text
from sentinel.ipc import SPANS, encode
from sentinel.supervisor import Supervisor, WorkerHandle
from sentinel.tracing.otlp import SpanKind, encode_span, frame_spans

CONFIG = """
listeners { listener "http" { address "127.0.0.1:0"; }; }
routes { route "api" { matches { path-prefix "/"; }; upstream "backend"; }; }
upstreams { upstream "backend" { target "127.0.0.1:9"; }; }
observability { tracing { backend "otlp" { endpoint "http://127.0.0.1:9"; protocol "http/protobuf"; }; }; }
"""


def span(n: int) -> bytes:
    return encode_span(n.to_bytes(16, "big"), n.to_bytes(8, "big"), b"", "GET", SpanKind.SERVER, 1, 2, [])


def test_a_malformed_spans_frame_is_dropped_and_reading_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        supervisor = Supervisor(load_config_text(CONFIG, "test.kdl"), CONFIG)
        exporter = supervisor.exporter
        assert exporter is not None
        reader = asyncio.StreamReader()
        reader.feed_data(encode(SPANS, frame_spans([span(1)])))
        reader.feed_data(encode(SPANS, frame_spans([span(2)]) + b"\x12\x40cut short"))
        reader.feed_data(encode(SPANS, frame_spans([span(3), span(4)])))
        reader.feed_eof()
        control_a, control_b = socket.socketpair()
        handle = WorkerHandle(3, 0, cast(asyncio.subprocess.Process, None), control_a)
        try:
            async with asyncio.timeout(5):
                await supervisor._read_worker(handle, reader)  # returns at end of input
        finally:
            control_a.close()
            control_b.close()
            if supervisor.access_writer is not None:
                supervisor.access_writer.close()
        assert exporter.queue_size == 3  # the frames before and after the broken one, whole
        assert exporter.spans_dropped == {"queue_full": 0, "shutdown": 0}

    with caplog.at_level(logging.ERROR, logger="sentinel.supervisor"):
        asyncio.run(main())
    assert "worker 3 sent a malformed SPANS frame" in caplog.text
