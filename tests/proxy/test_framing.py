"""Malformed and ambiguous requests (request smuggling), limits and slow clients (SPEC §3).

Each bad request gets the right 4xx with the JSON error body, and the connection is closed after it:
the proxy cannot know where the next request would start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.client import RawClient
from tests.support.configs import proxy_config
from tests.support.process import SentinelProcess, sentinel
from tests.support.upstream import UpstreamServer

SMUGGLING = {
    "content-length and transfer-encoding": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing content-lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "transfer-encoding not chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "chunked not last": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    "bare CR in value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
    "bare LF line ending": b"GET / HTTP/1.1\nHost: a\n\n",
    "malformed chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "control character in value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
    # Request targets are printable ASCII: httptools' llhttp is built strict for URLs (its loose mode would
    # take tab, form feed and bytes >= 0x80). The access log relies on it: only `"` and `\` get escaped.
    "non-ASCII byte in target": b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n",
    "control character in target": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "DEL in target": b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab in target": b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",  # llhttp's loose mode would take it
    "form feed in query": b"GET /a?b=\x0c HTTP/1.1\r\nHost: a\r\n\r\n",
    "non-ASCII byte in absolute-form query": b"GET http://a/x?q=\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "garbage request line": b"HELLO\r\n\r\n",
    "missing host on HTTP/1.1": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


def _error(client: RawClient, status: int) -> None:
    resp = client.read_response()
    assert resp.status == status, resp
    assert resp.header("content-type") == "application/json"
    body = json.loads(resp.body)
    assert body["status"] == status
    assert len(body["trace_id"]) == 32
    assert int(body["trace_id"], 16) >= 0
    assert body["correlation_id"]
    assert body["error"]


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_ambiguous_requests_get_400_and_the_connection_closes(
    proxy: SentinelProcess, upstream: UpstreamServer, raw: bytes
) -> None:
    with RawClient(proxy.port) as client:
        client.send(raw)
        _error(client, 400)
        assert client.closed_by_peer()
    assert upstream.requests == []  # nothing reached the upstream


@pytest.mark.parametrize("target", [b"example.com:443", b"/x"])
def test_connect_is_refused_and_the_connection_closes(
    proxy: SentinelProcess, upstream: UpstreamServer, target: bytes
) -> None:
    # A reverse proxy opens no tunnels: CONNECT gets 501 whatever its target, and the bytes after its head
    # (which a tunnel would carry) go nowhere.
    with RawClient(proxy.port) as client:
        client.send(b"CONNECT %s HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" % target)
        _error(client, 501)
        assert client.closed_by_peer()
    assert upstream.requests == []


def test_bad_request_after_a_good_one_on_the_same_connection(proxy: SentinelProcess, upstream: UpstreamServer) -> None:
    with RawClient(proxy.port) as client:
        client.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLING["content-length and transfer-encoding"])
        assert client.read_response().json()["target"] == "/ok"
        _error(client, 400)
        assert client.closed_by_peer()
    assert [r.target for r in upstream.requests] == ["/ok"]


def test_too_many_headers_431(proxy: SentinelProcess) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    with RawClient(proxy.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
        _error(client, 431)


def test_oversized_headers_431(proxy: SentinelProcess) -> None:
    with RawClient(proxy.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n")
        _error(client, 431)


def test_body_over_limit_by_content_length_413(proxy: SentinelProcess, upstream: UpstreamServer) -> None:
    with RawClient(proxy.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000001\r\n\r\n")
        _error(client, 413)
        assert client.closed_by_peer()
    assert upstream.requests == []


def test_chunked_body_over_limit_413(proxy: SentinelProcess) -> None:
    with RawClient(proxy.port) as client:
        client.send(b"POST /slow/2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (100_000, b"z" * 100_000)
        try:
            for _ in range(11):
                client.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _error(client, 413)


def test_slow_client_head_timeout(tmp_path: Path, upstream: UpstreamServer) -> None:

    config = proxy_config(
        upstream.address, listener_extra="        request-timeout-secs 0.5\n        keepalive-timeout-secs 0.5\n"
    )
    with sentinel(tmp_path, config) as proc, RawClient(proc.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finishes its head
        started = time.monotonic()
        _error(client, 408)
        assert client.closed_by_peer()
        assert time.monotonic() - started < 5
        with RawClient(proc.port) as idle:
            assert idle.closed_by_peer()  # an idle connection is closed after the keep-alive timeout
