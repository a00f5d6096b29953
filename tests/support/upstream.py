"""A test upstream: a small, independent HTTP/1.1 server on 127.0.0.1 running in a thread.

It parses requests itself (not with httptools, so that the proxy's parser is checked against another
implementation) and answers according to the path:

    /anything            200, JSON echo of method, target, headers, body length
    /chunked             200, chunked body "one" "two" "three"
    /close               200, body delimited by closing the connection
    /status/NNN          that status (no body for 204/304)
    /slow/SECS           waits SECS seconds, then echoes
    /reset               sends a head promising 1000 bytes, 10 bytes, then resets the connection
    /ws                  101 Switching Protocols, then echoes bytes back
    /switch              101 Switching Protocols to a request that did not ask for it
    /partial-head        part of a response head, then closes
    /reset-close-delimited  a body delimited by close, cut by a reset
    /count               reads the body without keeping it, answers with its size
    /secret              200 with header X-Upstream-Secret and a body that says "secret"
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes = b""  # the request head as received, up to and including the blank line

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


@dataclass
class UpstreamServer:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    name: str = "upstream"
    delay: float = 0.0  # added before every answer
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> UpstreamServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, sock=sock))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        lower = {n.lower(): v for n, v in headers}
        path = target.split("?", 1)[0]
        if lower.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        keep = path != "/count"
        body = await self._read_body(reader, lower, keep)
        seen = Seen(method, target, headers, body if keep else b"", head)
        self.requests.append(seen)
        return await self._answer(path, seen, len(body) if keep else int(body or b"0"), writer, reader)

    async def _read_body(self, reader: asyncio.StreamReader, lower: dict[str, str], keep: bool) -> bytes:
        total = 0
        parts: list[bytes] = []
        if lower.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    break
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                total += size
                if keep:
                    parts.append(data)
        elif "content-length" in lower:
            remaining = int(lower["content-length"])
            while remaining:
                data = await reader.read(min(remaining, 1 << 20))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(data)
                total += len(data)
                if keep:
                    parts.append(data)
        return b"".join(parts) if keep else str(total).encode()

    async def _answer(
        self, path: str, seen: Seen, body_len: int, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> bool:
        if self.delay:
            await asyncio.sleep(self.delay)
        if path.startswith("/slow/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        if path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Upstream: chunked\r\n\r\n")
            for part in (b"one", b"two", b"three"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return True
        if path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            return False
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b"" if status in (204, 304) else b"status %d" % status
            length = b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body)
            writer.write(b"HTTP/1.1 %d X\r\n%s\r\n%s" % (status, length, body))
            return True
        if path == "/reset":
            await _send_then_reset(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            return False
        if path == "/partial-head":
            writer.write(b"HTTP/1.1 200 OK\r\nX-A: 1")  # then closes mid-head
            await writer.drain()
            return False
        if path == "/reset-close-delimited":
            await _send_then_reset(writer, b"HTTP/1.1 200 OK\r\n\r\nfirst-part-only")
            return False
        if path == "/switch":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
            await writer.drain()
            return False
        if path == "/ws":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(b"echo:" + data)
                await writer.drain()
            return False
        if path == "/secret":
            body = b"the secret is 42"
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Upstream-Secret: s3cr3t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return True
        if path == "/count":
            body = str(body_len).encode()
        else:
            echo: dict[str, Any] = {
                "upstream": self.name,
                "method": seen.method,
                "target": seen.target,
                "headers": seen.headers,
                "body_length": body_len,
            }
            body = json.dumps(echo).encode()
        extra = b"Set-Cookie: a=1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), extra, b"" if seen.method == "HEAD" else body)
        )
        await writer.drain()
        return True


async def _send_then_reset(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send `data`, then reset the connection (RST, not FIN): a response cut short by a crash."""
    writer.write(data)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
