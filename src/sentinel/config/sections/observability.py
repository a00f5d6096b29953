"""`observability { tracing { ... } logging { ... } metrics { ... } }` (SPEC §6, §7, §8)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sentinel.config.addresses import AddressError, check_endpoint_url, parse_socket_address
from sentinel.config.model import (
    AccessLogConfig,
    AccessLogFormat,
    EmbeddedViewerConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    ObservabilityConfig,
    OtlpProtocol,
    Propagator,
    TracingBackend,
    TracingBackendKind,
    TracingConfig,
)
from sentinel.config.reader import Block, ConfigNode, pick
from sentinel.config.sections.listeners import read_address
from sentinel.tracing.export_headers import header_problem

BACKENDS = {
    "otlp": TracingBackendKind.OTLP,
    "jaeger": TracingBackendKind.JAEGER,
    "zipkin": TracingBackendKind.ZIPKIN,
    "embedded": TracingBackendKind.EMBEDDED,
}
DEFAULT_ENDPOINTS = {
    (TracingBackendKind.OTLP, OtlpProtocol.GRPC): "http://localhost:4317",
    (TracingBackendKind.OTLP, OtlpProtocol.HTTP_PROTOBUF): "http://localhost:4318",
    (TracingBackendKind.JAEGER, OtlpProtocol.GRPC): "http://localhost:4317",
    (TracingBackendKind.JAEGER, OtlpProtocol.HTTP_PROTOBUF): "http://localhost:4318",
    (TracingBackendKind.EMBEDDED, OtlpProtocol.GRPC): "http://127.0.0.1:4317",
    (TracingBackendKind.EMBEDDED, OtlpProtocol.HTTP_PROTOBUF): "http://127.0.0.1:4318",
}
ZIPKIN_DEFAULT_ENDPOINT = "http://localhost:9411/api/v2/spans"
_OTLP_PROTOCOLS = {
    "grpc": OtlpProtocol.GRPC,
    "http/protobuf": OtlpProtocol.HTTP_PROTOBUF,
    "http": OtlpProtocol.HTTP_PROTOBUF,
}
_PROPAGATORS = {"tracecontext": Propagator.TRACECONTEXT, "b3": Propagator.B3, "jaeger": Propagator.JAEGER}
_LEVELS = {
    "trace": LogLevel.TRACE,
    "debug": LogLevel.DEBUG,
    "info": LogLevel.INFO,
    "warn": LogLevel.WARN,
    "warning": LogLevel.WARN,
    "error": LogLevel.ERROR,
}
_LOG_FORMATS = {"json": LogFormat.JSON, "pretty": LogFormat.PRETTY}
_ACCESS_FORMATS = {"json": AccessLogFormat.JSON, "combined": AccessLogFormat.COMBINED}
_COMPRESSION = {"gzip": "gzip", "none": "none"}


def read_observability(node: ConfigNode) -> ObservabilityConfig:
    node.no_values()
    b = Block(node, ["tracing", "logging", "metrics"])
    tracing = b.block("tracing")
    logging = b.block("logging")
    metrics = b.block("metrics")
    return ObservabilityConfig(
        tracing=_read_tracing(tracing) if tracing is not None else None,
        logging=_read_logging(logging) if logging is not None else LoggingConfig(),
        metrics=_read_metrics(metrics) if metrics is not None else None,
    )


def _read_tracing(node: ConfigNode) -> TracingConfig | None:
    b = Block(
        node,
        [
            "backend",
            "enabled",
            "sampling-rate",
            "service-name",
            "propagation",
            "response-headers",
            "record-query",
            "max-queue-size",
            "max-export-batch-size",
            "schedule-delay-ms",
        ],
    )
    backend_node = b.get("backend")
    backend = _read_backend(backend_node) if backend_node is not None else None
    if backend_node is None:
        node.error('tracing needs a backend, e.g. backend "otlp" { endpoint "http://localhost:4317" }')
    propagation = _read_propagation(b)
    traceresponse = False
    response_headers = b.block("response-headers")
    if response_headers is not None:
        traceresponse = Block(response_headers, ["traceresponse"]).boolean("traceresponse", False)
    d = TracingConfig(TracingBackend(TracingBackendKind.OTLP, ""))
    queue_size = b.integer("max-queue-size", d.max_queue_size, minimum=1)
    batch_size = b.integer("max-export-batch-size", d.max_export_batch_size, minimum=1)
    if batch_size > queue_size:
        node.error(f"max-export-batch-size ({batch_size}) must not exceed max-queue-size ({queue_size})")
    service_name = b.string("service-name", None)
    config = TracingConfig(
        backend=backend or d.backend,
        enabled=b.boolean("enabled", True),
        sampling_rate=b.number("sampling-rate", d.sampling_rate, minimum=0.0, maximum=1.0),
        service_name=service_name,
        propagation=propagation,
        traceresponse=traceresponse,
        record_query=b.boolean("record-query", d.record_query),
        max_queue_size=queue_size,
        max_export_batch_size=batch_size,
        schedule_delay_ms=b.integer("schedule-delay-ms", d.schedule_delay_ms, minimum=1),
    )
    return config if backend is not None else None


def _read_propagation(b: Block) -> tuple[Propagator, ...]:
    names = b.strings("propagation")
    node = b.get("propagation")
    if names is None or node is None:
        return (Propagator.TRACECONTEXT,)
    found: list[Propagator] = []
    for name in names:
        value = pick(node, "propagation", name, _PROPAGATORS, None)
        if value is not None and value not in found:
            found.append(value)
    return tuple(found) or (Propagator.TRACECONTEXT,)


def _read_backend(node: ConfigNode) -> TracingBackend | None:
    """`backend "otlp" { endpoint "..."; protocol "grpc"; headers { "k" "v" }; compression "gzip"; timeout-ms N }`."""
    node.no_properties()
    if len(node.args) != 1 or not isinstance(node.args[0], str):
        node.error('backend takes one type: "otlp", "jaeger", "zipkin" or "embedded"')
        return None
    kind = pick(node, "backend", node.args[0], BACKENDS, None)
    if kind is None:
        return None
    b = Block(
        node,
        ["endpoint", "protocol", "headers", "compression", "timeout-ms", "ui", "db", "retention-hours", "max-size-mb"],
    )
    endpoint = b.string("endpoint", None)
    endpoint_node = b.get("endpoint")
    if endpoint is not None and endpoint_node is not None:
        problem = check_endpoint_url(endpoint)
        if problem is not None:
            endpoint_node.error(f"endpoint {problem}")
            endpoint = None
    protocol_node = b.get("protocol")
    protocol = b.choice("protocol", _OTLP_PROTOCOLS, None)
    if kind is TracingBackendKind.ZIPKIN:
        # Zipkin v2 JSON, always POSTed over HTTP(S) to the endpoint URL as written (path included).
        if protocol_node is not None:
            protocol_node.error("protocol applies to OTLP backends only; zipkin always sends JSON over HTTP")
        protocol = OtlpProtocol.HTTP_PROTOBUF
        endpoint = endpoint or ZIPKIN_DEFAULT_ENDPOINT
    elif protocol is None:
        protocol = infer_otlp_protocol(endpoint)
    headers = _read_headers(
        b.block("headers"), grpc=kind is not TracingBackendKind.ZIPKIN and protocol is OtlpProtocol.GRPC
    )
    viewer = _read_viewer(b) if kind is TracingBackendKind.EMBEDDED else None
    if kind is not TracingBackendKind.EMBEDDED:
        for key in ("ui", "db", "retention-hours", "max-size-mb"):
            other = b.get(key)
            if other is not None:
                other.error(f'{key} applies to backend "embedded" only (the built-in trace viewer)')
    return TracingBackend(
        kind=kind,
        endpoint=endpoint or DEFAULT_ENDPOINTS[(kind, protocol)],
        protocol=protocol,
        headers=headers,
        compression=_none_if_none(b.choice("compression", _COMPRESSION, None)),
        timeout_ms=b.integer("timeout-ms", 10000, minimum=1, maximum=600_000),
        viewer=viewer,
    )


def _read_viewer(b: Block) -> EmbeddedViewerConfig:
    """`ui "127.0.0.1:16686"; db "/var/lib/sentinel/traces.db"; retention-hours 24; max-size-mb 512`."""
    d = EmbeddedViewerConfig()
    ui = d.ui
    ui_text = b.string("ui", None)
    ui_node = b.get("ui")
    if ui_text is not None and ui_node is not None:
        try:
            ui = parse_socket_address(ui_text, allow_port_zero=True)
        except AddressError as exc:
            ui_node.error(f"ui {exc}")
    return EmbeddedViewerConfig(
        ui=ui,
        db=b.string("db", None),
        retention_hours=b.number("retention-hours", d.retention_hours, minimum=0.001),
        max_size_mb=b.number("max-size-mb", d.max_size_mb, minimum=1),
    )


def infer_otlp_protocol(endpoint: str | None) -> OtlpProtocol:
    """gRPC unless the endpoint is plainly OTLP/HTTP (port 4318 or a /v1/traces path)."""
    if endpoint is None:
        return OtlpProtocol.GRPC
    parts = urlsplit(endpoint)
    if parts.port == 4318 or parts.path.rstrip("/").endswith("/v1/traces"):
        return OtlpProtocol.HTTP_PROTOBUF
    return OtlpProtocol.GRPC


def _none_if_none(value: str | None) -> str | None:
    return None if value == "none" else value


def _read_headers(node: ConfigNode | None, grpc: bool) -> tuple[tuple[str, str], ...]:
    """`headers { "authorization" "Bearer x"; x-scope-orgid "tenant" }`: one node per header, each one that
    the backend's protocol can carry (gRPC metadata or HTTP fields)."""
    if node is None:
        return ()
    headers: list[tuple[str, str]] = []
    for child in node.children:
        if child.children or child.properties or len(child.args) != 1 or not isinstance(child.args[0], str):
            child.error(f'header "{child.name}" takes one string value, e.g. "{child.name}" "value"')
            continue
        problem = header_problem(child.name, str(child.args[0]), grpc)
        if problem is not None:
            child.error(f'header "{child.name}" {problem}')
            continue
        headers.append((child.name.lower(), str(child.args[0])))
    return tuple(headers)


