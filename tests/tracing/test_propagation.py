"""W3C Trace Context through the proxy (SPEC §6.2, §6.3): what the upstream receives, on real sockets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.client import request
from tests.support.configs import proxy_config as _proxy_config
from tests.support.process import sentinel
from tests.support.upstream import UpstreamServer

TRACING = 'observability {\n    tracing {\n        backend "otlp"\n        sampling-rate %s\n    }\n}\n'


def proxy_config(*targets: str, **kw: Any) -> str:
    # No collector runs in these tests: do not let shutdown wait for one.
    return _proxy_config(*targets, **kw).replace(
        "worker-threads 1", "worker-threads 1\n    graceful-shutdown-timeout-secs 1"
    )


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _upstream_traceparent(upstream: UpstreamServer) -> tuple[str, str, int]:
    value = upstream.requests[-1].header("traceparent")
    assert value is not None
    match = TRACEPARENT.fullmatch(value)
    assert match, value
    return match.group(1), match.group(2), int(match.group(3), 16)


def test_valid_parent_is_continued_with_a_new_span_and_tracestate(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address, extra=TRACING % "0.0")) as proc:
        resp = request(proc.port, path="/a", headers={"traceparent": PARENT, "tracestate": "vendor=abc,other=1"})
        assert resp.status == 200
        trace_id, span_id, flags = _upstream_traceparent(upstream)
        assert trace_id == "0af7651916cd43dd8448eb211c80319c"
        assert span_id != "b7ad6b7169203331"  # the proxy's own CLIENT span is the upstream's parent
        assert flags & 1 == 1  # parent-based: the caller sampled, so do we (rate 0 notwithstanding)
        assert upstream.requests[-1].header("tracestate") == "vendor=abc,other=1"


def test_unsampled_parent_stays_unsampled(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address, extra=TRACING % "1.0")) as proc:
        request(proc.port, path="/a", headers={"traceparent": PARENT[:-2] + "00"})
        trace_id, _, flags = _upstream_traceparent(upstream)
        assert trace_id == "0af7651916cd43dd8448eb211c80319c"
        assert flags & 1 == 0


def test_invalid_parent_starts_a_new_trace_and_drops_tracestate(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address, extra=TRACING % "1.0")) as proc:
        bad = "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        resp = request(proc.port, path="/a", headers={"traceparent": bad, "tracestate": "vendor=abc"})
        assert resp.status == 200
        trace_id, _, flags = _upstream_traceparent(upstream)
        assert trace_id != "0" * 32
        assert flags == 0x03  # sampled (rate 1.0) and random-trace-id (the proxy made the id)
        assert upstream.requests[-1].header("tracestate") is None


def test_sampling_rate_zero_sends_the_real_decision(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address, extra=TRACING % "0")) as proc:
        request(proc.port, path="/a")
        _, _, flags = _upstream_traceparent(upstream)
        assert flags == 0x02


def test_each_attempt_names_its_own_client_span(tmp_path: Path) -> None:
    slow, good = UpstreamServer(name="slow", delay=3).start(), UpstreamServer(name="good").start()
    try:
        config = proxy_config(
            slow.address, good.address, extra_upstream="        timeouts { read-secs 0.3; }\n", extra=TRACING % "1"
        )
        with sentinel(tmp_path, config) as proc:
            for _ in range(2):
                assert request(proc.port, path="/x", headers={"traceparent": PARENT}).status == 200
            parents = [TRACEPARENT.fullmatch(r.header("traceparent") or "") for r in slow.requests + good.requests]
            ids = [m.group(2) for m in parents if m]
            assert len(ids) == len(set(ids)) >= 3  # a retried request sent two different parent ids
            assert all(m is not None and m.group(1) == PARENT[3:35] for m in parents)
    finally:
        slow.stop()
        good.stop()


def test_error_body_carries_the_trace_id(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address, extra=TRACING % "1", limits="limits {\n    max-body-size 1000\n}\n")
    with sentinel(tmp_path, config) as proc:
        resp = request(proc.port, path="/status/404", headers={"traceparent": PARENT})
        assert resp.status == 404  # the upstream's own 404 is passed through
        resp = request(proc.port, method="POST", path="/x", headers={"traceparent": PARENT}, body=b"y" * 2000)
        assert resp.status == 413
        assert resp.json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_without_tracing_traceparent_passes_untouched(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address)) as proc:
        request(proc.port, path="/a", headers={"traceparent": PARENT, "tracestate": "v=1"})
        assert upstream.requests[-1].header("traceparent") == PARENT
        assert upstream.requests[-1].header("tracestate") == "v=1"


def test_traceresponse_when_enabled(tmp_path: Path, upstream: UpstreamServer) -> None:
    tracing = (
        'observability {\n    tracing {\n        backend "otlp"\n        sampling-rate 1\n'
        "        response-headers { traceresponse #true; }\n    }\n}\n"
    )
    with sentinel(tmp_path, proxy_config(upstream.address, extra=tracing)) as proc:
        for path in ("/a", "/health"):
            resp = request(proc.port, path=path, headers={"traceparent": PARENT})
            match = TRACEPARENT.fullmatch(resp.header("traceresponse") or "")
            assert match, resp.headers
            assert match.group(1) == PARENT[3:35]
    with sentinel(tmp_path, proxy_config(upstream.address, extra=TRACING % "1")) as proc:
        assert request(proc.port, path="/a").header("traceresponse") is None


def test_trace_headers_without_header_policies(tmp_path: Path, upstream: UpstreamServer) -> None:
    # A route without request-header policies gets the trace headers as ready-made lines (the fast path);
    # the other tests here go through a route that has policies.
    config = proxy_config(upstream.address, extra=TRACING % "1.0")
    start = config.index("        policies {")
    config = config[:start] + config[config.index("        }\n    }\n", start) + len("        }\n") :]
    assert "request-headers" not in config
    with sentinel(tmp_path, config) as proc:
        assert request(proc.port, path="/a").status == 200
        trace_id, span_id, flags = _upstream_traceparent(upstream)
        assert flags == 0x03
        assert upstream.requests[-1].header("tracestate") is None
        headers = {"traceparent": PARENT, "tracestate": "vendor=abc"}
        assert request(proc.port, path="/b", headers=headers).status == 200
        trace_id, span_id, flags = _upstream_traceparent(upstream)
        assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", 0x01)
        assert span_id != "b7ad6b7169203331"
        assert upstream.requests[-1].header("tracestate") == "vendor=abc"
        assert upstream.requests[-1].header("x-policy") is None
