"""Loader behaviour beyond single errors: all problems at once, syntax errors, files, defaults, aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import ConfigError, load_config_file, load_config_text, load_default_config
from sentinel.config.model import (
    AgentEvent,
    AgentProtocolVersion,
    BuiltinHandler,
    FailureMode,
    LoadBalancing,
    OtlpProtocol,
    Propagator,
    TraceIdFormat,
    TracingBackendKind,
)

LISTENERS = 'listeners {\n    listener "http" { address "127.0.0.1:8080"; }\n}\n'


def load(text: str) -> object:
    return load_config_text(text, "test.kdl")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.kdl")
    return [str(i) for i in info.value.issues]


def test_every_error_is_reported_not_just_the_first() -> None:
    found = errors(
        LISTENERS
        + 'system {\n    worker-threads "x"\n    trace-id-format "nope"\n}\n'
        + 'routes {\n    route "a" {\n        upstream "missing"\n    }\n}\n'
        + "limits {\n    max-header-count 0\n}\n"
    )
    assert len(found) == 4
    assert found[0].startswith("test.kdl:5:5: system > worker-threads:")
    assert found[1].startswith("test.kdl:6:5: system > trace-id-format:")
    assert any("test.kdl:14:" in f and "max-header-count" in f for f in found)
    assert any("test.kdl:9:" in f and 'upstream "missing"' in f for f in found)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('listeners {\n    listener "http" {\n        address "0.0.0.0:80\n    }\n}\n', 3),
        (
            'listeners {\n    listener "http" {\n        address "0.0.0.0:80"\n    }\n',
            1,
        ),  # the brace never closed
        (LISTENERS + "system {\n    daemon true\n}\n", 5),
        (LISTENERS + 'routes {\n    route "api" {\n        agents ["auth" "ratelimit"]\n    }\n}\n', 6),
        (LISTENERS + "}\n", 4),
    ],
    ids=["unclosed string", "unclosed brace", "v1 bare true", "bracket array", "stray brace"],
)
def test_kdl_syntax_error_shows_its_line(text: str, line: int) -> None:
    found = errors(text)
    assert len(found) == 1
    assert found[0].startswith(f"test.kdl:{line}:"), found[0]
    assert "KDL syntax error" in found[0]


def test_bracket_arrays_get_a_hint() -> None:
    (message,) = errors(LISTENERS + 'routes {\n    route "api" {\n        agents ["auth"]\n    }\n}\n')
    assert 'agents "auth" "ratelimit"' in message


def test_missing_file_is_an_error_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope.kdl"
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: configuration file not found"
    assert not path.exists()


def test_directory_and_binary_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config_file(tmp_path)
    binary = tmp_path / "b.kdl"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(binary)


def test_embedded_default_config() -> None:
    c = load_default_config()
    assert c.source == "<default>"
    (listener,) = c.listeners
    assert str(listener.address) == "0.0.0.0:8080"
    handlers = {r.id: (r.builtin_handler, r.matches.paths) for r in c.routes}
    assert handlers["status"] == (BuiltinHandler.STATUS, ("/",))
    assert handlers["health"][0] is BuiltinHandler.HEALTH
    assert "/health" in handlers["health"][1]
    assert c.observability.metrics is not None
    assert str(c.observability.metrics.address) == "0.0.0.0:9090"


def test_aliases_and_alternative_spellings() -> None:
    c = load_config_text(
        'server {\n    trace-id-format "UUID"\n}\n'
        + LISTENERS
        + 'routes {\n    route "r" {\n        priority "critical"\n        upstream "u"\n'
        + '        filters "f"\n        policies { failure-mode "fail_closed"; }\n    }\n}\n'
        + 'upstreams {\n    upstream "u" {\n        targets {\n'
        + '            target { address "10.0.0.1:80"; weight 3; }\n'
        + '            target address="10.0.0.2:80" weight=2\n        }\n        target "[::1]:8080"\n'
        + '        load-balancing "least-connections"\n'
        + "        connection-pool { idle-timeout 5; }\n        timeouts { connect 1; read 2; write 3; }\n    }\n}\n"
        + 'agents {\n    agent "a" type="auth" {\n        unix-socket "/tmp/a.sock"\n'
        + '        events "request-headers" "request_complete"\n        protocol-version "v1"\n'
        + "        circuit-breaker { timeout-seconds 5; }\n    }\n}\n"
        + 'filters {\n    filter "f" {\n        type "agent"\n        agent "a"\n        timeout-ms 70\n    }\n}\n'
        + "limits {\n    max-header-size-bytes 4096\n    max-body-size-bytes 1024\n}\n",
        "alias.kdl",
    )
    assert c.system.trace_id_format is TraceIdFormat.UUID
    (route,) = c.routes
    assert route.priority == 1000
    assert route.failure_mode is FailureMode.CLOSED
    (agent,) = route.agents
    assert (agent.agent_id, agent.failure_mode, agent.timeout_ms, agent.filter_id) == (
        "a",
        FailureMode.CLOSED,
        70,
        "f",
    )
    u = c.upstreams["u"]
    assert [(str(t.address), t.weight) for t in u.targets] == [
        ("[::1]:8080", 1),
        ("10.0.0.1:80", 3),
        ("10.0.0.2:80", 2),
    ]
    assert u.load_balancing is LoadBalancing.LEAST_CONNECTIONS
    assert u.connection_pool.idle_timeout_secs == 5
    assert (u.timeouts.connect_secs, u.timeouts.read_secs, u.timeouts.write_secs) == (1, 2, 3)
    a = c.agents["a"]
    assert a.type == "auth"
    assert a.socket_path == "/tmp/a.sock"
    assert a.events == (AgentEvent.REQUEST_HEADERS, AgentEvent.LOG)
    assert a.protocol_version is AgentProtocolVersion.V1
    assert a.circuit_breaker.timeout_secs == 5
    assert (c.limits.max_header_size, c.limits.max_body_size) == (4096, 1024)


def test_route_agents_and_filters_combine_in_order() -> None:
    c = load_config_text(
        LISTENERS
        + 'routes {\n    route "r" {\n        upstream "u"\n        agents "a" "b"\n        filters "fc"\n'
        + '        failure-mode "closed"\n    }\n}\n'
        + 'upstreams {\n    upstream "u" { target "127.0.0.1:1"; }\n}\n'
        + 'agents {\n    agent "a" { unix-socket path="/a"; }\n    agent "b" { unix-socket path="/b"; }\n'
        + '    agent "c" { unix-socket path="/c"; failure-mode "closed"; }\n}\n'
        + 'filters {\n    filter "fc" { type "agent"; agent "c"; failure-mode "open"; }\n}\n',
        "t.kdl",
    )
    agents = c.routes[0].agents
    assert [(a.agent_id, a.failure_mode) for a in agents] == [
        ("a", FailureMode.CLOSED),
        ("b", FailureMode.CLOSED),
        ("c", FailureMode.OPEN),
    ]


def test_agent_config_block_becomes_json() -> None:
    c = load_config_text(
        LISTENERS
        + 'agents {\n    agent "a" {\n        unix-socket path="/a"\n        config {\n'
        + '            tokens "t1" "t2"\n            realm "api"\n            strict\n'
        + "            bucket rate=10 { burst 20; }\n            limit 5\n        }\n    }\n}\n",
        "t.kdl",
    )
    assert c.agents["a"].config == {
        "tokens": ["t1", "t2"],
        "realm": "api",
        "strict": True,
        "bucket": {"rate": 10, "burst": 20},
        "limit": 5,
    }


def test_tracing_options() -> None:
    c = load_config_text(
        LISTENERS
        + 'observability {\n    tracing {\n        backend "otlp" {\n            endpoint "https://otel.example.com:4318"\n'
        + '            headers {\n                "Authorization" "Bearer x"\n            }\n'
        + '            compression "gzip"\n            timeout-ms 500\n        }\n'
        + '        propagation "tracecontext" "b3" "jaeger"\n        response-headers { traceresponse #true; }\n'
        + "        record-query #true\n        sampling-rate 0\n    }\n}\n",
        "t.kdl",
    )
    t = c.observability.tracing
    assert t is not None
    assert t.backend.protocol is OtlpProtocol.HTTP_PROTOBUF  # inferred from port 4318
    assert t.backend.headers == (("authorization", "Bearer x"),)
    assert t.backend.compression == "gzip"
    assert t.backend.timeout_ms == 500
    assert t.propagation == (Propagator.TRACECONTEXT, Propagator.B3, Propagator.JAEGER)
    assert t.traceresponse is True
    assert t.record_query is True
    assert t.sampling_rate == 0.0


@pytest.mark.parametrize(
    ("backend", "kind", "endpoint", "protocol"),
    [
        ('backend "otlp"', TracingBackendKind.OTLP, "http://localhost:4317", OtlpProtocol.GRPC),
        (
            'backend "otlp" { protocol "http/protobuf"; }',
            TracingBackendKind.OTLP,
            "http://localhost:4318",
            OtlpProtocol.HTTP_PROTOBUF,
        ),
        ('backend "jaeger"', TracingBackendKind.JAEGER, "http://localhost:4317", OtlpProtocol.GRPC),
        ('backend "embedded"', TracingBackendKind.EMBEDDED, "http://127.0.0.1:4317", OtlpProtocol.GRPC),
        (
            'backend "otlp" { endpoint "http://c:4317/"; protocol "grpc"; }',
            TracingBackendKind.OTLP,
            "http://c:4317/",
            OtlpProtocol.GRPC,
        ),
    ],
)
def test_backend_defaults(backend: str, kind: TracingBackendKind, endpoint: str, protocol: OtlpProtocol) -> None:
    c = load_config_text(LISTENERS + f"observability {{\n    tracing {{\n        {backend}\n    }}\n}}\n", "t.kdl")
    t = c.observability.tracing
    assert t is not None
    assert (t.backend.kind, t.backend.endpoint, t.backend.protocol) == (kind, endpoint, protocol)


def test_route_tracing_overrides() -> None:
    c = load_config_text(
        LISTENERS
        + 'routes {\n    route "a" { builtin-handler "health"; tracing #false; }\n'
        + '    route "b" { builtin-handler "status"; tracing { sampling-rate 0.25; } }\n'
        + '    route "c" { builtin-handler "status"; }\n}\n',
        "t.kdl",
    )
    a, b, cc = c.routes
    assert a.tracing is not None
    assert a.tracing.enabled is False
    assert b.tracing is not None
    assert b.tracing.enabled is True
    assert b.tracing.sampling_rate == 0.25
    assert cc.tracing is None


def test_config_objects_are_immutable() -> None:
    c = load_default_config()
    with pytest.raises(AttributeError):
        c.system.worker_threads = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.upstreams["x"] = None  # type: ignore[index]


def test_zipkin_backend_is_accepted_with_its_default_endpoint() -> None:
    c = load_config_text(LISTENERS + 'observability {\n    tracing {\n        backend "zipkin"\n    }\n}\n', "t.kdl")
    t = c.observability.tracing
    assert t is not None
    assert t.backend.kind is TracingBackendKind.ZIPKIN
    assert t.backend.endpoint == "http://localhost:9411/api/v2/spans"


def test_zipkin_backend_takes_endpoint_headers_compression_and_timeout() -> None:
    c = load_config_text(
        LISTENERS
        + "observability {\n    tracing {\n"
        + '        backend "zipkin" {\n            endpoint "https://zipkin.example:9411/custom/spans"\n'
        + '            headers { authorization "Bearer z"; }\n            compression "gzip"\n'
        + "            timeout-ms 750\n        }\n    }\n}\n",
        "t.kdl",
    )
    t = c.observability.tracing
    assert t is not None
    assert t.backend.kind is TracingBackendKind.ZIPKIN
    assert t.backend.endpoint == "https://zipkin.example:9411/custom/spans"
    assert t.backend.headers == (("authorization", "Bearer z"),)
    assert t.backend.compression == "gzip"
    assert t.backend.timeout_ms == 750


def test_zipkin_backend_rejects_protocol_with_its_position() -> None:
    (message,) = errors(
        LISTENERS + 'observability {\n    tracing {\n        backend "zipkin" {\n            protocol "grpc"\n'
        "        }\n    }\n}\n"
    )
    assert message.startswith("test.kdl:7:13: observability > tracing > backend > protocol:")
    assert "zipkin always sends JSON over HTTP" in message
