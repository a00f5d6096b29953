"""The example agents (examples/agents): as real processes over the wire, their spans exported to a real
OTLP/gRPC receiver, and the rate limiter's buckets on an injected clock."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.agent_sdk import wire_client as wire
from tests.agent_sdk.wire_client import WireClient
from tests.support.agents import AgentProcess, socket_dir
from tests.support.otlp_receivers import GrpcReceiver
from tests.support.process import wait_for
from tests.support.threaded import LoopThread

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "agents"


def load_example(name: str) -> ModuleType:
    """An example agent's module, loaded from its file: the examples are scripts, not a package (and
    mypy checks them as top-level modules)."""
    spec = importlib.util.spec_from_file_location(f"example_agent_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


ratelimit = load_example("ratelimit")
RateLimiter = ratelimit.RateLimiter
client_key = ratelimit.client_key

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def short_dir() -> Iterator[str]:
    with socket_dir() as directory:
        yield directory


def start(directory: str, script: str, *flags: str) -> AgentProcess:
    path = os.path.join(directory, f"{script}.sock")
    return AgentProcess([f"examples/agents/{script}.py", "-s", path, *flags], path).start()


def call(path: str, cid: str, headers: dict[str, list[str]], **kwargs: Any) -> dict[str, Any]:
    with WireClient(path) as c:
        c.handshake()
        return c.call(wire.REQUEST_HEADERS, wire.request_headers(cid, headers, **kwargs))


# -- auth ---------------------------------------------------------------------------------------------


def test_auth(short_dir: str) -> None:
    agent = start(short_dir, "auth", "--token", "s3cret:alice", "--token", "plain")
    try:
        path = agent.socket_path
        missing = call(path, "a1", {})
        assert missing["decision"] == {
            "block": {
                "status": 401,
                "body": '{"error":"unauthorized"}',
                "headers": {"WWW-Authenticate": 'Bearer realm="sentinel"', "Content-Type": "application/json"},
            }
        }
        assert missing["audit"]["tags"] == ["auth:denied"]
        assert missing["audit"]["custom"]["correlation_id"] == "a1"
        assert call(path, "a2", {"authorization": ["Basic dTpw"]})["decision"]["block"]["status"] == 401

        wrong = call(path, "a3", {"authorization": ["Bearer nope"]})
        assert wrong["decision"]["block"]["headers"]["WWW-Authenticate"] == (
            'Bearer realm="sentinel", error="invalid_token"'
        )
        assert wrong["audit"]["tags"] == ["auth:denied"]

        alice = call(path, "a4", {"authorization": ["Bearer s3cret"]})
        assert alice["decision"] == "allow"
        assert alice["request_headers"] == [{"set": {"name": "x-auth-subject", "value": "alice"}}]
        assert alice["audit"]["tags"] == ["auth:ok"]
        plain = call(path, "a5", {"authorization": ["bearer  plain "]})  # the scheme is case-insensitive
        assert plain["request_headers"] == [{"set": {"name": "x-auth-subject", "value": "plain"}}]

        # Tokens pushed by the proxy's config block are accepted too; a malformed config is rejected.
        with WireClient(path) as c:
            c.handshake()
            assert (
                c.call(wire.CONFIGURE, {"correlation_id": "cfg", "config": {"tokens": ["pushed:bob"]}})["decision"]
                == "allow"
            )
            rejected = c.call(wire.CONFIGURE, {"correlation_id": "cfg2", "config": {"tokens": [1]}})
            assert rejected["decision"]["block"]["status"] == 500
            bob = c.call(wire.REQUEST_HEADERS, wire.request_headers("a6", {"authorization": ["Bearer pushed"]}))
            assert bob["request_headers"] == [{"set": {"name": "x-auth-subject", "value": "bob"}}]
    finally:
        assert agent.stop() == 0, agent.stderr_text()


# -- ratelimit ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=3, clock=clock)
    assert [limiter.check("ip").remaining for _ in range(3)] == [2, 1, 0]
    denied = limiter.check("ip")
    assert (denied.allowed, denied.remaining, denied.retry_after) == (False, 0, 1)
    assert limiter.check("other").allowed  # buckets are per key
    clock.now += 0.5
    assert limiter.check("ip").allowed is False
    clock.now += 0.5
    assert (limiter.check("ip").allowed, limiter.check("ip").allowed) == (True, False)
    clock.now += 60
    assert limiter.check("ip").remaining == 2  # refilled up to the burst, not beyond

    slow = RateLimiter(rate=0.25, burst=1, clock=clock)
    assert slow.check("k").allowed
    assert slow.check("k").retry_after == 4  # ceil(1 token / 0.25 per s)


def test_the_bucket_map_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=3)
    for key in ("a", "b", "c", "d", "e"):
        limiter.check(key)
        assert len(limiter) <= 3
    assert limiter.check("e").remaining == 0  # the most recent buckets were kept
    clock.now += 10
    limiter.check("f")  # every idle bucket is full again: dropped without loss
    assert len(limiter) == 1


def test_client_key() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("192.0.2.1:5678") == "192.0.2.1"
    assert client_key("2001:db8::1") == "2001:db8::1"
    assert client_key("[2001:db8::1]:443") == "2001:db8::1"
    assert client_key("unix") == "unix"


def test_ratelimit_over_the_wire(short_dir: str) -> None:
    agent = start(short_dir, "ratelimit", "--rate", "0.1", "--burst", "3")
    try:
        with WireClient(agent.socket_path) as c:
            c.handshake()
            answers = [c.call(wire.REQUEST_HEADERS, wire.request_headers(f"r{i}", {})) for i in range(4)]
            other = c.call(wire.REQUEST_HEADERS, wire.request_headers("r-other", {}, client_ip="192.0.2.99"))
        for answer, remaining in zip(answers[:3], ["2", "1", "0"], strict=True):
            assert answer["decision"] == "allow"
            assert answer["response_headers"] == [{"add": {"name": "x-ratelimit-remaining", "value": remaining}}]
        assert answers[3]["decision"] == {
            "block": {
                "status": 429,
                "body": '{"error":"rate limited"}',
                # 10 s at 0.1 token/s until one token is back (less only if the calls took over a second)
                "headers": {"Retry-After": "10", "X-RateLimit-Limit": "3", "Content-Type": "application/json"},
            }
        }
        assert answers[3]["audit"]["custom"]["correlation_id"] == "r3"
        assert other["decision"] == "allow"
    finally:
        assert agent.stop() == 0, agent.stderr_text()


# -- spans --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "flags", "span_name", "attributes"),
    [
        ("auth", ["--token", "t:alice"], "auth.verify", {"auth.result": "ok"}),
        (
            "ratelimit",
            [],
            "ratelimit.check",
            {"ratelimit.key": "192.0.2.10", "ratelimit.allowed": True, "ratelimit.remaining": 19},
        ),
    ],
)
def test_the_agent_span_is_a_child_of_the_proxy_call(
    short_dir: str,
    otlp_receiver: tuple[LoopThread, GrpcReceiver],
    script: str,
    flags: list[str],
    span_name: str,
    attributes: dict[str, Any],
) -> None:
    loop, otlp = otlp_receiver
    agent = start(short_dir, script, *flags, "--otlp-endpoint", f"http://127.0.0.1:{otlp.port}")
    try:
        answer = call(agent.socket_path, "traced", {"authorization": ["Bearer t"]}, traceparent=TRACEPARENT)
        assert answer["decision"] == "allow"

        def named() -> list[Any]:
            return [s for s in loop.call(lambda: list(otlp.spans)) if s.name == span_name]

        wait_for(lambda: bool(named()), timeout=15, what=f"the {span_name} span")
    finally:
        assert agent.stop() == 0, agent.stderr_text()
    (span,) = named()
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.span_id.hex() not in ("", PARENT_ID)
    got = {kv.key: _value(kv.value) for kv in span.attributes}
    assert got == attributes
    resource = loop.call(lambda: otlp.requests[0].request.resource_spans[0].resource)
    assert {kv.key: _value(kv.value) for kv in resource.attributes}["service.name"] == script


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind)
