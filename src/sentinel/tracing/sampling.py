"""Head sampling (SPEC §6.3): parent-based, with a trace-id-ratio root.

The ratio decision is computed exactly as the OpenTelemetry SDK's `TraceIdRatioBased` does, so every
service of a trace that samples at the same rate decides the same way for the same trace id.
"""

from __future__ import annotations

from sentinel.tracing.context import SpanContext

# The SDK looks only at the 64 low-order bits of the trace id (for compatibility with 64-bit ids).
_TRACE_ID_LIMIT = (1 << 64) - 1


class TraceIdRatioSampler:
    """Samples a trace when the low 64 bits of its id, read big-endian, are below round(rate * 2**64).

    rate 0 gives a bound of 0 (never), rate 1 a bound of 2**64 (always, as no 64-bit value reaches it).
    The bound is computed with the same float expression as the SDK, rounding included.
    """

    __slots__ = ("_bound", "_cut", "_rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:  # also rejects NaN
            raise ValueError(f"sampling rate must be in [0.0, 1.0], got {rate!r}")
        self._rate = rate
        self._bound = bound = round(rate * (_TRACE_ID_LIMIT + 1))
        # The bound as bytes, compared with the id's last 8 bytes: for strings of one length, big-endian,
        # byte order is number order (and no 64-bit integer is built per request). Rate 1 (bound 2**64)
        # is nine 0xff bytes, above every 8-byte string; rate 0 is empty.
        self._cut = b"" if bound == 0 else b"\xff" * 9 if bound > _TRACE_ID_LIMIT else bound.to_bytes(8, "big")

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def bound(self) -> int:
        return self._bound

    def should_sample(self, trace_id: bytes) -> bool:
        """`trace_id` is the 16 raw bytes; its last 8 are the low 64 bits of the SDK's integer id."""
        cut = self._cut
        return bool(cut) and trace_id[8:16] < cut

    def __repr__(self) -> str:
        return f"TraceIdRatioSampler({self._rate!r})"


class ParentBasedSampler:
    """A valid incoming parent decides by its sampled flag; without one, the root sampler decides.

    This is the SDK's `ParentBased` with its default delegates (sampled parent: always on; unsampled
    parent: always off). `extract` only returns valid parents, so None is the only "no parent" case.
    """

    __slots__ = ("_root",)

    def __init__(self, root: TraceIdRatioSampler) -> None:
        self._root = root

    @property
    def root(self) -> TraceIdRatioSampler:
        return self._root

    def should_sample(self, parent: SpanContext | None, trace_id: bytes) -> bool:
        if parent is not None:
            return parent.sampled
        return self._root.should_sample(trace_id)

    def __repr__(self) -> str:
        return f"ParentBasedSampler({self._root!r})"
