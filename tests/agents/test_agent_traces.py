"""Agent-call spans (SPEC §6.4) and the seed's Tempo config with the example agents: the agents' own spans,
exported by them with the OpenTelemetry SDK, are children of the proxy's agent-call spans."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tests.agents.conftest import Agents, AgentSpec, Setup, connected
from tests.conftest import EXAMPLES
from tests.support.agents import AgentProcess
from tests.support.client import request
from tests.support.otlp_receivers import GrpcReceiver
from tests.support.process import sentinel, wait_for
from tests.support.threaded import LoopThread
from tests.support.upstream import UpstreamServer

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = {"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"}


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = [x.string_value for x in v.array_value.values] if kind == "array_value" else getattr(v, kind)
    return out


def spans_of(loop: LoopThread, otlp: GrpcReceiver) -> list[Any]:
    return loop.call(lambda: list(otlp.spans))


def test_agent_call_spans_and_the_agents_own_spans(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents, otlp_receiver: tuple[LoopThread, GrpcReceiver]
) -> None:
    loop, otlp = otlp_receiver
    endpoint = f"http://127.0.0.1:{otlp.port}"
    agents.start("a", "--otlp-endpoint", endpoint)
    agents.start("b")
    specs = [AgentSpec("a", agents.socket("a")), AgentSpec("b", agents.socket("b"), timeout_ms=100)]
    tracing = (
        "observability {\n    tracing {\n"
        f'        backend "otlp" {{\n            endpoint "{endpoint}"\n        }}\n'
        "        sampling-rate 1.0\n        schedule-delay-ms 50\n    }\n}\n"
    )
    with sentinel(tmp_path, Setup(upstream.address, specs, ["a", "b"], extra=tracing).kdl()) as proc:
        connected(proc, "a")
        connected(proc, "b")
        resp = request(proc.port, path="/anything", headers={**CALLER, "x-agent-a": "tags", "x-agent-b": "sleep:2000"})
        assert resp.status == 200
        wait_for(
            lambda: (
                {"GET /*", "agent a request_headers", "agent b request_headers", "a.process"}
                <= {s.name for s in spans_of(loop, otlp)}
            ),
            timeout=20,
            what="the proxy's and the agent's spans",
        )
        (event,) = agents.events("a", "request_headers")
    spans = {s.name: s for s in spans_of(loop, otlp) if s.trace_id.hex() == CALLER_TRACE}
    server = spans["GET /*"]
    call_a, call_b = spans["agent a request_headers"], spans["agent b request_headers"]
    own = spans["a.process"]
    assert call_a.parent_span_id == server.span_id
    assert call_b.parent_span_id == server.span_id
    assert call_a.kind == call_b.kind == 3  # CLIENT
    # The traceparent the agent got names its call span, sampled; its own span is that span's child.
    assert event["metadata"]["traceparent"] == f"00-{CALLER_TRACE}-{call_a.span_id.hex()}-01"
    assert own.parent_span_id == call_a.span_id
    a = attributes(call_a)
    assert a["sentinel.agent.id"] == "a"
    assert a["sentinel.agent.event"] == "request_headers"
    assert a["sentinel.agent.decision"] == "allow"
    assert a["sentinel.agent.outcome"] == "ok"
    assert a["sentinel.agent.failure_mode"] == "open"
    assert a["sentinel.agent.tags"] == ["t-a"]
    assert a["sentinel.agent.rule_ids"] == ["r-1"]
    assert "error.type" not in a
    b = attributes(call_b)
    assert b["sentinel.agent.outcome"] == "timeout"
    assert b["error.type"] == "timeout"
    assert call_b.status.code == 2  # ERROR
    # The time spent in agents is visible in the trace: each call span lies within the server span.
    for call in (call_a, call_b):
        assert server.start_time_unix_nano <= call.start_time_unix_nano <= call.end_time_unix_nano
        assert call.end_time_unix_nano <= server.end_time_unix_nano


def seed_tempo_config(upstream: str, sockets: str, otlp_port: int) -> str:
    """examples/tempo/sentinel.kdl (the seed's Tempo config) with only its addresses moved to this test's."""
    text = (EXAMPLES / "tempo" / "sentinel.kdl").read_text()
    for old, new in (
        ('address "0.0.0.0:8080"', 'address "127.0.0.1:0"'),
        ('target "api-backend:3000"', f'target "{upstream}"'),
        ("/var/run/sentinel/", f"{sockets}/"),
        ('endpoint "http://tempo:4317"', f'endpoint "http://127.0.0.1:{otlp_port}"'),
        ('address "0.0.0.0:9090"', 'address "127.0.0.1:0"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_seed_tempo_config_with_the_example_agents(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents, otlp_receiver: tuple[LoopThread, GrpcReceiver]
) -> None:
    loop, otlp = otlp_receiver
    endpoint = f"http://127.0.0.1:{otlp.port}"
    sockets = agents.directory
    auth = AgentProcess(
        [
            str(EXAMPLES / "agents" / "auth.py"),
            "-s",
            f"{sockets}/auth.sock",
            "--token",
            "s3cret:alice",
            "--otlp-endpoint",
            endpoint,
        ],
        f"{sockets}/auth.sock",
    )
    ratelimit = AgentProcess(
        [
            str(EXAMPLES / "agents" / "ratelimit.py"),
            "-s",
            f"{sockets}/ratelimit.sock",
            "--rate",
            "0.5",
            "--burst",
            "4",
            "--otlp-endpoint",
            endpoint,
        ],
        f"{sockets}/ratelimit.sock",
    )
    workers = os.cpu_count() or 1
    with auth, ratelimit, sentinel(tmp_path, seed_tempo_config(upstream.address, sockets, otlp.port)) as proc:
        connected(proc, "auth", times=workers)
        connected(proc, "ratelimit", times=workers)
        denied = request(proc.port, path="/api/users")
        assert denied.status == 401
        assert denied.header("www-authenticate") == 'Bearer realm="sentinel"'
        token = {"Authorization": "Bearer s3cret"}
        allowed = request(proc.port, path="/api/users", headers={**token, **CALLER})
        assert allowed.status == 200
        assert upstream.requests[-1].header("x-auth-subject") == "alice"
        assert allowed.header("x-ratelimit-remaining") is not None
        statuses = [request(proc.port, path="/api/users", headers=token) for _ in range(8)]
        limited = next(r for r in statuses if r.status == 429)
        assert re.fullmatch(r"[1-9][0-9]*", limited.header("retry-after") or "")
        # The sampled request's trace: the server span, both agent calls, and each agent's own span below.
        names = {"agent auth request_headers", "agent ratelimit request_headers", "auth.verify", "ratelimit.check"}
        wait_for(
            lambda: names <= {s.name for s in spans_of(loop, otlp) if s.trace_id.hex() == CALLER_TRACE},
            timeout=30,
            what="the trace of the sampled request",
        )
    spans = {s.name: s for s in spans_of(loop, otlp) if s.trace_id.hex() == CALLER_TRACE}
    server = spans["GET /api/*"]
    for agent, own in (("auth", "auth.verify"), ("ratelimit", "ratelimit.check")):
        call = spans[f"agent {agent} request_headers"]
        assert call.parent_span_id == server.span_id
        assert spans[own].parent_span_id == call.span_id
