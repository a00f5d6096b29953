"""The metrics endpoint of SPEC §8 on a real Sentinel: every family, promtool-clean, exact across workers,
OpenMetrics exemplars that point at exported traces."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.metrics import scrape, value
from tests.support.otlp_receivers import GrpcReceiver
from tests.support.process import SentinelProcess, sentinel, wait_for
from tests.support.threaded import LoopThread
from tests.support.upstream import UpstreamServer

METRICS = 'observability {\n    metrics {\n        address "127.0.0.1:0"\n    }\n}\n'

FAMILIES = (
    "sentinel_requests_total",
    "sentinel_request_duration_seconds",
    "sentinel_active_requests",
    "sentinel_open_connections",
    "sentinel_upstream_requests_total",
    "sentinel_upstream_duration_seconds",
    "sentinel_upstream_failures_total",
    "sentinel_upstream_target_healthy",
    "sentinel_agent_latency_seconds",
    "sentinel_agent_requests_total",
    "sentinel_agent_timeouts_total",
    "sentinel_agent_errors_total",
    "sentinel_blocked_requests_total",
    "sentinel_up",
    "sentinel_build_info",
    "otel_exporter_spans_exported_total",
    "otel_exporter_spans_failed_total",
    "otel_exporter_spans_dropped_total",
    "otel_exporter_queue_size",
    "otel_exporter_export_duration_seconds",
    "sentinel_spans_started_total",
)


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_with_routes(upstream: str, extra: str = "", workers: int = 1) -> str:
    """A catch-all route to `upstream`, one to a dead upstream, and a `metrics` builtin route."""
    return (
        f"system {{\n    worker-threads {workers}\n}}\n"
        'listeners {\n    listener "http" {\n        address "127.0.0.1:0"\n    }\n}\n'
        "routes {\n"
        '    route "api" {\n        matches { path-prefix "/"; }\n        upstream "backend"\n    }\n'
        '    route "dead" {\n        matches { path-prefix "/dead"; }\n        upstream "dead"\n'
        "        retry { max-attempts 1; }\n    }\n"
        '    route "metrics" {\n        priority "critical"\n        matches { path "/metrics"; }\n'
        '        builtin-handler "metrics"\n    }\n'
        '    route "status" {\n        priority "critical"\n        matches { path "/status"; }\n'
        '        builtin-handler "status"\n    }\n'
        '    route "health" {\n        priority "critical"\n        matches { path "/health"; }\n'
        '        builtin-handler "health"\n    }\n'
        "}\n"
        f'upstreams {{\n    upstream "backend" {{\n        target "{upstream}"\n    }}\n'
        f'    upstream "dead" {{\n        target "127.0.0.1:{dead_port()}"\n    }}\n}}\n'
        f"{extra}"
    )


def observability(metrics: bool = True, tracing_port: int | None = None, access_log: Path | None = None) -> str:
    inner = ""
    if metrics:
        inner += '    metrics {\n        address "127.0.0.1:0"\n    }\n'
    if tracing_port is not None:
        inner += (
            f'    tracing {{\n        backend "otlp" {{ endpoint "http://127.0.0.1:{tracing_port}"; }}\n'
            "        sampling-rate 1.0\n        schedule-delay-ms 50\n    }\n"
        )
    if access_log is not None:
        inner += f'    logging {{\n        access-log {{\n            file "{access_log}"\n        }}\n    }}\n'
    return f"observability {{\n{inner}}}\n"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus` (./dev test does so when root)")
    return path


def endpoint(proc: SentinelProcess) -> int:
    wait_for(lambda: proc.metrics_port != 0, what="the metrics endpoint to be announced")
    return proc.metrics_port


def test_every_family_passes_promtool_without_warnings(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, config_with_routes(upstream.address, observability())) as proc:
        assert request(proc.port, path="/api/ok").status == 200
        assert request(proc.port, path="/status/503").status == 503
        assert request(proc.port, path="/dead/x").status == 502
        with RawClient(proc.port) as client:  # refused before routing: counted as blocked
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert client.read_response().status == 431
        resp = scrape(endpoint(proc))
    assert resp.status == 200
    assert resp.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.body.decode()
    for family in FAMILIES:
        assert f"# TYPE {family} " in text, family
    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout == "", check.stdout
    assert check.stderr == "", check.stderr

    assert value(text, "sentinel_requests_total", route="api", method="GET", status="200") == 1
    assert value(text, "sentinel_requests_total", route="api", method="GET", status="503") == 1
    assert value(text, "sentinel_requests_total", route="dead", method="GET", status="502") == 1
    assert value(text, "sentinel_upstream_requests_total", upstream="backend", status="503") == 1
    assert value(text, "sentinel_upstream_failures_total", upstream="dead", reason="connect_refused") == 1
    assert value(text, "sentinel_blocked_requests_total", reason="header_too_large") == 1
    assert value(text, "sentinel_upstream_target_healthy", upstream="backend", target=upstream.address) == 1
    assert value(text, "sentinel_up") == 1
    assert value(text, "sentinel_request_duration_seconds_count", route="api", method="GET") == 2


def test_counts_are_exact_across_two_workers_and_a_reload(tmp_path: Path, upstream: UpstreamServer) -> None:
    n, m = 120, 40
    config = config_with_routes(upstream.address, observability(), workers=2)
    with sentinel(tmp_path, config) as proc:
        instances = set()
        for i in range(n):
            assert request(proc.port, path=f"/api/{i}").status == 200
            if i % 4 == 0:
                instances.add(request(proc.port, path="/status").json()["instance_id"])
        assert len(instances) == 2  # fresh connections spread over both workers
        text = scrape(endpoint(proc)).body.decode()
        assert value(text, "sentinel_requests_total", route="api", method="GET", status="200") == n
        assert value(text, "sentinel_request_duration_seconds_count", route="api", method="GET") == n
        assert value(text, "sentinel_request_duration_seconds_bucket", route="api", method="GET", le="+Inf") == n
        assert value(text, "sentinel_upstream_requests_total", upstream="backend", status="200") == n
        assert value(text, "sentinel_active_requests") == 0

        # A reload replaces both workers: what they counted must not be lost.
        old_workers = set(proc.worker_pids())
        proc.signal(signal.SIGHUP)
        wait_for(lambda: proc.saw("reloaded"), timeout=30, what="the reload")
        wait_for(lambda: not old_workers & set(proc.worker_pids()), timeout=30, what="the old workers to exit")
        for i in range(m):
            assert request(proc.port, path=f"/api/after/{i}").status == 200
        text = scrape(endpoint(proc)).body.decode()
        assert value(text, "sentinel_requests_total", route="api", method="GET", status="200") == n + m
        assert value(text, "sentinel_upstream_requests_total", upstream="backend", status="200") == n + m
        # The builtin route serves the same aggregate (itself not yet counted while it is being answered).
        via_route = request(proc.port, path="/metrics").body.decode()
        assert value(via_route, "sentinel_requests_total", route="api", method="GET", status="200") == n + m


def test_openmetrics_exemplars_point_at_exported_traces(
    tmp_path: Path, upstream: UpstreamServer, otlp_receiver: tuple[LoopThread, GrpcReceiver]
) -> None:
    loop, otlp = otlp_receiver
    config = config_with_routes(upstream.address, observability(tracing_port=otlp.port), workers=2)
    with sentinel(tmp_path, config) as proc:
        for i in range(30):
            assert request(proc.port, path=f"/api/{i}").status == 200
        resp = scrape(endpoint(proc), accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        wait_for(lambda: len(loop.call(lambda: otlp.spans)) >= 60, timeout=15, what="the spans")
        exported = {s.trace_id.hex() for s in loop.call(lambda: list(otlp.spans)) if s.kind == 2}
    assert (resp.header("content-type") or "").startswith("application/openmetrics-text; version=1.0.0")
    text = resp.body.decode()
    assert text.endswith("# EOF\n")
    exemplars = [
        s.exemplar
        for family in openmetrics_families(text)  # type: ignore[no-untyped-call]
        if family.name == "sentinel_request_duration_seconds"
        for s in family.samples
        if s.exemplar is not None and s.labels.get("route") == "api"
    ]
    assert exemplars
    for exemplar in exemplars:
        assert exemplar.labels["trace_id"] in exported


def test_endpoint_answers_http_edge_cases(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address, extra=METRICS)) as proc:
        port = endpoint(proc)
        assert request(port, path="/other").status == 404
        assert request(port, method="POST", path="/metrics").status == 405
        head = request(port, method="HEAD", path="/metrics")
        assert head.status == 200
        assert head.body == b""
        with RawClient(port) as client:  # keep-alive: two scrapes on one connection
            for _ in range(2):
                client.send(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
                assert client.read_response().status == 200
        with RawClient(port) as client:
            client.send(b"NOT A REQUEST\r\n\r\n")
            assert client.read_response().status == 400
            wait_for(client.closed_by_peer, what="the connection to close")
        # The proxy is unharmed.
        assert request(proc.port, path="/x").status == 200
        assert scrape(port).status == 200
