"""B3 and Jaeger propagation (SPEC §6.2, opt-in): parsing tables and the headers sent upstream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sentinel.tracing.propagators import b3_headers, jaeger_header, parse_b3, parse_jaeger
from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.process import sentinel
from tests.support.upstream import UpstreamServer

T32 = "463ac35c9f6413ad48485a3953bb6124"
T16 = "48485a3953bb6124"
S16 = "a2fb4a1d1a96d312"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({b"b3": f"{T32}-{S16}-1".encode()}, (T32, S16, True)),
        ({b"b3": f"{T32}-{S16}-0".encode()}, (T32, S16, False)),
        ({b"b3": f"{T32}-{S16}-d".encode()}, (T32, S16, True)),
        ({b"b3": f"{T32}-{S16}".encode()}, (T32, S16, False)),  # no sampling state: not sampled
        ({b"b3": f"{T16}-{S16}-1-{S16}".encode()}, ("0" * 16 + T16, S16, True)),  # 64-bit trace id padded
        ({b"b3": f"{T32.upper()}-{S16}-1".encode()}, (T32, S16, True)),
        ({b"b3": b"0"}, None),  # sampling only, no ids
        ({b"b3": f"{T32}-{'0' * 16}-1".encode()}, None),
        ({b"b3": f"{'0' * 32}-{S16}-1".encode()}, None),
        ({b"b3": f"{T32}-{S16}-x".encode()}, None),
        ({b"x-b3-traceid": T32.encode(), b"x-b3-spanid": S16.encode(), b"x-b3-sampled": b"1"}, (T32, S16, True)),
        (
            {b"x-b3-traceid": T16.encode(), b"x-b3-spanid": S16.encode(), b"x-b3-sampled": b"true"},
            ("0" * 16 + T16, S16, True),
        ),
        ({b"x-b3-traceid": T32.encode(), b"x-b3-spanid": S16.encode(), b"x-b3-flags": b"1"}, (T32, S16, True)),
        ({b"x-b3-traceid": T32.encode(), b"x-b3-spanid": S16.encode()}, (T32, S16, False)),
        ({b"x-b3-traceid": T32.encode()}, None),
        ({b"x-b3-traceid": b"abc", b"x-b3-spanid": S16.encode()}, None),
        ({}, None),
    ],
)
def test_parse_b3(headers: dict[bytes, bytes], expected: tuple[str, str, bool] | None) -> None:
    ctx = parse_b3(headers)
    if expected is None:
        assert ctx is None
    else:
        assert ctx is not None
        assert (ctx.trace_id.hex(), ctx.span_id.hex(), ctx.sampled) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{T32}:{S16}:0:1", (T32, S16, True)),
        (f"{T32}:{S16}:0:0", (T32, S16, False)),
        (f"{T32}:{S16}:0:3", (T32, S16, True)),  # debug and sampled
        ("abc:de:0:1", ("0" * 29 + "abc", "0" * 14 + "de", True)),  # unpadded hex ids
        (f"{T32}%3A{S16}%3A0%3A1", (T32, S16, True)),  # URL-encoded
        (f"{T32}:{S16}:0", None),
        (f"{T32}:{S16}:0:zz", None),
        (f"0:{S16}:0:1", None),
        (f"{T32}:{'f' * 17}:0:1", None),
    ],
)
def test_parse_jaeger(value: str, expected: tuple[str, str, bool] | None) -> None:
    ctx = parse_jaeger({b"uber-trace-id": value.encode()})
    if expected is None:
        assert ctx is None
    else:
        assert ctx is not None
        assert (ctx.trace_id.hex(), ctx.span_id.hex(), ctx.sampled) == expected


def test_written_headers_parse_back() -> None:
    trace, span, parent = bytes.fromhex(T32), bytes.fromhex(S16), bytes(range(1, 9))
    headers = dict(b3_headers(trace, span, parent, True))
    single = parse_b3({b"b3": headers[b"b3"]})
    multi = parse_b3({k: v for k, v in headers.items() if k != b"b3"})
    name, value = jaeger_header(trace, span, parent, False)
    jaeger = parse_jaeger({name: value})
    for ctx, sampled in ((single, True), (multi, True), (jaeger, False)):
        assert ctx is not None
        assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (trace, span, sampled)


def _config(upstream: UpstreamServer) -> str:
    tracing = (
        'observability {\n    tracing {\n        backend "otlp"\n        sampling-rate 0\n'
        '        propagation "tracecontext" "b3" "jaeger"\n    }\n}\n'
    )
    return proxy_config(upstream.address, extra=tracing).replace(
        "worker-threads 1", "worker-threads 1\n    graceful-shutdown-timeout-secs 1"
    )


def _sent(upstream: UpstreamServer, name: str) -> str:
    value = upstream.requests[-1].header(name)
    assert value is not None, name
    return value


def test_b3_and_jaeger_through_the_proxy(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream)) as proc:
        # No traceparent: the B3 parent is continued, and every format is written upstream.
        request(proc.port, path="/a", headers={"X-B3-TraceId": T32, "X-B3-SpanId": S16, "X-B3-Sampled": "1"})
        traceparent = _sent(upstream, "traceparent")
        match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", traceparent)
        assert match
        trace, client_span, flags = match.groups()
        assert trace == T32
        assert int(flags, 16) & 1  # parent-based: B3 said sampled
        assert _sent(upstream, "b3").startswith(f"{T32}-{client_span}-1-")
        assert _sent(upstream, "x-b3-traceid") == T32
        assert _sent(upstream, "x-b3-spanid") == client_span
        assert _sent(upstream, "uber-trace-id").startswith(f"{T32}:{client_span}:")
        # A Jaeger parent, and the incoming B3 headers are not forwarded as they came.
        request(proc.port, path="/b", headers={"uber-trace-id": f"{T16}:{S16}:0:0"})
        assert _sent(upstream, "traceparent").startswith("00-" + "0" * 16 + T16)
        assert _sent(upstream, "x-b3-sampled") == "0"
        # traceparent wins over the others.
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        request(proc.port, path="/c", headers={"traceparent": parent, "b3": f"{T32}-{S16}-1"})
        assert _sent(upstream, "x-b3-traceid") == "0af7651916cd43dd8448eb211c80319c"


def test_b3_is_ignored_unless_configured(tmp_path: Path, upstream: UpstreamServer) -> None:
    tracing = 'observability {\n    tracing {\n        backend "otlp"\n    }\n}\n'
    config = proxy_config(upstream.address, extra=tracing).replace(
        "worker-threads 1", "worker-threads 1\n    graceful-shutdown-timeout-secs 1"
    )
    with sentinel(tmp_path, config) as proc:
        request(proc.port, path="/a", headers={"b3": f"{T32}-{S16}-1"})
        assert not _sent(upstream, "traceparent").startswith(f"00-{T32}")
        assert _sent(upstream, "b3") == f"{T32}-{S16}-1"  # passed through untouched
