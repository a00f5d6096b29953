"""Both configs of the user's document load unchanged, and every value is what it says (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import load_config_file
from sentinel.config.model import (
    AccessLogFormat,
    AgentEvent,
    AgentProtocolVersion,
    BuiltinHandler,
    FailureMode,
    HealthCheckType,
    ListenerProtocol,
    LoadBalancing,
    LogFormat,
    LogLevel,
    OtlpProtocol,
    ServiceType,
    SocketAddress,
    TraceIdFormat,
    TracingBackendKind,
)
from tests.conftest import EXAMPLES, REPO

SEED = REPO.parent / "shared" / "seed" / "distributed-tracing.txt"
JAEGER = EXAMPLES / "jaeger" / "sentinel.kdl"
TEMPO = EXAMPLES / "tempo" / "sentinel.kdl"


def _seed_block(start_marker: str, first_line: str) -> str:
    """The config as it stands in the user's document, from `first_line` to the closing brace of observability."""
    text = SEED.read_text()
    after = text[text.index(start_marker) :]
    begin = after.index(first_line)
    end = after.index("\n}\n", after.index("observability {", begin)) + 3
    return after[begin:end]


@pytest.mark.skipif(not SEED.exists(), reason="the shared seed document is not beside the checkout")
@pytest.mark.parametrize(
    ("example", "marker", "first"),
    [
        (JAEGER, "Create sentinel.kdl:", "// Distributed Tracing Configuration"),
        (TEMPO, "sentinel.kdl (for Tempo)", "system {"),
    ],
)
def test_examples_are_the_seed_configs_unchanged(example: Path, marker: str, first: str) -> None:
    assert example.read_text() == _seed_block(marker, first)


def test_jaeger_seed_config_field_by_field() -> None:
    c = load_config_file(JAEGER)
    assert c.source == str(JAEGER)
    assert c.system.worker_threads == 0
    assert c.system.trace_id_format is TraceIdFormat.TINYFLAKE
    assert c.system.graceful_shutdown_timeout_secs == 30
    assert c.system.max_connections == 10000
    assert c.system.pid_file is None

    (listener,) = c.listeners
    assert listener.id == "http"
    assert listener.address == SocketAddress("0.0.0.0", 8080)
    assert listener.protocol is ListenerProtocol.HTTP
    assert listener.request_timeout_secs == 60
    assert listener.keepalive_timeout_secs == 75
    assert listener.default_route is None
    assert listener.tls is None

    api, health = c.routes
    assert api.id == "api"
    assert api.priority == 100
    assert api.matches.path_prefixes == ("/api/",)
    assert api.matches.paths == ()
    assert api.upstream == "api-backend"
    assert api.service_type is ServiceType.WEB
    assert api.builtin_handler is None
    assert api.agents == ()
    assert api.tracing is None
    assert api.retry.max_attempts == 3
    assert api.order == 0

    assert health.id == "health"
    assert health.priority == 1000
    assert health.matches.paths == ("/health",)
    assert health.service_type is ServiceType.BUILTIN
    assert health.builtin_handler is BuiltinHandler.HEALTH
    assert health.upstream is None
    assert health.order == 1

    upstream = c.upstreams["api-backend"]
    assert [(str(t.address), t.weight) for t in upstream.targets] == [("127.0.0.1:3000", 1)]
    assert upstream.load_balancing is LoadBalancing.ROUND_ROBIN
    assert upstream.health_check is None
    assert upstream.connection_pool.max_idle == 32
    assert upstream.connection_pool.idle_timeout_secs == 60
    assert upstream.timeouts.connect_secs == 10
    assert upstream.timeouts.read_secs == 60
    assert upstream.timeouts.write_secs == 30
    assert dict(c.agents) == {}
    assert dict(c.filters) == {}

    tracing = c.observability.tracing
    assert tracing is not None
    assert tracing.backend.kind is TracingBackendKind.OTLP
    assert tracing.backend.endpoint == "http://localhost:4317"
    assert tracing.backend.protocol is OtlpProtocol.GRPC
    assert tracing.backend.compression is None
    assert tracing.backend.headers == ()
    assert tracing.sampling_rate == 1.0
    assert tracing.service_name == "sentinel"
    assert tracing.enabled is True

    logging = c.observability.logging
    assert logging.level is LogLevel.INFO
    assert logging.format is LogFormat.JSON
    assert logging.file is None
    access = logging.access_log
    assert access is not None
    assert access.enabled is True
    assert access.include_trace_id is True
    assert access.format is AccessLogFormat.JSON
    assert access.file is None
    assert access.sample_rate == 1.0
    assert access.sample_errors_always is True

    metrics = c.observability.metrics
    assert metrics is not None
    assert metrics.enabled is True
    assert metrics.address == SocketAddress("0.0.0.0", 9090)
    assert metrics.path == "/metrics"

    assert c.limits.max_header_size == 16384
    assert c.limits.max_header_count == 100
    assert c.limits.max_body_size == 10485760


def test_tempo_seed_config_field_by_field() -> None:
    c = load_config_file(TEMPO)
    assert c.system.worker_threads == 0
    assert c.system.trace_id_format is TraceIdFormat.TINYFLAKE
    (listener,) = c.listeners
    assert listener.address == SocketAddress("0.0.0.0", 8080)

    api, health = c.routes
    assert api.priority == 100
    assert api.matches.path_prefixes == ("/api/",)
    assert api.upstream == "api-backend"
    assert [a.agent_id for a in api.agents] == ["auth", "ratelimit"]
    assert all(a.failure_mode is None and a.timeout_ms is None for a in api.agents)
    assert health.builtin_handler is BuiltinHandler.HEALTH
    assert health.priority == 1000

    upstream = c.upstreams["api-backend"]
    assert [(str(t.address), t.weight) for t in upstream.targets] == [("api-backend:3000", 1)]
    check = upstream.health_check
    assert check is not None
    assert check.type is HealthCheckType.HTTP
    assert check.path == "/health"
    assert check.expected_status == 200
    assert check.interval_secs == 10
    assert check.timeout_secs == 5
    assert check.healthy_threshold == 2
    assert check.unhealthy_threshold == 3

    auth = c.agents["auth"]
    assert auth.socket_path == "/var/run/sentinel/auth.sock"
    assert auth.events == (AgentEvent.REQUEST_HEADERS,)
    assert auth.timeout_ms == 50
    assert auth.failure_mode is FailureMode.OPEN
    assert auth.max_concurrent_calls == 100
    assert auth.protocol_version is AgentProtocolVersion.V2
    assert auth.config is None
    ratelimit = c.agents["ratelimit"]
    assert ratelimit.socket_path == "/var/run/sentinel/ratelimit.sock"
    assert ratelimit.events == (AgentEvent.REQUEST_HEADERS,)
    assert ratelimit.timeout_ms == 20

    tracing = c.observability.tracing
    assert tracing is not None
    assert tracing.backend.endpoint == "http://tempo:4317"
    assert tracing.backend.protocol is OtlpProtocol.GRPC
    assert tracing.sampling_rate == 0.1
    assert tracing.service_name == "sentinel"
    assert c.observability.logging.access_log is not None
    assert c.observability.metrics is not None
