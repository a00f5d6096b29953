"""Dead, slow, resetting and flapping upstreams (SPEC §3 errors, §4 retries and health)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.process import sentinel, wait_for
from tests.support.upstream import UpstreamServer


def closed_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_upstream_is_502_and_the_proxy_stays_up(tmp_path: Path) -> None:
    with sentinel(tmp_path, proxy_config(f"127.0.0.1:{closed_port()}")) as proc:
        resp = request(proc.port, path="/api/x")
        assert resp.status == 502
        body = resp.json()
        assert body["status"] == 502
        assert len(body["trace_id"]) == 32
        assert body["correlation_id"] == resp.header("x-correlation-id")
        assert request(proc.port, path="/health").status == 200


def test_connect_failure_goes_to_another_target_even_for_post(tmp_path: Path, upstream: UpstreamServer) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    with sentinel(tmp_path, proxy_config(dead, upstream.address)) as proc:
        for _ in range(6):
            resp = request(proc.port, method="POST", path="/orders", body=b"{}")
            assert resp.status == 200, resp
    assert len([r for r in upstream.requests if r.target == "/orders"]) == 6


def test_slow_upstream_is_504(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address, extra_upstream="        timeouts { read-secs 0.3; }\n")
    with sentinel(tmp_path, config) as proc:
        started = time.monotonic()
        resp = request(proc.port, method="POST", path="/slow/3", body=b"x")
        assert resp.status == 504
        assert time.monotonic() - started < 2.5
        assert request(proc.port, path="/fine").status == 200


def test_idempotent_request_is_retried_on_another_target_after_a_timeout(tmp_path: Path) -> None:
    flaky, good = UpstreamServer(name="flaky", delay=3).start(), UpstreamServer(name="good").start()
    try:
        config = proxy_config(flaky.address, good.address, extra_upstream="        timeouts { read-secs 0.3; }\n")
        with sentinel(tmp_path, config) as proc:
            answers = [request(proc.port, path="/x").json() for _ in range(4)]
            names = {a.get("upstream", str(a)) for a in answers}
            assert names == {"good"}  # each timed-out GET on "flaky" was retried on "good"
            assert len(flaky.requests) >= 1
    finally:
        flaky.stop()
        good.stop()


def test_upstream_reset_mid_body_cuts_the_client_off(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address)) as proc:
        with RawClient(proc.port) as client:
            client.send(b"GET /reset HTTP/1.1\r\nHost: a\r\n\r\n")
            head_and_some = b""
            while b"0123456789" not in head_and_some:
                data = client.sock.recv(65536)
                if not data:
                    break
                head_and_some += data
            assert head_and_some.startswith(b"HTTP/1.1 200")
            assert b"content-length: 1000" in head_and_some.lower()
            assert client.closed_by_peer()  # the client sees a truncated body, never a wrong one
        assert request(proc.port, path="/after").status == 200


def test_no_healthy_target_is_503_at_once(tmp_path: Path) -> None:
    dead = closed_port()
    config = proxy_config(
        f"127.0.0.1:{dead}",
        extra_upstream='        health-check {\n            type "tcp"\n            interval-secs 0.2\n'
        "            timeout-secs 0.2\n            unhealthy-threshold 1\n        }\n",
    )
    with sentinel(tmp_path, config) as proc:
        wait_for(lambda: request(proc.port, path="/x").status == 503, what="the target to be marked down")
        started = time.monotonic()
        resp = request(proc.port, path="/x")
        assert resp.status == 503
        assert time.monotonic() - started < 0.5
        assert resp.json()["error"] == "no healthy upstream target"
        ups = request(proc.port, path="/upstreams").json()["upstreams"][0]
        assert ups["targets"][0]["status"] == "unhealthy"


def test_target_goes_down_and_comes_back_through_health_checks(tmp_path: Path) -> None:
    server = UpstreamServer().start()
    port = server.port
    check = (
        '        health-check {\n            type "http" { path "/healthz"; }\n            interval-secs 0.2\n'
        "            timeout-secs 0.5\n            healthy-threshold 2\n            unhealthy-threshold 2\n        }\n"
    )
    with sentinel(tmp_path, proxy_config(server.address, extra_upstream=check, workers=2)) as proc:
        assert request(proc.port, path="/x").status == 200
        server.stop()
        wait_for(lambda: proc.saw("is now unhealthy"), what="the health check to mark the target down")
        wait_for(lambda: request(proc.port, path="/x").status == 503, what="every worker to know")
        revived = UpstreamServer(port=port).start()
        try:
            wait_for(lambda: proc.saw("is now healthy"), what="the target to come back")
            for _ in range(4):  # both workers route to it again
                assert request(proc.port, path="/x").status == 200
        finally:
            revived.stop()


def test_route_timeout_bounds_the_whole_request(tmp_path: Path, upstream: UpstreamServer) -> None:
    # The upstream sends nothing for 3 s; the read timeout (60 s) would wait, the route's 0.5 s does not.
    config = proxy_config(upstream.address).replace(
        'upstream "backend"\n', 'upstream "backend"\n        timeout-secs 0.5\n', 1
    )
    with sentinel(tmp_path, config) as proc:
        started = time.monotonic()
        resp = request(proc.port, path="/slow/3")
        assert resp.status == 504
        assert time.monotonic() - started < 2.5
        assert request(proc.port, path="/fine").status == 200


def test_upstream_that_stops_reading_the_body_times_out(tmp_path: Path) -> None:
    # A peer that accepts the connection but never reads: the request body fills the buffers.
    with socket.socket() as lazy:
        lazy.bind(("127.0.0.1", 0))
        lazy.listen()
        config = proxy_config(
            f"127.0.0.1:{lazy.getsockname()[1]}",
            extra_upstream="        timeouts { write-secs 0.5; }\n",
            limits="limits {\n    max-body-size 200000000\n}\n",
        )
        with sentinel(tmp_path, config) as proc, RawClient(proc.port, timeout=30) as client:
            size = 64 * 1024 * 1024
            client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            started = time.monotonic()
            try:
                block = b"\0" * (1 << 20)
                for _ in range(size // len(block)):
                    client.send(block)
            except OSError:
                pass  # the proxy may close before the whole body is sent
            resp = client.read_response()
            assert resp.status == 504
            assert time.monotonic() - started < 20


def test_response_head_cut_short_is_502_and_pipelining_stays_in_order(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address)
    with sentinel(tmp_path, config) as proc, RawClient(proc.port) as client:
        client.send(
            b"POST /partial-head HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first = client.read_response()
        assert first.status == 502
        second = client.read_response()
        assert second.json()["target"] == "/second"


def test_reset_during_close_delimited_body_is_not_passed_on_as_complete(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    with sentinel(tmp_path, proxy_config(upstream.address)) as proc, RawClient(proc.port) as client:
        client.send(b"GET /reset-close-delimited HTTP/1.1\r\nHost: a\r\n\r\n")
        received = b""
        try:
            while chunk := client.sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        assert received.startswith(b"HTTP/1.1 200")
        assert not received.endswith(b"0\r\n\r\n")  # the client sees a truncated body, not a finished one


def test_slow_upload_longer_than_read_timeout_succeeds(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address, extra_upstream="        timeouts { read-secs 1; }\n")
    with sentinel(tmp_path, config) as proc, RawClient(proc.port) as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n")
        for _ in range(8):  # 2.4 s of uploading, longer than read-secs
            client.send(b"x" * 5)
            time.sleep(0.3)  # the client's pace is what is being tested, not a synchronisation
        resp = client.read_response()
        assert resp.status == 200
        assert resp.json()["body_length"] == 40


def test_unrequested_protocol_switch_is_502(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address).replace(
        'upstream "backend"\n', 'upstream "backend"\n        retry { max-attempts 1; }\n', 1
    )
    with sentinel(tmp_path, config) as proc:
        assert request(proc.port, path="/switch").status == 502
        assert request(proc.port, path="/after").status == 200
