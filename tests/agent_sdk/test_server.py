"""The SDK's agent server against a proxy-side client written from the wire format alone (wire_client.py).

Most tests talk to the scripted agent as a real subprocess; the ones that need a custom Agent run the
AgentServer in-process on a loop thread. Unix sockets live under a short /tmp directory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_agent_sdk import (
    Agent,
    AgentServer,
    Decision,
    RequestBody,
    RequestComplete,
    RequestHeaders,
    ResponseHeaders,
)
from tests.agent_sdk import wire_client as wire
from tests.agent_sdk.wire_client import WireClient, WireClientV1
from tests.support.agents import AgentProcess, scripted_argv, socket_dir
from tests.support.process import wait_for
from tests.support.threaded import LoopThread


@pytest.fixture(scope="module")
def agent_path() -> Iterator[str]:
    """One scripted agent `a` (v2) shared by the module's tests; its socket path."""
    with socket_dir() as directory:
        path = os.path.join(directory, "a.sock")
        with AgentProcess(scripted_argv(path, "a"), path):
            yield path


@pytest.fixture
def client(agent_path: str) -> Iterator[WireClient]:
    with WireClient(agent_path) as c:
        c.handshake()
        yield c


def allow_response(correlation_id: str) -> dict[str, Any]:
    return {
        "version": 2,
        "decision": "allow",
        "request_headers": [],
        "response_headers": [],
        "routing_metadata": {},
        "audit": {
            "tags": [],
            "rule_ids": [],
            "confidence": None,
            "reason_codes": [],
            "custom": {"correlation_id": correlation_id},
        },
        "needs_more": False,
    }


def headers_call(client: WireClient, cid: str, action: str | None = None, **extra: list[str]) -> dict[str, Any]:
    headers = dict(extra)
    if action is not None:
        headers["x-agent-a"] = [action]
    return client.call(wire.REQUEST_HEADERS, wire.request_headers(cid, headers))


# -- handshake and calls ------------------------------------------------------------------------------


def test_handshake_announces_the_agent(agent_path: str) -> None:
    with WireClient(agent_path) as c:
        answer = c.handshake()
    assert answer == {
        "protocol_version": 2,
        "capabilities": {
            "agent_id": "a",
            "name": "a",
            "version": "0.0.1",
            "supported_events": [0, 1, 2, 3, 4, 5],  # the scripted agent overrides every handler
            "features": {
                "streaming_body": False,
                "websocket": False,
                "guardrails": False,
                "config_push": True,
                "metrics_export": False,
                "concurrent_requests": True,
                "cancellation": True,
                "flow_control": False,
                "health_reporting": False,
            },
            "limits": {"max_body_size": 16777216, "max_concurrency": 100, "preferred_chunk_size": 65536},
        },
        "success": True,
        "error": None,
        "encoding": "json",
    }


def test_handshake_without_version_2_is_refused(agent_path: str) -> None:
    with WireClient(agent_path) as c:
        answer = c.handshake(versions=[1])
        assert answer["success"] is False
        assert "version" in answer["error"]
        assert c.is_closed_by_peer()


def test_allow_echoes_the_correlation_id(client: WireClient) -> None:
    assert headers_call(client, "cid-allow") == allow_response("cid-allow")
    assert headers_call(client, "cid-allow-2", "allow") == allow_response("cid-allow-2")


@pytest.mark.parametrize(
    ("action", "decision", "request_ops", "response_ops", "tags", "rule_ids"),
    [
        ("block", {"block": {"status": 403, "body": "blocked by a", "headers": {"x-blocked-by": "a"}}}, [], [], [], []),
        ("redirect", {"redirect": {"url": "https://login.example.com/?from=a", "status": 302}}, [], [], [], []),
        ("challenge", {"challenge": {"challenge_type": "captcha", "params": {"site-key": "k-a"}}}, [], [], [], []),
        (
            "headers",
            "allow",
            [
                {"set": {"name": "x-from-a", "value": "1"}},
                {"add": {"name": "x-added", "value": "a"}},
                {"remove": {"name": "x-remove-me"}},
            ],
            [{"set": {"name": "x-resp-a", "value": "1"}}, {"remove": {"name": "x-upstream-secret"}}],
            [],
            [],
        ),
        ("tags", "allow", [], [], ["t-a"], ["r-1"]),
    ],
)
def test_decisions_have_the_rust_shape(
    client: WireClient,
    action: str,
    decision: Any,
    request_ops: list[Any],
    response_ops: list[Any],
    tags: list[str],
    rule_ids: list[str],
) -> None:
    expected = allow_response(f"cid-{action}")
    expected.update(decision=decision, request_headers=request_ops, response_headers=response_ops)
    expected["audit"].update(tags=tags, rule_ids=rule_ids)
    assert headers_call(client, f"cid-{action}", action) == expected


