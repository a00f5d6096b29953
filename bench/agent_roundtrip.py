"""Agent round trip over the wire, without the proxy: handshake, then N sequential RequestHeaders calls.

    python bench/agent_roundtrip.py SOCKET [N]

Prints p50/p90/p99 in microseconds. The event is the size of a typical proxied request's (a dozen
headers and full metadata), so the figure is what one agent call costs in transport, JSON and the
SDK, as the proxy sees it minus its own encoding.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from sentinel_agent_sdk.protocol import (
    AGENT_RESPONSE,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    REQUEST_HEADERS,
    FrameDecoder,
    encode_frame,
    handshake_request,
)

EVENT = {
    "metadata": {
        "correlation_id": "",
        "request_id": "6f1c1a4e-0f55-4a8e-9d55-2c7f3c1b9e10",
        "client_ip": "127.0.0.1",
        "client_port": 51234,
        "server_name": "api.example.com",
        "protocol": "HTTP/1.1",
        "tls_version": None,
        "tls_cipher": None,
        "route_id": "api",
        "upstream_id": "backend",
        "timestamp": "2026-11-25T18:00:00.000Z",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    },
    "method": "GET",
    "uri": "/api/users?page=2",
    "headers": {
        "host": ["api.example.com"],
        "user-agent": ["curl/8.5.0"],
        "accept": ["application/json"],
        "accept-encoding": ["gzip, br"],
        "authorization": ["Bearer s3cret"],
        "x-forwarded-for": ["10.0.0.1"],
        "cookie": ["session=abc123"],
    },
}


def read_frame(sock: socket.socket, decoder: FrameDecoder) -> tuple[int, bytes]:
    while True:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the agent closed the connection")
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def main() -> int:
    path = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    decoder = FrameDecoder()
    sock.sendall(encode_frame(HANDSHAKE_REQUEST, handshake_request("bench")))
    kind, _ = read_frame(sock, decoder)
    assert kind == HANDSHAKE_RESPONSE
    samples: list[int] = []
    for i in range(count + 500):
        cid = f"bench-{i}"
        EVENT["metadata"]["correlation_id"] = cid  # type: ignore[index]
        frame = encode_frame(REQUEST_HEADERS, {"correlation_id": cid, **EVENT})
        start = time.perf_counter_ns()
        sock.sendall(frame)
        kind, payload = read_frame(sock, decoder)
        elapsed = time.perf_counter_ns() - start
        assert kind == AGENT_RESPONSE
        assert json.loads(payload)["audit"]["custom"]["correlation_id"] == cid
        if i >= 500:  # the first calls warm up both sides
            samples.append(elapsed)
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(len(samples) * p))] / 1000

    print(f"agent round trip over {count} calls: p50 {pct(0.5):.0f} us, p90 {pct(0.9):.0f} us, p99 {pct(0.99):.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
