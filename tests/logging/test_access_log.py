"""The access log of SPEC §7 on a real Sentinel: the trace id that joins logs, traces and the upstream,
both formats, sampling, stdout without interleaving, and rotation without loss."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from sentinel.logging.access import millis, millis_bytes
from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.otlp_receivers import GrpcReceiver
from tests.support.process import sentinel, wait_for
from tests.support.threaded import LoopThread
from tests.support.upstream import UpstreamServer

LOKI_REGEX = re.compile(r'"trace_id":"([a-f0-9]+)"')  # the seed's Grafana derived field, verbatim
KEYS = [
    "timestamp",
    "trace_id",
    "span_id",
    "correlation_id",
    "method",
    "path",
    "query",
    "protocol",
    "status",
    "body_bytes",
    "duration_ms",
    "client_ip",
    "user_agent",
    "referer",
    "host",
    "route_id",
    "upstream",
    "upstream_addr",
    "upstream_attempts",
    "sampled",
]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def access_log(body: str = "", tracing: str = "") -> str:
    return f"observability {{\n{tracing}    logging {{\n        access-log {{\n{body}        }}\n    }}\n}}\n"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_lines(path: Path, n: int) -> list[str]:
    wait_for(lambda: len(lines(path)) >= n, what=f"{n} access-log lines in {path}")
    return lines(path)


def test_trace_id_is_the_same_in_the_log_the_span_and_the_upstream(
    tmp_path: Path, upstream: UpstreamServer, otlp_receiver: tuple[LoopThread, GrpcReceiver]
) -> None:
    loop, otlp = otlp_receiver
    log = tmp_path / "access.log"
    tracing = (
        f'    tracing {{\n        backend "otlp" {{ endpoint "http://127.0.0.1:{otlp.port}"; }}\n'
        "        sampling-rate 1.0\n        schedule-delay-ms 50\n    }\n"
    )
    config = proxy_config(upstream.address, extra=access_log(f'            file "{log}"\n', tracing))
    with sentinel(tmp_path, config) as proc:
        resp = request(proc.port, path="/api/orders?id=7", headers={"User-Agent": 'curl "quoted"', "Referer": "r"})
        assert resp.status == 200
        (line,) = [ln for ln in wait_lines(log, 2) if '"/api/orders"' in ln]
        wait_for(lambda: any(s.kind == 2 for s in loop.call(lambda: list(otlp.spans))), what="the SERVER span")
        (server,) = [
            s
            for s in loop.call(lambda: list(otlp.spans))
            if s.kind == 2
            and any(kv.key == "url.path" and kv.value.string_value == "/api/orders" for kv in s.attributes)
        ]
    entry = json.loads(line)
    assert list(entry) == KEYS
    assert ": " not in line  # compact
    assert ", " not in line
    match = LOKI_REGEX.search(line)
    assert match is not None
    trace_id = match.group(1)
    assert trace_id == entry["trace_id"] == server.trace_id.hex()
    assert len(trace_id) == 32
    assert entry["span_id"] == server.span_id.hex()
    (seen,) = [r for r in upstream.requests if r.target.startswith("/api/orders")]
    traceparent = seen.header("traceparent")
    assert traceparent is not None
    assert traceparent.split("-")[1] == trace_id
    assert TIMESTAMP.fullmatch(entry["timestamp"])
    assert entry["correlation_id"] == resp.header("x-correlation-id")
    assert (entry["method"], entry["path"], entry["query"]) == ("GET", "/api/orders", "id=7")
    assert (entry["protocol"], entry["status"], entry["body_bytes"]) == ("HTTP/1.1", 200, len(resp.body))
    assert entry["duration_ms"] > 0
    assert (entry["client_ip"], entry["user_agent"], entry["referer"]) == ("127.0.0.1", 'curl "quoted"', "r")
    assert (entry["host"], entry["route_id"], entry["upstream"]) == ("test.local", "api", "backend")
    assert (entry["upstream_addr"], entry["upstream_attempts"], entry["sampled"]) == (upstream.address, 1, True)


def test_untraced_requests_log_a_w3c_trace_id_and_leave_trace_headers_alone(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    # No tracing configured: traceparent and tracestate pass through untouched (SPEC §6.2), and the log's
    # trace id is the caller's when it sent a valid traceparent, else one of the proxy's own.
    log = tmp_path / "access.log"
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with sentinel(tmp_path, proxy_config(upstream.address, extra=access_log(f'            file "{log}"\n'))) as proc:
        assert request(proc.port, path="/plain").status == 200
        assert request(proc.port, path="/joined", headers={"traceparent": parent, "tracestate": "v=1"}).status == 200

        def logged() -> dict[str, dict[str, Any]]:
            return {entry["path"]: entry for entry in map(json.loads, lines(log))}

        wait_for(lambda: {"/plain", "/joined"} <= logged().keys(), what="both requests' lines")
    entries = logged()
    plain, joined = entries["/plain"], entries["/joined"]
    assert "query" not in plain
    assert plain["sampled"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", plain["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", plain["span_id"])
    assert joined["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    seen = {r.target: r for r in upstream.requests}
    assert seen["/plain"].header("traceparent") is None
    assert seen["/plain"].header("tracestate") is None
    assert seen["/joined"].header("traceparent") == parent
    assert seen["/joined"].header("tracestate") == "v=1"


def test_json_lines_escape_what_the_client_sent(tmp_path: Path, upstream: UpstreamServer) -> None:
    log = tmp_path / "access.log"
    with sentinel(tmp_path, proxy_config(upstream.address, extra=access_log(f'            file "{log}"\n'))) as proc:
        assert request(proc.port, path='/e/"a\\b?q="v"', headers={"User-Agent": 'x\\"y'}).status == 200
        assert request(proc.port, path='/e/"c').status == 200  # no query: the key is left out
        wait_for(lambda: sum("/e/" in ln for ln in lines(log)) == 2, what="both lines")
        found = [json.loads(ln) for ln in lines(log) if "/e/" in ln]
    first, second = found
    assert (first["path"], first["query"], first["user_agent"]) == ('/e/"a\\b', 'q="v"', 'x\\"y')
    assert list(first) == KEYS
    assert second["path"] == '/e/"c'
    assert "query" not in second
    assert list(second) == [k for k in KEYS if k != "query"]


def test_json_lines_escape_raw_bytes_and_incoming_ids(tmp_path: Path, upstream: UpstreamServer) -> None:
    # Bytes outside printable ASCII (llhttp lets them through in field values, not in the target) are read
    # as Latin-1 and written as \u escapes, so the line stays ASCII; an incoming correlation id may carry a
    # quote or a backslash (it is printable ASCII).
    log = tmp_path / "access.log"
    with sentinel(tmp_path, proxy_config(upstream.address, extra=access_log(f'            file "{log}"\n'))) as proc:
        with RawClient(proc.port) as client:
            client.send(
                b'GET /e/"x\\y?q=\\ HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\xc3\xa9\tx\r\n'
                b'Referer: "r"\r\nX-Request-Id: id"1\\\r\n\r\n'
            )
            assert client.read_response().status == 200
        wait_for(lambda: any("/e/" in ln for ln in lines(log)), what="the line")
        (raw,) = [ln for ln in lines(log) if "/e/" in ln]
    assert raw.isascii()
    entry = json.loads(raw)
    assert (entry["path"], entry["query"]) == ('/e/"x\\y', "q=\\")
    assert (entry["user_agent"], entry["referer"]) == ("caf\u00c3\u00a9\tx", '"r"')
    assert entry["correlation_id"] == 'id"1\\'
    assert list(entry) == KEYS


def test_combined_format_and_no_trace_id(tmp_path: Path, upstream: UpstreamServer) -> None:
    log = tmp_path / "access.log"
    with_id = access_log(f'            file "{log}"\n            format "combined"\n')
    with sentinel(tmp_path, proxy_config(upstream.address, extra=with_id)) as proc:
        assert request(proc.port, path="/c?x=1", headers={"User-Agent": "ua/1"}).status == 200
        (line,) = [ln for ln in wait_lines(log, 2) if "/c?x=1" in ln]
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /c\?x=1 HTTP/1\.1" 200 \d+ '
        r'"-" "ua/1" [0-9a-f]{32} \d+\.\d{3}ms',
        line,
    ), line
    log.unlink()
    without = access_log(f'            file "{log}"\n            include-trace-id #false\n')
    with sentinel(tmp_path, proxy_config(upstream.address, extra=without)) as proc:
        assert request(proc.port, path="/n").status == 200
        (line,) = [ln for ln in wait_lines(log, 2) if '"/n"' in ln]
    assert "trace_id" not in json.loads(line)
    assert "span_id" not in json.loads(line)


def test_sampling_keeps_every_error(tmp_path: Path, upstream: UpstreamServer) -> None:
    log = tmp_path / "access.log"
    config = access_log(
        f'            file "{log}"\n            sample-rate 0.0\n            sample-errors-always #true\n'
    )
    with sentinel(tmp_path, proxy_config(upstream.address, extra=config)) as proc:
        for _ in range(20):
            assert request(proc.port, path="/fine").status == 200
        assert request(proc.port, path="/status/502").status == 502
        assert request(proc.port, path="/status/404").status == 404
        found = wait_lines(log, 2)
    assert sorted(json.loads(ln)["status"] for ln in found) == [404, 502]


def test_stdout_lines_from_two_workers_never_interleave(tmp_path: Path, upstream: UpstreamServer) -> None:
    n = 200
    config = proxy_config(upstream.address, workers=2, extra=access_log())
    with sentinel(tmp_path, config) as proc:

        def client(k: int) -> None:
            for i in range(n // 4):
                assert request(proc.port, path=f"/w/{k}/{i}", headers={"User-Agent": "x" * 3000}).status == 200

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def logged() -> list[dict[str, object]]:
            with proc._lock:
                out = list(proc.stdout_lines)
            return [json.loads(ln) for ln in out]  # every line is one whole JSON object

        wait_for(lambda: sum(str(e.get("path", "")).startswith("/w/") for e in logged()) >= n, what="every line")
        assert sum(str(e.get("path", "")).startswith("/w/") for e in logged()) == n


def test_rotation_with_sigusr1_loses_no_line(tmp_path: Path, upstream: UpstreamServer) -> None:
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    config = proxy_config(upstream.address, workers=2, extra=access_log(f'            file "{log}"\n'))
    with sentinel(tmp_path, config) as proc:
        sent = 0
        stop = threading.Event()

        def traffic() -> None:
            nonlocal sent
            while not stop.is_set():
                assert request(proc.port, path=f"/r/{sent}").status == 200
                sent += 1

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            wait_for(lambda: sent >= 50, what="traffic before the rotation")
            os.rename(log, rotated)
            proc.signal(signal.SIGUSR1)
            wait_for(log.exists, what="the access log to be reopened")
            at_reopen = sent
            wait_for(lambda: sent >= at_reopen + 50, what="traffic after the rotation")
        finally:
            stop.set()
            thread.join()

        def count() -> int:
            return sum('"/r/' in ln for ln in lines(rotated) + lines(log))

        wait_for(lambda: count() >= sent, what="every line")
    paths = sorted(json.loads(ln)["path"] for ln in lines(rotated) + lines(log) if '"/r/' in ln)
    assert paths == sorted(f"/r/{i}" for i in range(sent))
    assert any('"/r/' in ln for ln in lines(log))  # the new file got the lines after the signal


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0.000"),
        (499, "0.000"),
        (500, "0.001"),  # halves round up
        (4_500, "0.005"),
        (1_234_567, "1.235"),
        (999_999_999, "1000.000"),
        (12_345_678_901, "12345.679"),
        (-5, "0.000"),  # the wall clock stepped back
        (-2_000_000, "0.000"),
    ],
)
def test_duration_ms_text(ns: int, text: str) -> None:
    assert millis(ns) == text
    assert millis_bytes(ns) == text.encode()
