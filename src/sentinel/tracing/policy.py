"""Which requests are traced and sampled (SPEC §6.3), decided per route once at config load."""

from __future__ import annotations

from sentinel.config.model import RouteConfig, TracingConfig
from sentinel.tracing.context import SpanContext
from sentinel.tracing.sampling import ParentBasedSampler, TraceIdRatioSampler


class TracePolicy:
    """The sampling rule of one route (or of requests that match no route).

    - Parent-based: a valid incoming `traceparent` decides; otherwise the trace-id ratio sampler.
    - `route { tracing #false }` never samples; `route { tracing { sampling-rate X } }` uses X.
    - Builtin routes (health, metrics, status) are not sampled unless their route says so.
    Unsampled requests still carry a trace id everywhere; only span recording is skipped.
    """

    __slots__ = ("sampler",)

    def __init__(self, tracing: TracingConfig, route: RouteConfig | None) -> None:
        rate: float | None = tracing.sampling_rate if tracing.enabled else None
        if route is not None:
            override = route.tracing
            if override is not None:
                rate = override.sampling_rate if override.sampling_rate is not None else rate
                if not override.enabled:
                    rate = None
            elif route.builtin_handler is not None:
                rate = None
        self.sampler = ParentBasedSampler(TraceIdRatioSampler(rate)) if rate is not None else None

    def sampled(self, parent: SpanContext | None, trace_id: bytes) -> bool:
        sampler = self.sampler
        return sampler is not None and sampler.should_sample(parent, trace_id)
