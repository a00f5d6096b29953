"""The standalone metrics endpoint (SPEC §8 `metrics { address; path }`), served by the supervisor.

A deliberately small HTTP/1.1 server: GET or HEAD of the configured path answers the aggregated
exposition, any other path 404, any other method 405; connections are kept alive (Prometheus reuses
them) and a malformed request gets 400 and a close. It is not on the request path, so plain
asyncio streams are fast enough.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Scrape = Callable[[str], Awaitable[tuple[str, bytes]]]  # Accept header -> (content type, body)

_MAX_HEAD = 16 * 1024
_IDLE_TIMEOUT = 120.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


class MetricsServer:
    def __init__(self, host: str, port: int, path: str, scrape: Scrape) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._scrape = scrape
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound address (port 0 picks a free port)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=_MAX_HEAD, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            async with asyncio.timeout(_IDLE_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._answer(writer, 431, "text/plain", b"request head too large\n", close=True)
            return False
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._answer(writer, 400, "text/plain", b"malformed request\n", close=True)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                await self._answer(writer, 400, "text/plain", b"malformed header\n", close=True)
                return False
            headers[name.lower()] = value.strip()
        if "content-length" in headers or "transfer-encoding" in headers:
            # A body we would have to read and skip: not worth it for a scrape endpoint.
            await self._answer(writer, 400, "text/plain", b"request bodies are not accepted\n", close=True)
            return False
        connection = headers.get("connection", "").lower()
        close = "close" in connection if version == "HTTP/1.1" else "keep-alive" not in connection
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await self._answer(writer, 405, "text/plain", b"method not allowed\n", close, extra="allow: GET, HEAD\r\n")
        elif path != self.path:
            await self._answer(writer, 404, "text/plain", b"not found\n", close)
        else:
            content_type, body = await self._scrape(headers.get("accept", ""))
            await self._answer(writer, 200, content_type, body, close, head_only=method == "HEAD")
        return not close

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        close: bool,
        extra: str = "",
        head_only: bool = False,
    ) -> None:
        reason = _REASONS.get(status, "Error")
        connection = "connection: close\r\n" if close else ""
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            f"{extra}{connection}\r\n"
        )
        writer.write(head.encode("latin-1") + (b"" if head_only else body))
        await writer.drain()