def _read_logging(node: ConfigNode) -> LoggingConfig:
    b = Block(node, ["level", "format", "file", "access-log"])
    d = LoggingConfig()
    access = b.block("access-log")
    return LoggingConfig(
        level=b.choice("level", _LEVELS, d.level),
        format=b.choice("format", _LOG_FORMATS, d.format),
        file=b.string("file", None),
        access_log=_read_access_log(access) if access is not None else None,
    )


def _read_access_log(node: ConfigNode) -> AccessLogConfig:
    b = Block(node, ["enabled", "format", "file", "include-trace-id", "sample-rate", "sample-errors-always"])
    d = AccessLogConfig()
    return AccessLogConfig(
        enabled=b.boolean("enabled", d.enabled),
        format=b.choice("format", _ACCESS_FORMATS, d.format),
        file=b.string("file", None),
        include_trace_id=b.boolean("include-trace-id", d.include_trace_id),
        sample_rate=b.number("sample-rate", d.sample_rate, minimum=0.0, maximum=1.0),
        sample_errors_always=b.boolean("sample-errors-always", d.sample_errors_always),
    )


def _read_metrics(node: ConfigNode) -> MetricsConfig:
    b = Block(node, ["enabled", "address", "path"])
    d = MetricsConfig()
    path = b.string("path", d.path)
    path_node = b.get("path")
    if path_node is not None and not path.startswith("/"):
        path_node.error(f'path "{path}" must start with "/"')
        path = d.path
    return MetricsConfig(
        enabled=b.boolean("enabled", d.enabled),
        address=read_address(b, "address", allow_port_zero=True) or d.address,
        path=path,
    )
