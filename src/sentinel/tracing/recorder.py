"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

Recording a span is an `encode_span` call and a list append; every `FLUSH_INTERVAL` seconds (or when
`BATCH` spans are waiting) the batch goes to the supervisor as one frame on the control socket. If
the supervisor falls behind (the socket's send buffer holds more than `MAX_PENDING_BYTES`), spans are
dropped and counted: the request path never waits for tracing (SPEC §6.5, §11).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable

from sentinel.ipc import SPANS, encode

FLUSH_INTERVAL = 0.2
BATCH = 256
MAX_PENDING_BYTES = 8 * 1024 * 1024
_LENGTH = struct.Struct(">I")


def pack_spans(spans: Iterable[bytes]) -> bytes:
    """A SPANS frame payload: each encoded span prefixed with its u32 length."""
    return b"".join(_LENGTH.pack(len(s)) + s for s in spans)


def unpack_spans(payload: bytes) -> list[bytes]:
    spans: list[bytes] = []
    offset, end = 0, len(payload)
    while offset < end:
        (length,) = _LENGTH.unpack_from(payload, offset)
        offset += 4
        if offset + length > end:
            raise ValueError("truncated span in a SPANS frame")
        spans.append(payload[offset : offset + length])
        offset += length
    return spans


class SpanRecorder:
    __slots__ = ("_pending", "_send", "_send_buffer_size", "dropped")

    def __init__(self, send: Callable[[bytes], None], send_buffer_size: Callable[[], int]) -> None:
        self._send = send
        self._send_buffer_size = send_buffer_size
        self._pending: list[bytes] = []
        self.dropped = 0  # spans dropped because the supervisor was behind

    def record(self, span: bytes) -> None:
        pending = self._pending
        pending.append(span)
        if len(pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._send_buffer_size() > MAX_PENDING_BYTES:
            self.dropped += len(pending)
            return
        self._send(encode(SPANS, pack_spans(pending)))

    async def run(self) -> None:
        """Flush periodically until cancelled; the final flush is the caller's (on drain)."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()
