"""Span recording in a worker: finished spans are encoded at once and handed to the supervisor in batches.

Recording is a list append of bytes already framed as `ScopeSpans.spans` fields (`tracing/spans.py`): one
span, or a request's spans together. The batch goes to the supervisor as one SPANS frame, its spans written
as they are, when `BATCH` items are waiting or at the worker's next flush (`ipc.batch`), and is dropped and
its spans counted if the supervisor is behind: the request path never waits for tracing (SPEC §6.5, §11).

A SPANS frame's payload is therefore a `otlp.frame_spans` buffer, which the supervisor's exporter puts
into an export request as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sentinel.ipc import SPANS
from sentinel.ipc.batch import FrameBatcher
from sentinel.tracing.otlp import count_framed_spans

# Items per batch: a proxied request's spans are one item (its SERVER and CLIENT spans), so 256 items are
# about one export request's worth (max-export-batch-size 512), an eighth of the default queue.
BATCH: Final = 256


def _as_parts(spans: list[bytes]) -> list[bytes]:
    # Framed spans one after the other are the frame's payload as they are.
    return spans


def _span_count(items: list[bytes]) -> int:
    # Only for a dropped batch: walking the frames costs what encoding them did.
    return count_framed_spans(b"".join(items))


class SpanRecorder(FrameBatcher[bytes]):
    """Finished spans (framed `Span` messages) on their way to the supervisor's exporter."""

    __slots__ = ()

    def __init__(self, send: Callable[[list[bytes]], None], send_buffer_size: Callable[[], int]) -> None:
        super().__init__(SPANS, _as_parts, send, send_buffer_size, max_items=BATCH, count=_span_count)

    def record(self, framed_spans: bytes) -> None:
        """Hand off one or more framed spans (a request's spans come together)."""
        self.add(framed_spans)
