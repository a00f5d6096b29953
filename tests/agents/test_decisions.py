"""Agents on a route, end to end: a real proxy, real agent processes (the SDK's scripted agent), a real
upstream (SPEC §5). What the client gets, what the upstream gets, what the agent was sent."""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

from tests.agents.conftest import Agents, AgentSpec, Setup, connected
from tests.support.client import RawClient, request
from tests.support.metrics import scrape, value
from tests.support.process import sentinel, wait_for
from tests.support.upstream import UpstreamServer

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def one_agent(upstream: UpstreamServer, agents: Agents, **spec: object) -> Setup:
    agents.start("a")
    return Setup(upstream.address, [AgentSpec("a", agents.socket("a"), **spec)], ["a"])  # type: ignore[arg-type]


def test_allow_and_what_the_agent_is_sent(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    setup = one_agent(upstream, agents)
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/anything?x=1", headers={"Host": "shop.test:8080", "X-Multi": "1"})
        assert resp.status == 200
        assert len(upstream.requests) == 1
        (event,) = agents.events("a", "request_headers")
    meta = event["metadata"]
    assert meta["correlation_id"] == resp.header("x-correlation-id") == event["correlation_id"]
    assert meta["client_ip"] == "127.0.0.1"  # the bare address, no port
    assert isinstance(meta["client_port"], int)
    assert meta["client_port"] > 0
    assert meta["server_name"] == "shop.test:8080"
    assert meta["protocol"] == "HTTP/1.1"
    assert meta["route_id"] == "api"
    assert meta["upstream_id"] == "backend"
    assert RFC3339.match(meta["timestamp"])
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["request_id"])
    assert "traceparent" not in meta  # tracing is not configured
    assert event["method"] == "GET"
    assert event["uri"] == "/anything?x=1"
    assert event["headers"]["x-multi"] == ["1"]
    assert event["headers"]["host"] == ["shop.test:8080"]


def test_block_gives_the_client_exactly_the_agents_answer(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    setup = one_agent(upstream, agents)
    setup.extra = 'observability {\n    metrics {\n        enabled #true\n        address "127.0.0.1:0"\n    }\n}\n'
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block"})
        assert resp.status == 403
        assert resp.body == b"blocked by a"
        assert resp.header("x-blocked-by") == "a"
        assert resp.header("content-length") == str(len(b"blocked by a"))
        assert resp.header("content-type") is None  # the agent gave none: none is invented
        assert resp.header("x-correlation-id")
        assert upstream.requests == []
        # The connection stays usable after a block: keep-alive, next request allowed.
        text = scrape(proc.metrics_port).body.decode()
    assert value(text, "sentinel_agent_requests_total", agent="a", event="request_headers", decision="block") == 1
    assert value(text, "sentinel_blocked_requests_total", reason="agent_blocked") == 1
    assert value(text, "sentinel_requests_total", route="api", method="GET", status="403") == 1
    assert value(text, "sentinel_agent_latency_seconds_count", agent="a", event="request_headers") == 1


def test_redirect_and_challenge(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    setup = one_agent(upstream, agents)
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "redirect"})
        assert resp.status == 302
        assert resp.header("location") == "https://login.example.com/?from=a"
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "challenge"})
        assert resp.status == 403
        assert resp.header("x-challenge-type") == "captcha"
        assert resp.header("x-challenge-site-key") == "k-a"
    assert upstream.requests == []


def test_header_mutations_both_ways(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), events=("request_headers", "response_headers"))
    setup = Setup(upstream.address, [spec], ["a"])
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        resp = request(
            proc.port,
            path="/secret",
            headers={"x-agent-a": "headers", "x-agent-a-response": "headers", "X-Remove-Me": "1"},
        )
        assert resp.status == 200
        seen = upstream.requests[0]
        assert seen.header("x-from-a") == "1"
        assert seen.header("x-added") == "a"
        assert seen.header("x-remove-me") is None
        # From the request_headers answer's response ops, and from the response_headers answer.
        assert resp.header("x-resp-a") == "1"
        assert resp.header("x-upstream-secret") is None
        assert resp.header("x-resp-hdr-a") == "1"
        assert resp.body == b"the secret is 42"
        (event,) = agents.events("a", "response_headers")
        assert event["status"] == 200
        assert event["headers"]["x-upstream-secret"] == ["s3cr3t"]


def test_response_headers_block_replaces_the_upstream_response(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), events=("request_headers", "response_headers"))
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/chunked", headers={"x-agent-a-response": "block"})
        assert resp.status == 502
        assert resp.body == b"response blocked"
        assert resp.header("x-upstream") is None
        # The proxy is fine afterwards.
        assert request(proc.port, path="/chunked").body == b"onetwothree"


def test_request_and_response_bodies(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), events=("request_body", "response_body"))
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, method="POST", path="/anything", body=b"this is forbidden")
        assert resp.status == 403
        assert resp.body == b"body rejected"
        assert upstream.requests == []
        resp = request(proc.port, method="POST", path="/anything", body=b"x" * 300_000)
        assert resp.status == 200
        assert resp.json()["body_length"] == 300_000
        resp = request(proc.port, path="/secret")
        assert resp.status == 451
        assert resp.body == b"response body rejected"
        resp = request(proc.port, path="/chunked")
        assert resp.status == 200
        assert resp.body == b"onetwothree"
        bodies = agents.events("a", "request_body_chunk")
        assert [b["total_size"] for b in bodies] == [len(b"this is forbidden"), 300_000]
        assert all(b["is_last"] and b["chunk_index"] == 0 for b in bodies)
        # A body over the inspection limit (1 MiB) streams through uninspected.
        resp = request(proc.port, method="POST", path="/count", body=b"y" * (3 * 1024 * 1024))
        assert resp.status == 200
        assert resp.body == str(3 * 1024 * 1024).encode()
        assert len(agents.events("a", "request_body_chunk")) == 2


