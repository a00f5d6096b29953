"""Pure-Python cost of one proxied request, without sockets: a profiling aid for the request path.

    .venv/bin/python bench/hotpath.py [N] [off|metrics|access|both|trace-0|trace-0.1|trace-1]

The second argument turns on metric recording, the access log (lines formatted and batched, the
batches discarded), or both; or tracing with every request unsampled (trace-0), a tenth of them sampled
(trace-0.1) or all sampled (trace-1), spans encoded and batched, the batches discarded.

Drives HttpProtocol and UpstreamConnection with in-memory transports: a GET arrives, is routed and
forwarded on a pooled upstream connection, and a small response comes back. What this prints is the
interpreter's share of a request; the rest (syscalls, wake-ups) is measured by bench/proxy_bench.py.
"""

from __future__ import annotations

import asyncio
import sys
import time

from sentinel.compiled import status as compiled_status
from sentinel.config import load_config_text
from sentinel.config.model import AccessLogConfig
from sentinel.logging.access import AccessLog
from sentinel.metrics.recording import WorkerMetrics
from sentinel.proxy.builtins import Builtins, InstanceInfo
from sentinel.proxy.listener import HttpProtocol, ListenerContext
from sentinel.tracing.recorder import SpanRecorder
from sentinel.upstream.cluster import Cluster
from sentinel.upstream.connection import UpstreamConnection

CONFIG = """
listeners { listener "http" { address "127.0.0.1:8080"; }; }
routes { route "api" { matches { path-prefix "/api/"; }; upstream "backend"; }; }
upstreams { upstream "backend" { target "127.0.0.1:3000"; }; }
"""
# No X-Request-Id, as from wrk: the proxy makes the correlation id.
REQUEST = (
    b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 25 Nov 2026 16:00:00 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 24\r\nConnection: keep-alive\r\n\r\nhello from the upstream\n"
)


class FakeTransport:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def main(n: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    tracing = ""
    if mode.startswith("trace-"):
        rate = {"trace-1": "1.0", "trace-0.1": "0.1"}.get(mode, "0")
        tracing = f'observability {{ tracing {{ backend "otlp"; sampling-rate {rate}; }}; }}'
    config = load_config_text(CONFIG + tracing, "hotpath.kdl")
    recorder = SpanRecorder(lambda _batch: None, lambda: 0) if tracing else None
    clusters = {uid: Cluster(u, loop) for uid, u in config.upstreams.items()}
    metrics = WorkerMetrics() if mode in ("metrics", "both") else None
    access = AccessLog(AccessLogConfig(), lambda _batch: None, lambda: 0) if mode in ("access", "both") else None
    builtins = Builtins(config, InstanceInfo())
    ctx = ListenerContext(config, config.listeners[0], builtins, clusters, loop, None, recorder, metrics, access)
    client = FakeTransport(("127.0.0.1", 50000))
    proto = HttpProtocol(ctx)
    proto.connection_made(client)  # type: ignore[arg-type]
    pool = clusters["backend"].pools["127.0.0.1:3000"]
    upstream = UpstreamConnection(pool, loop)
    upstream.connection_made(FakeTransport(("127.0.0.1", 3000)))  # type: ignore[arg-type]
    pool.release(upstream)
    for _ in range(1000):  # warm-up
        proto.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    client.written.clear()
    start = time.perf_counter()
    for _ in range(n):
        proto.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    elapsed = time.perf_counter() - start
    assert len(client.written) == n, len(client.written)
    print(
        f"{elapsed / n * 1e6:.1f} us of Python per proxied request ({n} requests, observability {mode}, "
        f"request path {compiled_status()})"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, sys.argv[2] if len(sys.argv) > 2 else "off"))
