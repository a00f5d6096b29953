"""The request head sent upstream, whatever shape the client's head had on the wire: in one read or
split, pipelined, after a body that looks like a head, after empty lines, with unusual spacing.

The route has no header policies, so every field the upstream gets is either the client's own (in its
order, names as sent) or one the proxy adds, exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import RawClient
from tests.support.configs import proxy_config
from tests.support.process import SentinelProcess, sentinel
from tests.support.upstream import Seen, UpstreamServer

ADDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-correlation-id")


@pytest.fixture
def plain_proxy(tmp_path: Path, upstream: UpstreamServer) -> Iterator[SentinelProcess]:
    config = (
        "system { worker-threads 1; }\n"
        'listeners { listener "http" { address "127.0.0.1:0"; }; }\n'
        'routes { route "api" { matches { path-prefix "/"; }; upstream "backend"; }; }\n'
        f'upstreams {{ upstream "backend" {{ target "{upstream.address}"; }}; }}\n'
    )
    with sentinel(tmp_path, config) as p:
        yield p


def _client_fields(seen: Seen) -> list[tuple[str, str]]:
    """What the upstream got, without the fields the proxy adds (checked to be there exactly once)."""
    for name in ADDED:
        assert [n for n, _ in seen.headers].count(name) == 1, (name, seen.headers)
    return [(n, v) for n, v in seen.headers if n not in ADDED]


def test_a_head_in_one_read_goes_on_as_received(plain_proxy: SentinelProcess, upstream: UpstreamServer) -> None:
    with RawClient(plain_proxy.port) as client:
        client.send(b"GET /a?x=1 HTTP/1.1\r\nHost: h.test\r\nUser-Agent: t/1\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
        assert client.read_response().status == 200
    seen = upstream.requests[-1]
    assert seen.target == "/a?x=1"
    assert _client_fields(seen) == [("Host", "h.test"), ("User-Agent", "t/1"), ("X-A", "1"), ("X-A", "2")]
    assert seen.header("x-forwarded-host") == "h.test"


def test_unusual_spacing_is_rebuilt_with_the_same_fields(
    plain_proxy: SentinelProcess, upstream: UpstreamServer
) -> None:
    with RawClient(plain_proxy.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost:h.test\r\nX-B:   two  \r\nX-C: \r\n\r\n")
        assert client.read_response().status == 200
    seen = upstream.requests[-1]
    assert _client_fields(seen) == [("Host", "h.test"), ("X-B", "two"), ("X-C", "")]
    # Rebuilt as `name: value` lines from the parsed fields: the spacing after the colon is normalised;
    # trailing whitespace stays as llhttp reports it (insignificant, RFC 9110 §5.5).
    assert seen.head.startswith(b"GET / HTTP/1.1\r\nHost: h.test\r\nX-B: two  \r\nX-C: \r\n")


def test_a_head_split_over_reads(plain_proxy: SentinelProcess, upstream: UpstreamServer) -> None:
    # Two sends usually arrive as two reads (TCP_NODELAY on loopback); either way the result must be the same.
    with RawClient(plain_proxy.port) as client:
        client.send(b"GET /split HTTP/1.1\r\nHost: h.test\r\nX-")
        client.send(b"A: 1\r\n\r\n")
        assert client.read_response().status == 200
    assert _client_fields(upstream.requests[-1]) == [("Host", "h.test"), ("X-A", "1")]


def test_pipelined_heads_and_a_body_that_looks_like_a_head(
    plain_proxy: SentinelProcess, upstream: UpstreamServer
) -> None:
    # The body of the first request holds what looks like a request head with a smuggled field; it
    # arrives in the same read as the real head that follows and must never stand in for it.
    fake = b"GET /fake HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with RawClient(plain_proxy.port) as client:
        client.send(b"POST /one HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\n\r\n" % len(fake) + fake[:10])
        client.send(
            fake[10:]
            + b"GET /two HTTP/1.1\r\nHost: h.test\r\nX-Two: 2\r\n\r\nGET /three HTTP/1.1\r\nHost: h.test\r\n\r\n"
        )
        assert [client.read_response().status for _ in range(3)] == [200, 200, 200]
    one, two, three = upstream.requests[-3:]
    assert (one.target, one.body) == ("/one", fake)
    assert _client_fields(one) == [("Host", "h.test"), ("content-length", str(len(fake)))]
    assert (two.target, _client_fields(two)) == ("/two", [("Host", "h.test"), ("X-Two", "2")])
    assert (three.target, _client_fields(three)) == ("/three", [("Host", "h.test")])


def test_empty_lines_before_a_request_line(plain_proxy: SentinelProcess, upstream: UpstreamServer) -> None:
    with RawClient(plain_proxy.port) as client:
        client.send(b"GET /first HTTP/1.1\r\nHost: h.test\r\n\r\n")
        assert client.read_response().status == 200
        client.send(b"\r\nGET /second HTTP/1.1\r\nHost: h.test\r\nX-A: 1\r\n\r\n")
        assert client.read_response().status == 200
    assert _client_fields(upstream.requests[-1]) == [("Host", "h.test"), ("X-A", "1")]


def test_hop_by_hop_fields_still_go_when_the_head_could_be_forwarded(
    plain_proxy: SentinelProcess, upstream: UpstreamServer
) -> None:
    with RawClient(plain_proxy.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n")
        assert client.read_response().status == 200
    assert _client_fields(upstream.requests[-1]) == [("Host", "h.test"), ("X-Keep", "2")]


# Requests whose heads take the proxy's common path (no policy, no hop-by-hop field, no body) on one
# proxy and its general path on the other, with every framing the response side can need: a length,
# chunked as received, close-delimited re-framed as chunked, close-delimited to an HTTP/1.0 client,
# HTTP/1.0 kept alive, and chunked on a connection the client closes.
_HEADS = (
    b"GET / HTTP/1.1\r\nHost: h.test\r\nX-A: 1\r\n\r\n",
    b"GET /chunked HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET /close HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /chunked HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET /status/204 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h.test\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    b"tracestate: k=v\r\n\r\n",
)
# What the general path's route adds or removes (proxy_config), and what differs from request to request
# (the echo's length counts the added field).
_POLICY_FIELDS = ("x-policy", "x-served-by", "set-cookie")
_VARYING = ("x-correlation-id", "date", "content-length", "traceparent", "traceresponse", "uber-trace-id", "b3")
# Tracing off; W3C trace context with traceresponse (the common path's own trace lines); every propagator
# (the trace fields go through the general list). Spans go to a port where nothing listens.
_TRACING = (
    "",
    'observability { tracing { backend "otlp" { endpoint "http://127.0.0.1:9"; }; sampling-rate 1.0; '
    "response-headers { traceresponse #true; }; }; }\n",
    'observability { tracing { backend "otlp" { endpoint "http://127.0.0.1:9"; }; sampling-rate 1.0; '
    'propagation "tracecontext" "b3" "jaeger"; response-headers { traceresponse #true; }; }; }\n',
)


def _comparable(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (n.lower(), "" if n.lower() in _VARYING or n.lower().startswith("x-b3-") else v)
        for n, v in fields
        if n.lower() not in _POLICY_FIELDS
    ]


@pytest.mark.parametrize("tracing", _TRACING, ids=["untraced", "tracecontext", "all-propagators"])
def test_the_common_path_builds_the_heads_the_general_path_builds(
    tmp_path: Path, upstream: UpstreamServer, tracing: str
) -> None:
    plain_config = (
        "system { worker-threads 1; }\n"
        'listeners { listener "http" { address "127.0.0.1:0"; }; }\n'
        'routes { route "api" { matches { path-prefix "/"; }; upstream "backend"; }; }\n'
        f'upstreams {{ upstream "backend" {{ target "{upstream.address}"; }}; }}\n'
        f"{tracing}"
    )
    (tmp_path / "plain").mkdir()
    (tmp_path / "policies").mkdir()
    with (
        sentinel(tmp_path / "plain", plain_config) as plain,
        sentinel(tmp_path / "policies", proxy_config(upstream.address, extra=tracing)) as policies,
    ):
        for head in _HEADS:
            got = []
            for proxy in (plain, policies):
                with RawClient(proxy.port) as client:
                    client.send(head)
                    resp = client.read_response(head_request=head.startswith(b"HEAD"))
                echo = head.startswith(b"GET / ")  # the body is the request as the upstream saw it
                if tracing:
                    assert resp.header("traceresponse") is not None
                    assert upstream.requests[-1].header("traceparent") is not None
                body = b"" if echo else resp.body
                got.append((_comparable(upstream.requests[-1].headers), _comparable(resp.headers), body))
            assert got[0] == got[1], head
            request_fields = dict(got[0][0])
            if b"Host" in head:
                assert request_fields["x-forwarded-host"] == "h.test"
            else:
                assert request_fields["host"] == upstream.address  # HTTP/1.0 without Host: the target's
                assert "x-forwarded-host" not in request_fields
