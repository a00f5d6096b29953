"""The tracing guide's Jaeger config, as the user wrote it, proxies /api/* and answers /health.

Only the addresses change: the listener gets a free port and the upstream target points at the test
upstream, since tests may not take fixed ports.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import EXAMPLES
from tests.support.client import request
from tests.support.process import sentinel
from tests.support.upstream import UpstreamServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_jaeger_seed_config_proxies_api_and_answers_health(tmp_path: Path, upstream: UpstreamServer) -> None:
    seed = (EXAMPLES / "jaeger" / "sentinel.kdl").read_text()
    assert 'address "0.0.0.0:8080"' in seed
    assert 'target "127.0.0.1:3000"' in seed
    config = (
        seed.replace('address "0.0.0.0:8080"', f'address "127.0.0.1:{_free_port()}"')
        .replace('target "127.0.0.1:3000"', f'target "{upstream.address}"')
        .replace('address "0.0.0.0:9090"', f'address "127.0.0.1:{_free_port()}"')
        # No collector at localhost:4317 here: keep the shutdown short.
        .replace("worker-threads 0", "worker-threads 0\n    graceful-shutdown-timeout-secs 1")
    )
    with sentinel(tmp_path, config) as proc:
        for method, path, body in (
            ("GET", "/api/users", b""),
            ("GET", "/api/products", b""),
            ("POST", "/api/orders", b'{"item": "widget"}'),
        ):
            resp = request(proc.port, method=method, path=path, body=body)
            assert resp.status == 200
            assert resp.json()["target"] == path
            assert resp.json()["body_length"] == len(body)
        health = request(proc.port, path="/health")
        assert health.json()["status"] == "healthy"
        assert request(proc.port, path="/elsewhere").status == 404
    assert [r.target for r in upstream.requests] == ["/api/users", "/api/products", "/api/orders"]