def test_two_agents_run_concurrently_and_the_first_non_allow_wins(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    agents.start("a")
    agents.start("b")
    specs = [AgentSpec("a", agents.socket("a"), timeout_ms=20_000), AgentSpec("b", agents.socket("b"))]
    specs[1].timeout_ms = 20_000
    with sentinel(tmp_path, Setup(upstream.address, specs, ["a", "b"]).kdl()) as proc:
        connected(proc, "a")
        connected(proc, "b")
        # Both agents hold their call; both must have received it while neither has answered.
        with RawClient(proc.port) as held:
            held.send(b"GET /anything HTTP/1.1\r\nHost: t\r\nx-agent-a: sleep:60000\r\nx-agent-b: sleep:60000\r\n\r\n")
            wait_for(
                lambda: bool(agents.events("a", "request_headers") and agents.events("b", "request_headers")),
                what="both agents to receive the request at once",
            )
            assert upstream.requests == []
            held.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # gone: cancel
        # Route order decides: a's block although b also blocks; b's block when a allows.
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block", "x-agent-b": "block"})
        assert resp.header("x-blocked-by") == "a"
        resp = request(proc.port, path="/anything", headers={"x-agent-b": "block"})
        assert resp.header("x-blocked-by") == "b"
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "headers", "x-agent-b": "headers"})
        assert resp.status == 200
        assert upstream.requests[-1].header("x-added") == "a, b"  # both agents' ops, in route order
        assert resp.header("x-resp-a") == "1"
        assert resp.header("x-resp-b") == "1"


def test_timeouts_fail_open_and_fail_closed(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    agents.start("b")
    specs = [
        AgentSpec("a", agents.socket("a"), timeout_ms=100, failure_mode="open"),
        AgentSpec("b", agents.socket("b"), timeout_ms=100, failure_mode="closed"),
    ]
    setup = Setup(upstream.address, specs, ["a", "b"])
    setup.extra = 'observability {\n    metrics {\n        enabled #true\n        address "127.0.0.1:0"\n    }\n}\n'
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        connected(proc, "b")
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "sleep:3000"})
        assert resp.status == 200  # a timed out, but fails open
        resp = request(proc.port, path="/anything", headers={"x-agent-b": "sleep:3000"})
        assert resp.status == 504
        assert resp.json()["error"] == "agent b timed out"
        # The late answers are dropped; the connections carry on.
        assert request(proc.port, path="/anything").status == 200
        text = scrape(proc.metrics_port).body.decode()
    assert value(text, "sentinel_agent_timeouts_total", agent="a", event="request_headers") == 1
    assert value(text, "sentinel_agent_timeouts_total", agent="b", event="request_headers") == 1


def test_filters_form_with_its_own_failure_mode(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), timeout_ms=5000, failure_mode="open")
    setup = Setup(upstream.address, [spec], [], route_extra='        filters "guard"\n')
    setup.extra = (
        'filters {\n    filter "guard" {\n        type "agent"\n        agent "a"\n        timeout-ms 100\n'
        '        failure-mode "closed"\n    }\n}\n'
    )
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        assert request(proc.port, path="/anything", headers={"x-agent-a": "block"}).status == 403
        # The filter's timeout and failure mode apply, not the agent's.
        assert request(proc.port, path="/anything", headers={"x-agent-a": "sleep:3000"}).status == 504


def test_protocol_v1(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a", "--protocol", "v1")
    spec = AgentSpec("a", agents.socket("a"), protocol="v1", events=("request_headers", "log"))
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        assert request(proc.port, path="/anything").status == 200
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block"})
        assert resp.status == 403
        assert resp.body == b"blocked by a"
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "headers"})
        assert upstream.requests[-1].header("x-from-a") == "1"
        wait_for(lambda: len(agents.events("a", "request_complete")) == 3, what="the v1 log events")


def test_log_events_after_the_response(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), events=("log",))
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/status/404")
        assert resp.status == 404
        resp = request(proc.port, method="POST", path="/anything", body=b"12345")
        wait_for(lambda: len(agents.events("a", "request_complete")) == 2, what="the log events")
        first, second = agents.events("a", "request_complete")
        assert agents.events("a", "request_headers") == []  # subscribed to log only
    assert first["status"] == 404
    assert first["upstream_attempts"] == 1
    assert second["status"] == 200
    assert second["request_body_size"] == 5
    assert second["response_body_size"] == len(resp.body)
    assert second["correlation_id"] == resp.header("x-correlation-id")
    assert second["duration_ms"] > 0


def test_expect_continue_with_a_body_agent(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), events=("request_body",))
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        with RawClient(proc.port) as client:
            client.send(b"POST /anything HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            # The body agent needs the body before the upstream is contacted: the proxy asks for it.
            assert client.read_response().status == 100
            client.send(b"hello")
            resp = client.read_response()
        assert resp.status == 200
        assert resp.json()["body_length"] == 5
        (body,) = agents.events("a", "request_body_chunk")
        assert body["data"] == "aGVsbG8="