def test_calls_in_flight_are_answered_as_they_finish(client: WireClient) -> None:
    client.send(wire.REQUEST_HEADERS, wire.request_headers("slow", {"x-agent-a": ["sleep:200"]}))
    client.send(wire.REQUEST_HEADERS, wire.request_headers("fast", {}))
    first, second = client.read_response(), client.read_response()
    assert first["audit"]["custom"]["correlation_id"] == "fast"
    assert second["audit"]["custom"]["correlation_id"] == "slow"
    assert first["decision"] == second["decision"] == "allow"


def test_ping_is_echoed_as_pong_byte_for_byte(client: WireClient) -> None:
    payload = b'{"sequence": 7,  "timestamp_ms":1700000000000}'  # odd spacing: echoed, not re-encoded
    client.send(wire.PING, payload)
    assert client.read_frame() == (wire.PONG, payload)


def test_a_cancelled_call_is_not_answered(client: WireClient) -> None:
    # Unless cancelled, `short` (started first, 300 ms) would be answered before `long` (600 ms).
    client.send(wire.REQUEST_HEADERS, wire.request_headers("short", {"x-agent-a": ["sleep:300"]}))
    client.send(wire.CANCEL, {"correlation_id": "short", "reason": 1, "timestamp_ms": 1700000000000})
    client.send(wire.REQUEST_HEADERS, wire.request_headers("long", {"x-agent-a": ["sleep:600"]}))
    assert client.read_response()["audit"]["custom"]["correlation_id"] == "long"
    # The connection is still usable, and cancelling an unknown call is harmless.
    client.send(wire.CANCEL, {"correlation_id": "nobody", "reason": 1, "timestamp_ms": 1700000000000})
    assert headers_call(client, "after-cancel") == allow_response("after-cancel")


def test_a_handler_error_answers_without_a_decision(client: WireClient) -> None:
    answer = headers_call(client, "cid-error", "error")
    assert "decision" not in answer
    assert answer["version"] == 2
    assert answer["audit"]["custom"]["correlation_id"] == "cid-error"
    assert "scripted failure" in answer["audit"]["custom"]["error"]
    assert headers_call(client, "cid-after-error") == allow_response("cid-after-error")


def test_later_events_of_a_request(client: WireClient) -> None:
    headers_call(client, "r1", "allow", **{"x-agent-a-response": ["block"]})
    headers_call(client, "r2", "allow", **{"x-agent-a-response": ["headers"]})
    blocked = client.call(wire.RESPONSE_HEADERS, {"correlation_id": "r1", "status": 200, "headers": {}})
    assert blocked["decision"] == {"block": {"status": 502, "body": "response blocked", "headers": None}}
    assert blocked["audit"]["custom"]["correlation_id"] == "r1"
    changed = client.call(wire.RESPONSE_HEADERS, {"correlation_id": "r2", "status": 200, "headers": {}})
    assert changed["response_headers"] == [{"set": {"name": "x-resp-hdr-a", "value": "1"}}]

    def body(cid: str, data: bytes) -> dict[str, Any]:
        b64 = base64.b64encode(data).decode()
        return {"correlation_id": cid, "data": b64, "is_last": True, "total_size": len(data), "chunk_index": 0}

    rejected = client.call(wire.REQUEST_BODY_CHUNK, body("r1", b"a forbidden word"))
    assert rejected["decision"] == {"block": {"status": 403, "body": "body rejected", "headers": None}}
    assert client.call(wire.REQUEST_BODY_CHUNK, body("r2", b"fine"))["decision"] == "allow"
    leaked = client.call(wire.RESPONSE_BODY_CHUNK, body("r1", b"top secret"))
    assert leaked["decision"] == {"block": {"status": 451, "body": "response body rejected", "headers": None}}
    complete = {
        "correlation_id": "r1",
        "status": 200,
        "duration_ms": 12.5,
        "request_body_size": 16,
        "response_body_size": 10,
        "upstream_attempts": 1,
        "error": None,
    }
    assert client.call(wire.REQUEST_COMPLETE, complete) == allow_response("r1")


