"""Agents that fail: killed, restarted, missing, hung, broken on the wire, slow under load. None of it may
take the proxy down; each gets the agent's failure mode (SPEC §5)."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.conftest import Agents, AgentSpec, Setup, connected
from tests.support.client import RawClient, request
from tests.support.metrics import scrape, value
from tests.support.process import sentinel, wait_for
from tests.support.upstream import UpstreamServer

METRICS = 'observability {\n    metrics {\n        enabled #true\n        address "127.0.0.1:0"\n    }\n}\n'


def test_agent_killed_mid_request_then_restarted(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), failure_mode="closed")
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "crash"})
        assert resp.status == 503
        assert resp.json()["error"] == "agent a unavailable"
        assert upstream.requests == []
        assert proc.proc.poll() is None
        # While the agent is down, fail-closed answers 503 at once.
        assert request(proc.port, path="/anything").status == 503
        # A new agent process on the same socket: the proxy reconnects by itself.
        agents.start("a")
        connected(proc, "a", times=2)
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block"})
        assert resp.status == 403
        assert request(proc.port, path="/anything").status == 200


def test_missing_socket_at_start_is_not_fatal(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    specs = [
        AgentSpec("a", agents.socket("a"), failure_mode="open"),
        AgentSpec("b", agents.socket("b"), failure_mode="open"),
    ]
    with sentinel(tmp_path, Setup(upstream.address, specs, ["a", "b"]).kdl()) as proc:
        wait_for(lambda: proc.saw("agent a unavailable"), what="the warning about agent a")
        assert request(proc.port, path="/anything").status == 200  # fail-open without the agents
        agents.start("a")
        connected(proc, "a")
        assert request(proc.port, path="/anything", headers={"x-agent-a": "block"}).status == 403


def test_circuit_breaker_opens_and_a_probe_closes_it(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    spec = AgentSpec(
        "a",
        agents.socket("a"),
        failure_mode="closed",
        extra="        circuit-breaker {\n            failure-threshold 3\n            timeout-secs 0.5\n        }\n",
    )
    setup = Setup(upstream.address, [spec], ["a"], extra=METRICS)
    with sentinel(tmp_path, setup.kdl()) as proc:
        wait_for(lambda: proc.saw("agent a unavailable"), what="the warning about agent a")
        for _ in range(3):
            assert request(proc.port, path="/anything").status == 503
        wait_for(lambda: proc.saw("circuit breaker open"), what="the breaker to open")
        assert request(proc.port, path="/anything").status == 503
        text = scrape(proc.metrics_port).body.decode()
        assert value(text, "sentinel_agent_errors_total", agent="a", event="request_headers", reason="unavailable") == 3
        assert (
            value(text, "sentinel_agent_errors_total", agent="a", event="request_headers", reason="circuit_open") >= 1
        )
        agents.start("a")
        connected(proc, "a")
        # Once the open period is over, one probe goes through; its success closes the breaker.
        wait_for(lambda: request(proc.port, path="/anything").status == 200, what="the probe to succeed")
        assert request(proc.port, path="/anything", headers={"x-agent-a": "block"}).status == 403


def test_client_going_away_cancels_the_call(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), timeout_ms=60_000)
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        with RawClient(proc.port) as client:
            client.send(b"GET /anything HTTP/1.1\r\nHost: t\r\nx-agent-a: sleep:60000\r\n\r\n")
            wait_for(lambda: bool(agents.events("a", "request_headers")), what="the agent to get the call")
            # Gone for good: a reset (a FIN alone could be a half-close, whose response is still due).
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wait_for(lambda: bool(agents.events("a", "cancelled")), what="the agent to be told to cancel")
        (call,) = agents.events("a", "request_headers")
        assert agents.events("a", "cancelled")[0]["correlation_id"] == call["correlation_id"]
        assert upstream.requests == []
        assert request(proc.port, path="/anything").status == 200


def test_an_agent_error_is_a_failure_not_a_decision(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    agents.start("b")
    specs = [AgentSpec("a", agents.socket("a")), AgentSpec("b", agents.socket("b"), failure_mode="closed")]
    with sentinel(tmp_path, Setup(upstream.address, specs, ["a", "b"]).kdl()) as proc:
        connected(proc, "a")
        connected(proc, "b")
        assert request(proc.port, path="/anything", headers={"x-agent-a": "error"}).status == 200
        assert request(proc.port, path="/anything", headers={"x-agent-b": "error"}).status == 503
        # Only the call failed: the connection still works.
        assert request(proc.port, path="/anything", headers={"x-agent-b": "block"}).status == 403


def test_slow_agent_under_many_concurrent_requests(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), timeout_ms=20_000, max_concurrent=4)
    setup = Setup(upstream.address, [spec], ["a"], extra=METRICS)
    clients = 40
    with sentinel(tmp_path, setup.kdl()) as proc:
        connected(proc, "a")
        statuses: list[int] = []
        lock = threading.Lock()

        def one() -> None:
            status = request(proc.port, path="/anything", headers={"x-agent-a": "sleep:50"}).status
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [200] * clients
        text = scrape(proc.metrics_port).body.decode()
    assert value(text, "sentinel_agent_requests_total", agent="a", event="request_headers", decision="allow") == clients
    assert len(upstream.requests) == clients


def test_max_concurrent_calls_queues_the_rest(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), timeout_ms=60_000, max_concurrent=2)
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        held = [RawClient(proc.port) for _ in range(3)]
        try:
            for client in held:
                client.send(b"GET /anything HTTP/1.1\r\nHost: t\r\nx-agent-a: sleep:60000\r\n\r\n")
            wait_for(lambda: len(agents.events("a", "request_headers")) >= 2, what="two calls at the agent")
            # The third waits in the proxy (frames of one loop iteration go out in one write, so an
            # unlimited proxy would have delivered all three together).
            assert len(agents.events("a", "request_headers")) == 2
            # One client goes away: its call is cancelled, which frees a slot for the third.
            first = held.pop(0)
            first.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            first.close()
            wait_for(lambda: len(agents.events("a", "request_headers")) == 3, what="the queued call to go out")
        finally:
            for client in held:  # reset, so that the proxy's drain does not wait for their answers
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()


def test_idle_connection_is_pinged(tmp_path: Path, upstream: UpstreamServer, agents: Agents) -> None:
    agent = RawAgent(agents.socket("raw"), "record")
    try:
        with sentinel(tmp_path, Setup(upstream.address, [AgentSpec("raw", agents.socket("raw"))], ["raw"]).kdl()):
            wait_for(lambda: any(kind == 0x41 for kind, _ in agent.frames), timeout=20, what="a Ping")
            ping = next(json.loads(p) for kind, p in agent.frames if kind == 0x41)
            assert set(ping) == {"sequence", "timestamp_ms"}
    finally:
        agent.close()


class RawAgent:
    """An agent speaking raw frames: a correct handshake, then `mode` for every event:
    garbage (unknown type), oversized (a 32 MiB length), zero (length 0), badjson, nodecision, or
    record (keep the frames, answer pings, nothing else)."""

    def __init__(self, path: str, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.frames: list[tuple[int, bytes]] = []  # every frame after the handshake
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _frame(sock: socket.socket) -> tuple[int, bytes] | None:
        header = b""
        while len(header) < 5:
            data = sock.recv(5 - len(header))
            if not data:
                return None
            header += data
        length, kind = struct.unpack(">IB", header)
        payload = b""
        while len(payload) < length - 1:
            data = sock.recv(length - 1 - len(payload))
            if not data:
                return None
            payload += data
        return kind, payload

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            if self._frame(sock) is None:
                return
            hello = {
                "protocol_version": 2,
                "capabilities": {"agent_id": "raw", "name": "raw", "version": "0", "supported_events": [1]},
                "success": True,
                "error": None,
            }
            body = json.dumps(hello).encode()
            sock.sendall(struct.pack(">IB", len(body) + 1, 0x02) + body)
            while (frame := self._frame(sock)) is not None:
                self.frames.append(frame)
                if self.mode == "record":
                    if frame[0] == 0x41:
                        sock.sendall(struct.pack(">IB", len(frame[1]) + 1, 0x42) + frame[1])
                    continue
                cid = json.loads(frame[1])["correlation_id"]
                if self.mode == "garbage":
                    sock.sendall(b"\x00\x00\x00\x05\x99abcd")
                elif self.mode == "oversized":
                    sock.sendall(struct.pack(">IB", 32 * 1024 * 1024, 0x20) + b"{")
                elif self.mode == "zero":
                    sock.sendall(b"\x00\x00\x00\x00\x20")
                elif self.mode == "badjson":
                    sock.sendall(struct.pack(">IB", 10, 0x20) + b"{not json")
                elif self.mode == "nodecision":
                    answer = json.dumps({"version": 2, "audit": {"custom": {"correlation_id": cid}}}).encode()
                    sock.sendall(struct.pack(">IB", len(answer) + 1, 0x20) + answer)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def raw_agent(agents: Agents, request: pytest.FixtureRequest) -> Iterator[RawAgent]:
    agent = RawAgent(agents.socket("raw"), request.param)
    yield agent
    agent.close()


@pytest.mark.parametrize("raw_agent", ["garbage", "oversized", "zero", "badjson", "nodecision"], indirect=True)
def test_broken_frames_get_the_failure_mode(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents, raw_agent: RawAgent
) -> None:
    specs = [
        AgentSpec("raw", agents.socket("raw"), failure_mode="closed"),
    ]
    with sentinel(tmp_path, Setup(upstream.address, specs, ["raw"]).kdl()) as proc:
        connected(proc, "raw")
        resp = request(proc.port, path="/anything")
        assert resp.status == 503
        assert resp.json()["error"] == "agent raw unavailable"
        assert proc.proc.poll() is None
        if raw_agent.mode != "nodecision":
            wait_for(lambda: proc.saw("agent raw broke the protocol"), what="the protocol error in the log")
            # The connection was dropped; the proxy reconnects in the background.
            connected(proc, "raw", times=2)
        # And the proxy serves on (a route without the agent would be unaffected too).
        assert request(proc.port, path="/health").status == 200


def test_configure_is_sent_and_a_rejection_keeps_the_agent_out(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    agents.start("a")
    agents.start("b")
    specs = [
        AgentSpec("a", agents.socket("a"), extra="        config {\n            level 3\n        }\n"),
        AgentSpec(
            "b",
            agents.socket("b"),
            failure_mode="closed",
            extra="        config {\n            reject #true\n        }\n",
        ),
    ]
    with sentinel(tmp_path, Setup(upstream.address, specs, ["a", "b"]).kdl()) as proc:
        connected(proc, "a")
        (configure,) = agents.events("a", "configure")
        assert configure["config"] == {"level": 3}
        wait_for(lambda: proc.saw("agent b unavailable"), what="b's rejected configuration")
        assert "configuration rejected" in proc.log()
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block"})
        assert resp.status == 403  # a, configured, answers
        assert request(proc.port, path="/anything").status == 503  # b never accepted its config


def test_calls_queued_when_the_connection_dies_do_not_go_into_it(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    agent = agents.start("a")
    spec = AgentSpec("a", agents.socket("a"), failure_mode="closed", timeout_ms=20_000, max_concurrent=1)
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        with RawClient(proc.port) as first, RawClient(proc.port) as second:
            first.send(b"GET /anything HTTP/1.1\r\nHost: t\r\nx-agent-a: sleep:60000\r\n\r\n")
            wait_for(lambda: len(agents.events("a", "request_headers")) == 1, what="the first call")
            second.send(b"GET /anything HTTP/1.1\r\nHost: t\r\n\r\n")  # waits: max-concurrent-calls 1
            agent.kill()
            # Both fail as unavailable at once; the queued call did not wait 20 s in a dead connection.
            for client in (first, second):
                resp = client.read_response()
                assert resp.status == 503
                assert resp.json()["error"] == "agent a unavailable"


def test_v1_call_that_times_out_does_not_block_the_next(
    tmp_path: Path, upstream: UpstreamServer, agents: Agents
) -> None:
    agents.start("a", "--protocol", "v1")
    spec = AgentSpec("a", agents.socket("a"), protocol="v1", timeout_ms=300)
    with sentinel(tmp_path, Setup(upstream.address, [spec], ["a"]).kdl()) as proc:
        connected(proc, "a")
        assert request(proc.port, path="/anything", headers={"x-agent-a": "sleep:60000"}).status == 200  # fail-open
        # v1 is one call at a time: the stuck call's connection is replaced, and the next call is answered.
        connected(proc, "a", times=2)
        resp = request(proc.port, path="/anything", headers={"x-agent-a": "block"})
        assert resp.status == 403
