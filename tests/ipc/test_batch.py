"""Worker → supervisor batches over a real Unix socket pair: a batch leaves as one frame written as a list of
buffers (`writelines`), and arrives as the frame the supervisor's reader expects."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from sentinel.ipc import SPANS, read_frame
from sentinel.ipc.batch import MAX_PENDING_BYTES, FrameBatcher
from sentinel.logging.access import FLUSH_BYTES
from sentinel.tracing.otlp import SpanKind, count_framed_spans, encode_span, framed_span_head, unframe_spans
from sentinel.tracing.recorder import BATCH, SpanRecorder


def framed_span(n: int, name: str = "GET") -> bytes:
    body = encode_span(n.to_bytes(16, "big"), n.to_bytes(8, "big"), b"", name, SpanKind.SERVER, 1, 2, [])
    return framed_span_head(len(body)) + body


async def _pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, object]:
    """The supervisor's end (a reader) and the worker's (a writer), and what must stay referenced."""
    a, b = socket.socketpair()
    reader, reader_side = await asyncio.open_unix_connection(sock=a)
    writer_side, writer = await asyncio.open_unix_connection(sock=b)
    return reader, writer, (reader_side, writer_side)


def test_span_batches_arrive_as_spans_frames() -> None:
    async def main() -> None:
        reader, writer, _ = await _pair()
        recorder = SpanRecorder(writer.writelines, writer.transport.get_write_buffer_size)
        # Spans of several sizes, some long enough for a two-byte length (the frame heads differ).
        spans = [framed_span(n, "x" * (n % 300)) for n in range(1, BATCH + 11)]
        for s in spans:
            recorder.record(s)
        recorder.flush()  # the 10 left over
        kind, first = await asyncio.wait_for(read_frame(reader), 10)  # type: ignore[misc]
        assert kind == SPANS
        assert count_framed_spans(first) == BATCH
        kind, second = await asyncio.wait_for(read_frame(reader), 10)  # type: ignore[misc]
        assert kind == SPANS
        assert unframe_spans(first + second) == [unframe_spans(s)[0] for s in spans]
        assert recorder.dropped == 0
        writer.close()

    uvloop.run(main())


def test_a_batch_is_dropped_and_counted_when_the_supervisor_is_behind() -> None:
    async def main() -> None:
        reader, writer, _ = await _pair()
        pending = [MAX_PENDING_BYTES + 1]
        recorder = SpanRecorder(writer.writelines, lambda: pending[0])
        for n in range(1, 4):
            recorder.record(framed_span(n))
        recorder.record(framed_span(4) + framed_span(5), 2)  # two spans handed over together
        recorder.flush()
        assert recorder.dropped == 5  # spans, not hand-offs
        pending[0] = 0
        recorder.record(framed_span(9))
        recorder.flush()
        kind, payload = await asyncio.wait_for(read_frame(reader), 10)  # type: ignore[misc]
        assert (kind, count_framed_spans(payload)) == (SPANS, 1)
        writer.close()

    uvloop.run(main())


def test_access_batches_go_unframed_and_hold_whole_lines() -> None:
    async def main() -> None:
        reader, writer, _ = await _pair()
        sent: list[list[bytes]] = []

        def send(buffers: list[bytes]) -> None:
            sent.append(buffers)
            writer.writelines(buffers)

        batch = FrameBatcher(None, send, writer.transport.get_write_buffer_size, max_bytes=FLUSH_BYTES)
        lines = [f"line {n} é\n".encode() for n in range(FLUSH_BYTES // 10)]
        for n, line in enumerate(lines):
            if n % 2:
                batch.add(line)
            else:  # written in two pieces, as the JSON lines are
                batch.buffer.write(line[:3])
                batch.buffer.write(line[3:])
                batch.written()
        batch.flush()
        received = b""
        while received.count(b"\n") < len(lines):
            received += await asyncio.wait_for(reader.read(1 << 20), 10)
        assert received == b"".join(lines)  # no frame headers: the access socket carries the lines alone
        assert len(sent) >= 2  # FLUSH_BYTES sent one before the end
        assert all(len(buffers) == 1 and buffers[0].endswith(b"\n") for buffers in sent)  # whole lines
        assert batch.dropped == 0
        writer.close()

    uvloop.run(main())
