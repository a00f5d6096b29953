"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

Recording a span is an `encode_span` call and a list append; the batch goes to the supervisor as one
SPANS frame when `BATCH` spans are waiting or at the worker's next flush (`ipc.batch`), and is dropped
and counted if the supervisor is behind: the request path never waits for tracing (SPEC §6.5, §11).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

from sentinel.ipc import SPANS
from sentinel.ipc.batch import FrameBatcher

BATCH: Final = 256
_LENGTH: Final = struct.Struct(">I")


def pack_spans(spans: Iterable[bytes]) -> bytes:
    """A SPANS frame payload: each encoded span prefixed with its u32 length (one join: each span is
    copied once)."""
    parts: list[bytes] = []
    for span in spans:
        parts.append(_LENGTH.pack(len(span)))
        parts.append(span)
    return b"".join(parts)


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


class SpanRecorder(FrameBatcher[bytes]):
    """Finished spans (encoded `Span` messages) on their way to the supervisor's exporter."""

    __slots__ = ()

    def __init__(self, send: Callable[[bytes], None], send_buffer_size: Callable[[], int]) -> None:
        super().__init__(SPANS, pack_spans, send, send_buffer_size, max_items=BATCH)

    def record(self, span: bytes) -> None:
        self.add(span)
