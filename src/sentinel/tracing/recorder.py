"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

Recording a span is an `encode_span` call and a list append; the batch goes to the supervisor as one
SPANS frame when `BATCH` spans are waiting or at the worker's next flush (`ipc.batch`), and is dropped
and counted if the supervisor is behind: the request path never waits for tracing (SPEC §6.5, §11).

A SPANS frame's payload is the batch framed as the repeated `ScopeSpans.spans` field
(`otlp.frame_spans`), so that the supervisor's exporter puts it into an export request as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sentinel.ipc import SPANS
from sentinel.ipc.batch import FrameBatcher
from sentinel.tracing.otlp import frame_spans

BATCH: Final = 256


class SpanRecorder(FrameBatcher[bytes]):
    """Finished spans (encoded `Span` messages) on their way to the supervisor's exporter."""

    __slots__ = ()

    def __init__(self, send: Callable[[bytes], None], send_buffer_size: Callable[[], int]) -> None:
        super().__init__(SPANS, frame_spans, send, send_buffer_size, max_items=BATCH)

    def record(self, span: bytes) -> None:
        self.add(span)
