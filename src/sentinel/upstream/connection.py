"""One HTTP/1.1 connection to an upstream target, and the per-target pool of idle ones.

The connection parses responses with httptools and hands every event to the `ResponseSink` of the
request in flight (the proxy's exchange). A connection closed by the peer while idle marks itself
closed, and the pool never hands it out again.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Final, Protocol, cast

import httptools

from sentinel.proxy.headers import HOP_BY_HOP, REPLACED_DOWNSTREAM
from sentinel.upstream.target import TargetState

# Response fields that never go on to the client as received: hop-by-hop ones (RFC 9110 §7.6.1) and the
# proxy's own X-Correlation-Id. They are set aside while parsing, so the common response needs no
# second pass over its fields.
_SET_ASIDE: Final = HOP_BY_HOP | REPLACED_DOWNSTREAM


class ResponseSink(Protocol):
    """What receives a response, event by event."""

    def on_response_head(
        self,
        status: int,
        fields: list[tuple[bytes, bytes]],
        set_aside: list[tuple[bytes, bytes]],
        has_length: bool,
    ) -> None:
        """`fields`: end-to-end fields as received; `set_aside`: hop-by-hop ones and X-Correlation-Id,
        names lower-cased; `has_length`: a Content-Length field was among them."""

    def on_response_body(self, chunk: bytes) -> None: ...
    def on_response_complete(self) -> None: ...
    def on_upstream_error(self, reason: str, exc: BaseException | None) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_has_length",
        "_headers",
        "_parser",
        "_set_aside",
        "closed",
        "expect_body",
        "head_done",
        "idle_since",
        "last_read",
        "loop",
        "pool",
        "raw_mode",
        "read_timeout",
        "received_any",
        "reused",
        "sink",
        "timer",
        "transport",
    )

    def __init__(self, pool: TargetPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._set_aside: list[tuple[bytes, bytes]] = []
        self._has_length = False
        self.closed = False
        self.reused = False
        self.received_any = False
        self.head_done = False  # the final response head has been parsed
        self.expect_body = True  # False for answers to HEAD
        self.idle_since = 0.0
        self.last_read = 0.0
        self.raw_mode = False  # after a 101: bytes go straight to the sink
        self.read_timeout = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        sink = self.sink
        if sink is not None:
            self.sink = None
            if self.raw_mode:
                sink.on_response_complete()
            elif self.head_done and exc is None and self._close_delimited():
                sink.on_response_complete()  # a clean close ends a close-delimited body
            else:
                # A head cut short, a reset, or a close before the framed body ended: never pass
                # that on as a complete response.
                sink.on_upstream_error("reset" if exc else "closed", exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(True)

    def start(self, sink: ResponseSink, head_request: bool, read_timeout: float) -> None:
        """Bind this connection to one request; its response events go to `sink`.

        The read timeout (time to the first byte, then between reads) is one lazily re-armed timer per
        connection: a request only moves `last_read`, so no timer is created or cancelled per request.
        """
        self.sink = sink
        self.expect_body = not head_request
        self.received_any = False
        self.head_done = False
        self._new_head()
        self.last_read = self.loop.time()
        self.read_timeout = read_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(self.last_read + read_timeout, self._check_read)

    def _check_read(self) -> None:
        self.timer = None
        sink = self.sink
        if sink is None or self.raw_mode:
            return
        due = self.last_read + self.read_timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check_read)
            return
        self.sink = None
        self.abort()
        sink.on_upstream_error("timeout", None)

    def close(self) -> None:
        self.closed = True
        self.sink = None  # we chose to close: nobody is to hear about it
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    # -- reading ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: the peer is confused or closing; never reuse it.
            self.abort()
            return
        if self.raw_mode:
            sink.on_response_body(data)
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
            if self.sink is sink:
                sink.flush()
        except httptools.HttpParserUpgrade as upgrade:
            # After a 101 the rest is the new protocol's bytes.
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            if self.raw_mode and offset < len(data) and self.sink is not None:
                self.sink.on_response_body(data[offset:])
        except httptools.HttpParserError as exc:
            self.sink = None
            self.abort()
            sink.on_upstream_error("malformed_response", exc)

    def _close_delimited(self) -> bool:
        return not self._has_length and not any(name == b"transfer-encoding" for name, _ in self._set_aside)

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in _SET_ASIDE:
            self._set_aside.append((lower, value))
            return
        if lower == b"content-length":
            self._has_length = True
        self._headers.append((name, value))

    def _new_head(self) -> None:
        self._headers = []
        self._set_aside = []
        self._has_length = False

    def on_headers_complete(self) -> None:
        sink = self.sink
        if sink is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._new_head()  # interim answer (100 Continue): the real one follows
            return
        self.head_done = True
        sink.on_response_head(status, self._headers, self._set_aside, self._has_length)
        if status == 101:
            self.raw_mode = True
            return
        if not self.expect_body or status in (204, 304):
            # llhttp cannot be told the request was HEAD; end the message here and start afresh.
            keep_alive = self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return
        self._finish(self._parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        if not keep_alive:
            self.closed = True
        sink.on_response_complete()


class TargetPool:
    """Idle keep-alive connections to one target, most recently used first."""

    __slots__ = ("_idle", "idle_timeout", "loop", "max_idle", "target")

    def __init__(
        self, target: TargetState, max_idle: int, idle_timeout: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.target = target
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.loop = loop
        self._idle: collections.deque[UpstreamConnection] = collections.deque()

    def take_idle(self) -> UpstreamConnection | None:
        now = self.loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and now - conn.idle_since < self.idle_timeout:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: UpstreamConnection(self, self.loop), self.target.host, self.target.port
            ),
            timeout,
        )
        if conn.transport is not None:
            conn.transport.set_write_buffer_limits(high=256 * 1024)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Give back a connection whose exchange finished cleanly; others must be closed instead."""
        if conn.closed or conn.transport is None or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    def sweep(self) -> None:
        """Close connections idle for longer than the idle timeout (called periodically)."""
        now = self.loop.time()
        idle = self._idle
        while idle and (idle[0].closed or now - idle[0].idle_since >= self.idle_timeout):
            idle.popleft().close()

    def close_all(self) -> None:
        while self._idle:
            self._idle.pop().close()

    @property
    def idle_count(self) -> int:
        return len(self._idle)
