"""A bare uvloop + httptools reverse proxy: the ceiling for a Python proxy on this machine.

    python bench/bare_proxy.py LISTEN_PORT UPSTREAM_PORT

Only what the benchmark's requests need: GET without a body, keep-alive on both sides, one pooled
upstream connection per client connection in flight, response bodies framed by Content-Length. No
routing, no header policy, no limits, no error handling worth the name. `./dev bench --bare` runs it
next to nginx and Sentinel so that Sentinel's cost over the bare minimum is measured, not guessed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import cast

import httptools
import uvloop


class Side(asyncio.Protocol):
    """What both sides do alike: feed httptools, keep the fields but Connection, formatted."""

    transport: asyncio.Transport | None = None
    feed: Callable[[bytes], None]  # the parser's feed_data
    headers: list[bytes]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.feed(data)

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() != b"connection":
            self.headers.append(b"%s: %s\r\n" % (name, value))


class Upstream(Side):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.feed = self.parser.feed_data
        self.client: Client | None = None
        self.headers = []
        self.out: list[bytes] = []

    def on_headers_complete(self) -> None:
        self.out = [b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code(), *self.headers, b"\r\n"]

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.transport is not None:
            client.transport.write(b"".join(self.out))
        self.pool.append(self)


class Client(Side):
    def __init__(self, loop: asyncio.AbstractEventLoop, upstream_port: int, pool: list[Upstream]) -> None:
        self.loop = loop
        self.upstream_port = upstream_port
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.feed = self.parser.feed_data
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (self.parser.get_method(), self.url, b"".join(self.headers))
        if self.pool:
            self.send(self.pool.pop(), head)
        else:
            self.loop.create_task(self.connect(head))

    async def connect(self, head: bytes) -> None:
        _, upstream = await self.loop.create_connection(lambda: Upstream(self.pool), "127.0.0.1", self.upstream_port)
        self.send(upstream, head)

    def send(self, upstream: Upstream, head: bytes) -> None:
        upstream.client = self
        assert upstream.transport is not None
        upstream.transport.write(head)


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    pool: list[Upstream] = []
    server = await loop.create_server(lambda: Client(loop, upstream_port, pool), "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
