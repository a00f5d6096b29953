"""OpenTelemetry glue: make an agent's spans children of the proxy's agent-call span (SPEC §5).

The proxy sends `metadata.traceparent` naming its agent-call span; `parent_context` turns it into an
OpenTelemetry Context (the Python version of the seed's Rust example). OpenTelemetry is imported only
when these functions run, so the rest of the SDK works without it installed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

_provider: TracerProvider | None = None


class SpanLike(Protocol):
    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    """Stands in for a span when OpenTelemetry is not installed."""

    def set_attribute(self, key: str, value: Any) -> None:
        return None


def parent_context(traceparent: str | None) -> Context:
    """The context whose remote parent is the span named by `traceparent` (an empty one if absent or invalid,
    so a span started in it is a root)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

    carrier = {"traceparent": traceparent} if traceparent else {}
    return TraceContextTextMapPropagator().extract(carrier)


def configure_tracing(service_name: str, endpoint: str | None = None) -> TracerProvider | None:
    """Export spans over OTLP/gRPC to `endpoint` (or $OTEL_EXPORTER_OTLP_ENDPOINT); None when neither is set."""
    global _provider  # noqa: PLW0603 - one provider per agent process, like OpenTelemetry's own global
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # A short delay: an agent's spans should reach the backend about as soon as the proxy's do.
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush the spans still queued and stop the exporter (call before the process exits)."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
        _provider = None


@contextlib.contextmanager
def child_span(
    tracer_name: str, span_name: str, traceparent: str | None, attributes: Mapping[str, Any] | None = None
) -> Iterator[SpanLike]:
    """A span under the proxy's agent-call span. Without a configured provider it is OpenTelemetry's no-op
    span; without OpenTelemetry installed, a stand-in, so agents can call this unconditionally."""
    try:
        from opentelemetry import trace  # noqa: PLC0415
    except ImportError:
        yield _NoSpan()
        return
    tracer = trace.get_tracer(tracer_name)
    with tracer.start_as_current_span(span_name, context=parent_context(traceparent), attributes=attributes) as span:
        yield span
