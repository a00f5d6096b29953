"""Typed, immutable configuration objects (SPEC §2, §6, §7, §8).

Every object is a frozen dataclass: a reload builds a new tree and swaps it whole, and runtime state
(pools, breakers, health) lives beside the config keyed by ids. Defaults here are the documented ones;
the KDL reader fills every field explicitly so that the defaults live in one place.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class TraceIdFormat(enum.Enum):
    TINYFLAKE = "tinyflake"
    UUID = "uuid"


class ListenerProtocol(enum.Enum):
    HTTP = "http"
    HTTPS = "https"


class LoadBalancing(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    RANDOM = "random"
    IP_HASH = "ip_hash"
    CONSISTENT_HASH = "consistent_hash"
    P2C = "p2c"


class HealthCheckType(enum.Enum):
    HTTP = "http"
    TCP = "tcp"


class FailureMode(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class AgentEvent(enum.Enum):
    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_BODY = "response_body"
    LOG = "log"


class AgentProtocolVersion(enum.Enum):
    V1 = "v1"
    V2 = "v2"


class BuiltinHandler(enum.Enum):
    HEALTH = "health"
    STATUS = "status"
    METRICS = "metrics"
    UPSTREAMS = "upstreams"
    NOT_FOUND = "not-found"


class ServiceType(enum.Enum):
    WEB = "web"
    BUILTIN = "builtin"


class TracingBackendKind(enum.Enum):
    OTLP = "otlp"
    JAEGER = "jaeger"  # OTLP to Jaeger
    ZIPKIN = "zipkin"
    EMBEDDED = "embedded"


class OtlpProtocol(enum.Enum):
    GRPC = "grpc"
    HTTP_PROTOBUF = "http/protobuf"


class Propagator(enum.Enum):
    TRACECONTEXT = "tracecontext"
    B3 = "b3"
    JAEGER = "jaeger"


class LogLevel(enum.Enum):
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class LogFormat(enum.Enum):
    JSON = "json"
    PRETTY = "pretty"


class AccessLogFormat(enum.Enum):
    JSON = "json"
    COMBINED = "combined"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A listening or target address. `host` has no brackets, even for IPv6."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SystemConfig:
    worker_threads: int = 0
    trace_id_format: TraceIdFormat = TraceIdFormat.TINYFLAKE
    graceful_shutdown_timeout_secs: int = 30
    max_connections: int = 10000
    pid_file: str | None = None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str
    key_file: str
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    id: str
    address: SocketAddress
    protocol: ListenerProtocol = ListenerProtocol.HTTP
    request_timeout_secs: float = 60
    keepalive_timeout_secs: float = 75
    default_route: str | None = None
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-cased
    value: str | None  # None: presence test


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Conditions of different kinds are ANDed; several of one kind are ORed (SPEC §2)."""

    paths: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    path_regexes: tuple[re.Pattern[str], ...] = ()
    hosts: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.paths
            or self.path_prefixes
            or self.path_regexes
            or self.hosts
            or self.methods
            or self.headers
            or self.query_params
        )