def test_a_body_that_is_not_base64_fails_only_its_call(client: WireClient) -> None:
    bad = {"correlation_id": "b64", "data": "not base64!", "is_last": True, "total_size": None, "chunk_index": 0}
    answer = client.call(wire.REQUEST_BODY_CHUNK, bad)
    assert "decision" not in answer
    assert answer["audit"]["custom"]["correlation_id"] == "b64"
    assert headers_call(client, "after-b64") == allow_response("after-b64")


# -- broken peers -------------------------------------------------------------------------------------


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


EVENT = json.dumps(wire.request_headers("x", {})).encode()


@pytest.mark.parametrize(
    ("handshake_first", "data"),
    [
        pytest.param(False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-instead-of-frames"),
        pytest.param(False, frame(wire.REQUEST_HEADERS, EVENT), id="event-before-handshake"),
        pytest.param(False, frame(wire.HANDSHAKE_REQUEST, b"{nope"), id="handshake-not-json"),
        pytest.param(True, b"\xde\xad\xbe\xef\x00garbage", id="garbage"),
        pytest.param(True, struct.pack(">IB", 0, wire.REQUEST_HEADERS), id="zero-length"),
        pytest.param(True, struct.pack(">IB", 16 * 1024 * 1024 + 2, wire.REQUEST_HEADERS), id="oversized"),
        pytest.param(True, frame(0x99, b"{}"), id="unknown-type"),
        pytest.param(True, frame(wire.REQUEST_HEADERS, b"{not json"), id="bad-json"),
        pytest.param(True, frame(wire.REQUEST_HEADERS, b"[1, 2]"), id="json-not-an-object"),
        pytest.param(True, frame(wire.REQUEST_HEADERS, b'{"method": "GET"}'), id="no-correlation-id"),
        pytest.param(True, frame(wire.AGENT_RESPONSE, b'{"correlation_id": "x"}'), id="agent-only-type"),
    ],
)
def test_a_broken_frame_closes_only_that_connection(agent_path: str, handshake_first: bool, data: bytes) -> None:
    with WireClient(agent_path) as other:
        other.handshake()
        with WireClient(agent_path) as broken:
            if handshake_first:
                broken.handshake()
            broken.send_raw(data)
            assert broken.is_closed_by_peer()
        # Connections already open, and new ones, are served as before.
        assert headers_call(other, "still-open") == allow_response("still-open")
    with WireClient(agent_path) as fresh:
        fresh.handshake()
        assert headers_call(fresh, "fresh") == allow_response("fresh")


def test_a_live_socket_is_not_taken_over(agent_path: str) -> None:
    second = AgentProcess(scripted_argv(agent_path, "b"), agent_path)
    with pytest.raises(AssertionError, match="cannot listen on"):
        second.start()
    assert second.returncode == 1
    with WireClient(agent_path) as c:
        assert c.handshake()["capabilities"]["name"] == "a"


def test_sigterm_removes_the_socket_and_exits_0() -> None:
    with socket_dir() as directory:
        path = os.path.join(directory, "t.sock")
        agent = AgentProcess(scripted_argv(path, "t"), path).start()
        try:
            with WireClient(path) as c:
                c.handshake()
            assert os.path.exists(path)
        finally:
            status = agent.stop()
        assert status == 0, agent.stderr_text()
        assert not os.path.exists(path)


def test_sigterm_with_a_proxy_connected_stops_quietly() -> None:
    with socket_dir() as directory:
        path = os.path.join(directory, "q.sock")
        agent = AgentProcess(scripted_argv(path, "q"), path).start()
        with WireClient(path) as c:
            c.handshake()
            status = agent.stop()  # the connection is still open
        assert status == 0
        assert "Traceback" not in agent.stderr_text(), agent.stderr_text()


def test_crash_closes_the_connection() -> None:
    with socket_dir() as directory:
        path = os.path.join(directory, "c.sock")
        with AgentProcess(scripted_argv(path, "c"), path) as agent, WireClient(path) as c:
            c.handshake()
            c.send(wire.REQUEST_HEADERS, wire.request_headers("boom", {"x-agent-c": ["crash"]}))
            assert c.is_closed_by_peer()
            assert agent.wait() == 3


def test_record_writes_every_event_received() -> None:
    with socket_dir() as directory:
        path, record = os.path.join(directory, "r.sock"), os.path.join(directory, "events.jsonl")
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        event = wire.request_headers("rec-1", {"x-trace": ["yes"]}, traceparent=tp)
        with AgentProcess(scripted_argv(path, "r", "--record", record), path), WireClient(path) as c:
            c.handshake()
            c.call(wire.CONFIGURE, {"correlation_id": "cfg", "config": {"k": "v"}})
            c.call(wire.REQUEST_HEADERS, event)
            c.call(wire.RESPONSE_HEADERS, {"correlation_id": "rec-1", "status": 204, "headers": {"server": ["x"]}})
        lines = [json.loads(line) for line in Path(record).read_text().splitlines()]
    assert lines == [
        {"event": "configure", "payload": {"config": {"k": "v"}}},
        {"event": "request_headers", "payload": event},
        {
            "event": "response_headers",
            "payload": {"correlation_id": "rec-1", "status": 204, "headers": {"server": ["x"]}},
        },
    ]


def test_protocol_v1_round_trip() -> None:
    with socket_dir() as directory:
        path = os.path.join(directory, "v1.sock")
        with AgentProcess(scripted_argv(path, "v", "--protocol", "v1"), path), WireClientV1(path, 5.0) as c:
            configured = c.call("configure", {"agent_id": "v", "config": {"x": 1}})
            assert configured["version"] == 1
            assert configured["decision"] == "allow"
            rejected = c.call("configure", {"agent_id": "v", "config": {"reject": True}})
            assert rejected["decision"] == {"block": {"status": 500, "body": "Configuration rejected", "headers": None}}

            allowed = c.call("request_headers", wire.request_headers("v1-a", {}, v2=False))
            expected = allow_response("v1-a")
            expected["version"] = 1
            assert allowed == expected
            blocked = c.call("request_headers", wire.request_headers("v1-b", {"x-agent-v": ["block"]}, v2=False))
            assert blocked["version"] == 1
            assert blocked["decision"] == {
                "block": {"status": 403, "body": "blocked by v", "headers": {"x-blocked-by": "v"}}
            }
            assert blocked["audit"]["custom"]["correlation_id"] == "v1-b"
            failed = c.call("request_headers", wire.request_headers("v1-c", {"x-agent-v": ["error"]}, v2=False))
            assert "decision" not in failed
            assert failed["version"] == 1
            body = {"correlation_id": "v1-b", "data": base64.b64encode(b"forbidden").decode(), "is_last": True}
            assert c.call("request_body_chunk", body)["decision"]["block"]["status"] == 403
            # A message that is not a JSON envelope closes its connection; others go on.
            with WireClientV1(path) as broken:
                broken.send(b'{"version":1,"payload":{}}')
                assert broken.is_closed_by_peer()
            with WireClientV1(path) as other:
                other.send(b"\xff\xfe")
                assert other.is_closed_by_peer()
            assert c.call("request_complete", {"correlation_id": "v1-b", "status": 403})["decision"] == "allow"


# -- in-process: custom agents ------------------------------------------------------------------------


class ConfigAgent(Agent):
    name = "config-agent"
    version = "9.9.9"

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []
        self.active = 0
        self.peak = 0
        self.completed: list[RequestComplete] = []

    async def on_configure(self, config: dict[str, Any]) -> bool:
        self.configs.append(config)
        return config.get("ok") is True

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if event.path == "/hold":
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(0.02)  # work that overlaps other calls unless the server serialises them
        finally:
            self.active -= 1
        return Decision.allow().tag(event.path)

    async def on_request_complete(self, event: RequestComplete) -> None:
        self.completed.append(event)


InProcess = tuple[ConfigAgent, AgentServer, str, LoopThread]


@pytest.fixture
def in_process() -> Iterator[InProcess]:
    with socket_dir() as directory:
        path = os.path.join(directory, "in.sock")
        # A stale socket file from a dead agent must not stop the server from starting.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        agent = ConfigAgent()
        server = AgentServer(agent, path, max_concurrency=1)
        loop = LoopThread()
        loop.run(server.start())
        try:
            yield agent, server, path, loop
        finally:
            loop.stop(server.close)
        assert not os.path.exists(path)


def test_configure_accepted_and_rejected(in_process: InProcess) -> None:
    agent, _server, path, loop = in_process
    with WireClient(path) as c:
        answer = c.handshake()
        assert answer["capabilities"]["supported_events"] == [0, 1, 5]  # configure + the two it overrides
        assert answer["capabilities"]["version"] == "9.9.9"
        assert answer["capabilities"]["limits"]["max_concurrency"] == 1
        accepted = c.call(wire.CONFIGURE, {"correlation_id": "cfg-1", "config": {"ok": True}, "config_version": "1"})
        assert accepted == allow_response("cfg-1")
        rejected = c.call(wire.CONFIGURE, {"correlation_id": "cfg-2", "config": {"ok": False}})
        assert rejected["decision"] == {"block": {"status": 500, "body": "Configuration rejected", "headers": None}}
        assert rejected["audit"]["custom"]["correlation_id"] == "cfg-2"
    assert loop.call(lambda: list(agent.configs)) == [{"ok": True}, {"ok": False}]


def test_max_concurrency_bounds_the_calls_in_flight(in_process: InProcess) -> None:
    agent, _server, path, loop = in_process
    with WireClient(path) as c:
        c.handshake()
        for i in range(4):
            c.send(wire.REQUEST_HEADERS, wire.request_headers(f"m{i}", {}, uri=f"/p{i}?q=1"))
        answers = {c.read_response()["audit"]["custom"]["correlation_id"] for _ in range(4)}
        assert answers == {"m0", "m1", "m2", "m3"}
        complete = {
            "correlation_id": "m0",
            "status": 200,
            "duration_ms": 3,
            "request_body_size": 0,
            "response_body_size": 5,
            "upstream_attempts": 1,
            "error": "upstream reset",
        }
        assert c.call(wire.REQUEST_COMPLETE, complete)["decision"] == "allow"
    assert loop.call(lambda: agent.peak) == 1
    (done,) = loop.call(lambda: list(agent.completed))
    assert (done.status, done.duration_ms, done.error) == (200, 3.0, "upstream reset")


def test_close_ends_calls_and_connections(in_process: InProcess) -> None:
    agent, server, path, loop = in_process
    with WireClient(path) as c:
        c.handshake()
        c.send(wire.REQUEST_HEADERS, wire.request_headers("pending", {}, uri="/hold"))
        wait_for(lambda: loop.call(lambda: agent.active) == 1, what="the call to start")
        loop.run(server.close())
        assert c.is_closed_by_peer()
    assert not os.path.exists(path)


# -- pure units ---------------------------------------------------------------------------------------


def test_decision_builder() -> None:
    decision = (
        Decision.block(429, '{"error":"x"}', {"Retry-After": "3"})
        .tag("a", "b")
        .rule("r1")
        .reason("RATE")
        .routing("pool", "slow")
        .add_response_header("x-r", "1")
    )
    assert decision.to_json("c") == {
        "version": 2,
        "decision": {"block": {"status": 429, "body": '{"error":"x"}', "headers": {"Retry-After": "3"}}},
        "request_headers": [],
        "response_headers": [{"add": {"name": "x-r", "value": "1"}}],
        "routing_metadata": {"pool": "slow"},
        "audit": {
            "tags": ["a", "b"],
            "rule_ids": ["r1"],
            "confidence": None,
            "reason_codes": ["RATE"],
            "custom": {"correlation_id": "c"},
        },
        "needs_more": False,
    }
    with pytest.raises(ValueError, match="redirect status"):
        Decision.redirect("https://x.test/", 200)


def test_event_views() -> None:
    raw = wire.request_headers("ev", {"Authorization": ["Bearer t", "Bearer u"]}, uri="/a/b?c=d&e=f")
    event = RequestHeaders.from_json(raw)
    assert event.raw is raw
    assert (event.path, event.query, event.method) == ("/a/b", "c=d&e=f", "GET")
    assert event.header("AUTHORIZATION") == "Bearer t"
    assert event.headers["authorization"] == ["Bearer t", "Bearer u"]
    assert event.header("missing") is None
    assert event.metadata.client_port == 54321
    assert event.metadata.traceparent is None
    assert event.correlation_id == "ev"
    body = RequestBody.from_json(
        {
            "correlation_id": "ev",
            "data": base64.b64encode(b"\x00\xff").decode(),
            "is_last": False,
            "total_size": None,
            "chunk_index": 2,
        }
    )
    assert (body.data, body.is_last, body.chunk_index, body.total_size) == (b"\x00\xff", False, 2, None)
    response = ResponseHeaders.from_json({"correlation_id": "ev", "status": 302, "headers": {"Location": ["/x"]}})
    assert response.header("location") == "/x"
    with pytest.raises(ValueError, match="client_port"):
        RequestHeaders.from_json({**raw, "metadata": {**raw["metadata"], "client_port": "80"}})
