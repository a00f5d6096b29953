"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

A span is written, framed as one `ScopeSpans.spans` field, straight into the batch's buffer
(`tracing/spans.py` for a request's SERVER and CLIENT spans; `record` for spans encoded elsewhere). The
batch goes to the supervisor as one SPANS frame when `BATCH` spans are waiting or at the worker's next
flush (`ipc.batch`), and is dropped and its spans counted if the supervisor is behind: the request path
never waits for tracing (SPEC §6.5, §11).

A SPANS frame's payload is therefore a `otlp.frame_spans` buffer, which the supervisor's exporter puts
into an export request as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sentinel.ipc import SPANS
from sentinel.ipc.batch import FrameBatcher

# Spans a frame: ~55 KiB of ~430-byte spans. A frame larger than the control socket's send buffer (208 KiB
# by default) is written in parts, and even one that fits costs more, cache-cold, to copy twice (the flush
# and the kernel) than it saves in wake-ups of the supervisor: at 512 spans, sampling 1.0 cost ~2 us more per
# request in the worker (docs/performance.md, session 11). The exporter joins frames into its own batches.
BATCH: Final = 128


class SpanRecorder(FrameBatcher):
    """Finished spans (framed `Span` messages) on their way to the supervisor's exporter."""

    __slots__ = ()

    def __init__(self, send: Callable[[list[bytes]], None], send_buffer_size: Callable[[], int]) -> None:
        super().__init__(SPANS, send, send_buffer_size, max_items=BATCH)

    def record(self, framed_spans: bytes, count: int = 1) -> None:
        """Hand off `count` framed spans."""
        self.add(framed_spans, count)