@dataclass(frozen=True, slots=True)
class HeaderOp:
    """One header mutation, applied in list order."""

    op: str  # "set" | "add" | "remove"
    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    request_headers: tuple[HeaderOp, ...] = ()
    response_headers: tuple[HeaderOp, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3  # including the first attempt


@dataclass(frozen=True, slots=True)
class RouteTracing:
    """Per-route override of the global sampling (SPEC §6.3). `enabled=False` is `tracing #false`."""

    enabled: bool = True
    sampling_rate: float | None = None


@dataclass(frozen=True, slots=True)
class RouteAgent:
    """An agent called for a route, with the failure mode resolved from route, filter and agent."""

    agent_id: str
    failure_mode: FailureMode | None = None  # None: the agent's own
    timeout_ms: int | None = None  # None: the agent's own
    filter_id: str | None = None


@dataclass(frozen=True, slots=True)
class RouteConfig:
    id: str
    priority: int = 50
    matches: RouteMatch = field(default_factory=RouteMatch)
    upstream: str | None = None
    service_type: ServiceType = ServiceType.WEB
    builtin_handler: BuiltinHandler | None = None
    agents: tuple[RouteAgent, ...] = ()
    filters: tuple[str, ...] = ()
    tracing: RouteTracing | None = None
    policies: HeaderPolicy = field(default_factory=HeaderPolicy)
    failure_mode: FailureMode | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    timeout_secs: float | None = None
    order: int = 0  # position in the config file, the last tie-breaker


@dataclass(frozen=True, slots=True)
class TargetConfig:
    address: SocketAddress
    weight: int = 1


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    type: HealthCheckType = HealthCheckType.TCP
    path: str = "/health"
    expected_status: int = 200
    host: str | None = None
    interval_secs: float = 10
    timeout_secs: float = 5
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class ConnectionPoolConfig:
    max_idle: int = 32
    idle_timeout_secs: float = 60


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    connect_secs: float = 10
    read_secs: float = 60
    write_secs: float = 30


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    id: str
    targets: tuple[TargetConfig, ...]
    load_balancing: LoadBalancing = LoadBalancing.ROUND_ROBIN
    hash_key: str = "client-ip"  # consistent_hash: "client-ip" or "header:NAME"
    health_check: HealthCheckConfig | None = None
    connection_pool: ConnectionPoolConfig = field(default_factory=ConnectionPoolConfig)
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    failure_threshold: int = 5
    timeout_secs: float = 30


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    socket_path: str
    events: tuple[AgentEvent, ...] = (AgentEvent.REQUEST_HEADERS,)
    timeout_ms: int = 1000
    failure_mode: FailureMode = FailureMode.OPEN
    max_concurrent_calls: int = 100
    protocol_version: AgentProtocolVersion = AgentProtocolVersion.V2
    config: dict[str, Any] | None = None  # sent to the agent as the Configure event
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    type: str | None = None  # informational, from `agent "id" type="auth"`


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """Only `type "agent"` filters exist: they attach an agent to a route (Rust original's form)."""

    id: str
    agent: str
    timeout_ms: int | None = None
    failure_mode: FailureMode | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_header_size: int = 16384
    max_header_count: int = 100
    max_body_size: int = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EmbeddedViewerConfig:
    """`backend "embedded"`: the supervisor runs the built-in trace viewer (SPEC §9) next to the proxy."""

    ui: SocketAddress = field(default_factory=lambda: SocketAddress("127.0.0.1", 16686))
    db: str | None = None  # None: the viewer's default (XDG state directory)
    retention_hours: float = 24.0
    max_size_mb: float = 512.0


@dataclass(frozen=True, slots=True)
class TracingBackend:
    kind: TracingBackendKind
    endpoint: str
    protocol: OtlpProtocol = OtlpProtocol.GRPC
    headers: tuple[tuple[str, str], ...] = ()
    compression: str | None = None  # None or "gzip"
    timeout_ms: int = 10000
    viewer: EmbeddedViewerConfig | None = None  # set for backend "embedded" only


@dataclass(frozen=True, slots=True)
class TracingConfig:
    backend: TracingBackend
    enabled: bool = True
    sampling_rate: float = 1.0
    service_name: str | None = None  # None: OTEL_SERVICE_NAME, else "sentinel" (tracing/resource.py)
    propagation: tuple[Propagator, ...] = (Propagator.TRACECONTEXT,)
    traceresponse: bool = False
    record_query: bool = False
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 1000


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    enabled: bool = True
    format: AccessLogFormat = AccessLogFormat.JSON
    file: str | None = None  # None: stdout
    include_trace_id: bool = True
    sample_rate: float = 1.0
    sample_errors_always: bool = True


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.JSON
    file: str | None = None  # None: stdout
    access_log: AccessLogConfig | None = None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    address: SocketAddress = field(default_factory=lambda: SocketAddress("0.0.0.0", 9090))
    path: str = "/metrics"


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    tracing: TracingConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # file path, or "<default>" for the embedded config
    system: SystemConfig
    listeners: tuple[ListenerConfig, ...]
    routes: tuple[RouteConfig, ...]
    upstreams: Mapping[str, UpstreamConfig]  # read-only views: the whole tree is immutable
    agents: Mapping[str, AgentConfig]
    filters: Mapping[str, FilterConfig]
    limits: LimitsConfig
    observability: ObservabilityConfig
