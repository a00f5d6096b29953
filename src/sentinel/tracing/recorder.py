"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

Recording a span is a list append of its bytes, already framed as one `ScopeSpans.spans` field
(`tracing/spans.py`); the batch goes to the supervisor as one SPANS frame, its spans written as they are, when
`BATCH` spans are waiting or at the worker's next flush (`ipc.batch`), and is dropped and counted if
the supervisor is behind: the request path never waits for tracing (SPEC §6.5, §11).

A SPANS frame's payload is therefore a `otlp.frame_spans` buffer, which the supervisor's exporter puts
into an export request as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sentinel.ipc import SPANS
from sentinel.ipc.batch import FrameBatcher

BATCH: Final = 512  # one export request's worth (max-export-batch-size), a quarter of the default queue


def _as_parts(spans: list[bytes]) -> list[bytes]:
    # Framed spans one after the other are the frame's payload as they are.
    return spans


class SpanRecorder(FrameBatcher[bytes]):
    """Finished spans (framed `Span` messages) on their way to the supervisor's exporter."""

    __slots__ = ()

    def __init__(self, send: Callable[[list[bytes]], None], send_buffer_size: Callable[[], int]) -> None:
        super().__init__(SPANS, _as_parts, send, send_buffer_size, max_items=BATCH)

    def record(self, framed_span: bytes) -> None:
        self.add(framed_span)
