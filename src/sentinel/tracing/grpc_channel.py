"""Unary gRPC calls over one HTTP/2 connection of our own (RFC 9113, RFC 7541; gRPC's PROTOCOL-HTTP2).

The span exporter needs exactly one thing from gRPC: send a message (already-encoded bytes) to one method
and read the status and the answer, one call at a time. grpcio's asyncio channel did that at a cost of
about a third of the supervisor's busy time at sampling 1.0 (its call set-up, its own threads waking the
event loop); a batch is one HEADERS frame, a few DATA frames and one answer, which this module sends and
reads on the supervisor's event loop with nothing in between.

What it implements of HTTP/2: the connection preface and SETTINGS (the server's frame size, initial
window and, as far as one call at a time needs it, concurrency), flow control both ways (a request waits
for WINDOW_UPDATE; the client's receive windows are kept open), PING answers, HEADERS with CONTINUATION
and padding, RST_STREAM, GOAWAY (a new connection for the next call) and TLS with ALPN `h2`. Server push
is refused in the SETTINGS. Header blocks are sent as HPACK literals that are never indexed (built once
per channel; only `grpc-timeout` changes per call), and read with the `hpack` package's decoder, which
keeps the server's dynamic table and Huffman strings.

Every failure comes back as a `CallResult` with a gRPC status code, as grpc's own client would report it:
no connection or a lost one is UNAVAILABLE, an exceeded deadline DEADLINE_EXCEEDED (and the stream is
reset), an HTTP status other than 200 is mapped as gRPC's HTTP-to-gRPC table says, a stream reset by the
server by its error code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import ssl
import struct
import urllib.parse
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import hpack

# gRPC status codes (grpc/doc/statuscodes.md).
OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
ABORTED: Final = 10
OUT_OF_RANGE: Final = 11
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
DATA_LOSS: Final = 15
UNAUTHENTICATED: Final = 16
CODE_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# HTTP status of a response without grpc-status → gRPC code (gRPC's doc/http-grpc-status-mapping.md).
_HTTP_TO_GRPC: Final = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}
# RST_STREAM / GOAWAY error codes → gRPC code (what grpc's own clients report).
_REFUSED_STREAM: Final = 0x7
_CANCEL: Final = 0x8
# ENHANCE_YOUR_CALM (0xB) and INADEQUATE_SECURITY (0xC) too; the other codes are INTERNAL.
_RESET_TO_GRPC: Final = {
    _REFUSED_STREAM: UNAVAILABLE,
    _CANCEL: CANCELLED,
    0xB: RESOURCE_EXHAUSTED,
    0xC: PERMISSION_DENIED,
}
_PROTOCOL_ERROR: Final = 0x1
_FLOW_CONTROL_ERROR: Final = 0x3
_FRAME_SIZE_ERROR: Final = 0x6
_COMPRESSION_ERROR: Final = 0x9

_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEAD: Final = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, stream id
# Frame types (RFC 9113 §6); PRIORITY (2) is read and ignored.
_DATA: Final = 0x0
_HEADERS: Final = 0x1
_RST_STREAM: Final = 0x3
_SETTINGS: Final = 0x4
_PUSH_PROMISE: Final = 0x5
_PING: Final = 0x6
_GOAWAY: Final = 0x7
_WINDOW_UPDATE: Final = 0x8
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_ACK: Final = 0x1
_END_HEADERS: Final = 0x4
_PADDED: Final = 0x8
_PRIORITY_FLAG: Final = 0x20
_SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
_SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
_SETTINGS_MAX_FRAME_SIZE: Final = 0x5
_DEFAULT_WINDOW: Final = 65_535
_MAX_WINDOW: Final = 2**31 - 1
_DEFAULT_FRAME_SIZE: Final = 16_384  # the most a frame may carry until the peer says otherwise
_MAX_RESPONSE: Final = 4 * 1024 * 1024  # grpc's default receive limit
_MAX_HEADER_BLOCK: Final = 256 * 1024
# Push off; our receive window per stream as large as allowed (answers are small, but never stall).
_CLIENT_SETTINGS: Final = struct.pack(">HIHI", 0x2, 0, _SETTINGS_INITIAL_WINDOW_SIZE, _MAX_WINDOW)


def _frame_head(kind: int, flags: int, stream: int, length: int) -> bytes:
    return _FRAME_HEAD.pack(length >> 8, length & 0xFF, kind, flags, stream)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _frame_head(kind, flags, stream, len(payload)) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with `first`'s high bits in its first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_string(data: bytes) -> bytes:
    return _hpack_int(len(data), 7) + data  # not Huffman-coded


def _literal(name: bytes | int, value: bytes) -> bytes:
    """A field as a literal never indexed (RFC 7541 §6.2.3): by static-table index, or with its name."""
    if isinstance(name, int):
        return _hpack_int(name, 4, 0x10) + _hpack_string(value)
    return b"\x10" + _hpack_string(name) + _hpack_string(value)


def grpc_timeout(seconds: float) -> bytes:
    """A `grpc-timeout` value: at most eight digits, in milliseconds while they fit."""
    millis = max(1, int(seconds * 1000))
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(int(seconds), 99_999_999)


@dataclass(frozen=True, slots=True)
class CallResult:
    code: int
    message: str = ""  # grpc-message, percent-decoded
    details: bytes = b""  # grpc-status-details-bin (a google.rpc.Status), base64-decoded
    response: bytes = b""  # the answer's message (OK only)

    @property
    def code_name(self) -> str:
        return CODE_NAMES[self.code] if 0 <= self.code < len(CODE_NAMES) else f"code {self.code}"


class _Stream:
    __slots__ = ("data", "done", "ended", "headers", "id", "reset_code", "send_window", "trailers")

    def __init__(self, stream_id: int, send_window: int, done: asyncio.Future[None]) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.done = done
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.data = bytearray()
        self.reset_code: int | None = None
        self.ended = False  # END_STREAM received


class _ConnectionError(Exception):
    """The connection broke or was refused: every open stream fails with UNAVAILABLE."""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in, frames out, flow control."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._decoder = hpack.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.next_stream_id = 1
        self.max_frame_size = _DEFAULT_FRAME_SIZE
        self.initial_window = _DEFAULT_WINDOW
        self.max_streams = 1 << 31
        self.send_window = _DEFAULT_WINDOW
        self._received = 0  # DATA bytes received since the connection window was last topped up
        self._header_block: tuple[int, int, list[bytes]] | None = None  # stream, flags, pieces (CONTINUATION)
        self._window_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed: str | None = None  # why the connection can no longer be used
        self.going_away = False  # GOAWAY received: no new streams

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        transport.writelines(
            [
                _PREFACE,
                _frame(_SETTINGS, 0, 0, _CLIENT_SETTINGS),
                # The connection's receive window as large as allowed, topped up as answers arrive.
                _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - _DEFAULT_WINDOW)),
            ]
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost{f': {exc}' if exc else ''}")

    def pause_writing(self) -> None:
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= 9:
                length = buffer[offset] << 16 | buffer[offset + 1] << 8 | buffer[offset + 2]
                if length > _DEFAULT_FRAME_SIZE:  # the most we allow (our SETTINGS keep the default)
                    raise _ProtocolError(_FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                end = offset + 9 + length
                if len(buffer) < end:
                    break
                kind, flags = buffer[offset + 3], buffer[offset + 4]
                stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                payload = bytes(buffer[offset + 9 : end])
                offset = end
                self._on_frame(kind, flags, stream_id, payload)
        except _ProtocolError as e:
            self._abort(e.code, f"protocol error from the server: {e}")
            return
        del buffer[:offset]

    # -- frames in ----------------------------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is not None and kind != _CONTINUATION:
            raise _ProtocolError(_PROTOCOL_ERROR, "a header block was interrupted")
        if kind == _DATA:
            if stream_id == 0:
                raise _ProtocolError(_PROTOCOL_ERROR, "DATA on stream 0")
            self._on_data(flags, stream_id, _unpadded(flags, payload))
            # Flow control counts the whole payload, padding included (RFC 9113 §6.9.1).
            self._received += len(payload)
            if self._received > _MAX_WINDOW // 2 and self.transport is not None:
                self.transport.write(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
                self._received = 0
        elif kind == _HEADERS:
            if stream_id == 0:
                raise _ProtocolError(_PROTOCOL_ERROR, "HEADERS on stream 0")
            block = _unpadded(flags, payload)
            if flags & _PRIORITY_FLAG:
                block = block[5:]
            self._header_block = (stream_id, flags, [block])
            if flags & _END_HEADERS:
                self._end_header_block()
        elif kind == _CONTINUATION:
            if self._header_block is None or self._header_block[0] != stream_id:
                raise _ProtocolError(_PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._header_block[2].append(payload)
            if sum(map(len, self._header_block[2])) > _MAX_HEADER_BLOCK:
                raise _ProtocolError(_PROTOCOL_ERROR, "a header block over 256 KiB")
            if flags & _END_HEADERS:
                self._end_header_block()
        elif kind == _RST_STREAM:
            if len(payload) != 4:
                raise _ProtocolError(_FRAME_SIZE_ERROR, "an RST_STREAM of a wrong size")
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                stream.reset_code = int.from_bytes(payload, "big")
                self._resolved(stream)
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._on_settings(payload)
        elif kind == _PING:
            if len(payload) != 8:
                raise _ProtocolError(_FRAME_SIZE_ERROR, "a PING of a wrong size")
            if not flags & _ACK and self.transport is not None:
                self.transport.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            self._on_goaway(payload)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _PUSH_PROMISE:
            raise _ProtocolError(_PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).

    def _on_data(self, flags: int, stream_id: int, data: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.data += data
            if len(stream.data) > _MAX_RESPONSE + 5:
                self.reset(stream, _CANCEL)
                stream.reset_code = -1
                self._resolved(stream)
            elif flags & _END_STREAM:
                self._end_stream(stream)

    def _end_header_block(self) -> None:
        assert self._header_block is not None
        stream_id, flags, pieces = self._header_block
        self._header_block = None
        try:
            # Decoded whatever the stream, so that the dynamic table stays in step with the server's.
            fields = [(bytes(n), bytes(v)) for n, v in self._decoder.decode(b"".join(pieces), raw=True)]
        except hpack.HPACKError as e:
            raise _ProtocolError(_COMPRESSION_ERROR, f"unreadable header block ({e})") from None
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.headers is None:
            stream.headers = fields
        else:
            stream.trailers = fields
        if flags & _END_STREAM:
            self._end_stream(stream)

    def _end_stream(self, stream: _Stream) -> None:
        stream.ended = True
        self.streams.pop(stream.id, None)
        self._resolved(stream)

    def _resolved(self, stream: _Stream) -> None:
        """The stream has its outcome; a request still waiting for window to send stops waiting."""
        _resolve(stream.done)
        self._wake_senders()

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "a SETTINGS frame of a wrong size")
        for key, value in struct.iter_unpack(">HI", payload):
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ProtocolError(_FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self.initial_window = value - self.initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                if not _DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    raise _ProtocolError(_PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_frame_size = value
            elif key == _SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
        if self.transport is not None:
            self.transport.write(_frame(_SETTINGS, _ACK, 0))
        self._wake_senders()

    def _on_goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "a GOAWAY of a wrong size")
        self.going_away = True
        last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        for stream_id in [s for s in self.streams if s > last_stream]:
            stream = self.streams.pop(stream_id)
            stream.reset_code = _REFUSED_STREAM  # never processed: safe to send again
            self._resolved(stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "a WINDOW_UPDATE of a wrong size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0 or self.send_window + increment > _MAX_WINDOW:
                raise _ProtocolError(_FLOW_CONTROL_ERROR, "a bad connection WINDOW_UPDATE")
            self.send_window += increment
        elif (stream := self.streams.get(stream_id)) is not None:
            if increment == 0 or stream.send_window + increment > _MAX_WINDOW:
                self.reset(stream, _FLOW_CONTROL_ERROR)
                stream.reset_code = _FLOW_CONTROL_ERROR
                self._resolved(stream)
                return
            stream.send_window += increment
        self._wake_senders()

    # -- frames out ---------------------------------------------------------------------------------

    def open_stream(self) -> _Stream:
        if self.closed is not None:
            raise _ConnectionError(self.closed)
        if self.going_away:
            raise _ConnectionError("the server is going away (GOAWAY)")
        stream = _Stream(self.next_stream_id, self.initial_window, self._loop.create_future())
        self.next_stream_id += 2
        self.streams[stream.id] = stream
        return stream

    async def send_request(self, stream: _Stream, block: bytes, pieces: Sequence[bytes]) -> None:
        """The header block (HEADERS, CONTINUATION if it is large), then the bytes as DATA frames, the last
        one ending the stream: as many frames per write as flow control allows, so that a request usually
        leaves in one system call (each write also wakes the server)."""
        assert self.transport is not None
        size = self.max_frame_size
        first, rest = block[:size], block[size:]
        out: list[bytes | memoryview] = [
            _frame_head(_HEADERS, 0 if rest else _END_HEADERS, stream.id, len(first)),
            first,
        ]
        while rest:
            piece, rest = rest[:size], rest[size:]
            out += [_frame_head(_CONTINUATION, 0 if rest else _END_HEADERS, stream.id, len(piece)), piece]
        views = [memoryview(p) for p in pieces if p]
        while views:
            room = min(stream.send_window, self.send_window)
            if room <= 0:
                if out:
                    self.transport.writelines(out)
                    out = []
                await self._wait_window()
                if self._stopped(stream):
                    return
                continue
            while views and room > 0:
                frame_room = min(room, self.max_frame_size)
                taken = 0
                head_at = len(out)
                out.append(b"")  # the frame's head, once its size is known
                while views and taken < frame_room:
                    view = views[0]
                    if len(view) <= frame_room - taken:
                        out.append(view)
                        taken += len(view)
                        views.pop(0)
                    else:
                        out.append(view[: frame_room - taken])
                        views[0] = view[frame_room - taken :]
                        taken = frame_room
                out[head_at] = _frame_head(_DATA, 0 if views else _END_STREAM, stream.id, taken)
                room -= taken
                stream.send_window -= taken
                self.send_window -= taken
            self.transport.writelines(out)
            out = []
            if self._drain_waiter is not None:
                # Shielded: a deadline here must not cancel the future that later writes wait on too.
                await asyncio.shield(self._drain_waiter)
                if self._stopped(stream):
                    return

    def _stopped(self, stream: _Stream) -> bool:
        """Whether a request being sent must stop: the connection is gone (raises), or the server has
        answered or reset the stream already (the rest of the request is cancelled)."""
        if self.closed is not None:
            raise _ConnectionError(self.closed)
        if not stream.done.done():
            return False
        if stream.ended:
            self.reset(stream, _CANCEL)  # answered early: the server needs no more of the request
        return True

    async def _wait_window(self) -> None:
        if self._window_waiter is None or self._window_waiter.done():
            self._window_waiter = self._loop.create_future()
        await self._window_waiter

    def _wake_senders(self) -> None:
        waiter, self._window_waiter = self._window_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reset(self, stream: _Stream, code: int) -> None:
        """Send RST_STREAM for a stream this side gives up (its outcome is set by the caller)."""
        self.streams.pop(stream.id, None)
        if self.transport is not None and self.closed is None:
            self.transport.write(_frame(_RST_STREAM, 0, stream.id, struct.pack(">I", code)))

    def close(self) -> None:
        if self.transport is not None and self.closed is None:
            self.transport.write(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, 0)))  # no stream of the server's
            self.transport.close()
        self._fail("the channel was closed")

    def _abort(self, code: int, why: str) -> None:
        if self.transport is not None and self.closed is None:
            self.transport.write(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, code)))
            self.transport.close()
        self._fail(why)

    def _fail(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            _resolve(stream.done)
        self._wake_senders()
        self.resume_writing()


class _ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ProtocolError(_PROTOCOL_ERROR, "bad padding")
    return payload[1 : len(payload) - payload[0]]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GrpcChannel:
    """Unary calls to one method of one server, one at a time, on a connection kept open between them."""

    def __init__(
        self,
        host: str,
        port: int,
        authority: str,
        method: str,
        metadata: Sequence[tuple[str, str]] = (),
        user_agent: str = "",
        ssl_context: ssl.SSLContext | None = None,
        compressed: bool = False,
    ) -> None:
        """`metadata`: lower-case keys, values as text; `compressed`: the messages given to `call` are gzip
        bytes (sent with `grpc-encoding: gzip`)."""
        self._host = host
        self._port = port
        self._authority = authority
        self._ssl = ssl_context
        self._compressed = compressed
        fields = [
            b"\x83",  # :method POST (static table 3)
            b"\x87" if ssl_context is not None else b"\x86",  # :scheme https (7) or http (6)
            _literal(4, method.encode()),  # :path
            _literal(1, authority.encode()),  # :authority
            _literal(31, b"application/grpc"),  # content-type
            _literal(b"te", b"trailers"),
        ]
        if user_agent:
            fields.append(_literal(58, user_agent.encode()))
        if compressed:
            fields.append(_literal(b"grpc-encoding", b"gzip"))
        fields += [_literal(k.encode(), v.encode()) for k, v in metadata]
        self._fields = b"".join(fields)
        self._connection: _Connection | None = None

    async def call(self, message: bytes, timeout: float) -> CallResult:
        """Send `message` and wait at most `timeout` seconds for the answer."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._call(message, deadline)
        except TimeoutError:
            return CallResult(DEADLINE_EXCEEDED, f"no answer within {timeout:g} s")
        except _ConnectionError as e:
            return CallResult(UNAVAILABLE, str(e))

    async def _call(self, message: bytes, deadline: float) -> CallResult:
        connection = await self._connect()
        stream = connection.open_stream()
        try:
            remaining = deadline - asyncio.get_running_loop().time()  # the connect took some of it
            block = self._fields + _literal(b"grpc-timeout", grpc_timeout(remaining))
            prefix = struct.pack(">BI", 1 if self._compressed else 0, len(message))
            await connection.send_request(stream, block, (prefix, message))
            await stream.done
        except BaseException:
            # A deadline, or the exporter shutting down: the stream's future may be cancelled with the
            # task, so whether the stream is still open is read from the connection.
            if connection.streams.get(stream.id) is stream:
                connection.reset(stream, _CANCEL)
            raise
        if stream.reset_code is not None:
            if stream.reset_code == -1:
                return CallResult(RESOURCE_EXHAUSTED, f"an answer over {_MAX_RESPONSE} bytes")
            code = _RESET_TO_GRPC.get(stream.reset_code, INTERNAL)
            return CallResult(code, f"stream reset by the server (HTTP/2 error {stream.reset_code:#x})")
        if not stream.ended or stream.headers is None:
            raise _ConnectionError(connection.closed or "the stream ended without an answer")
        return _result(stream)

    async def _connect(self) -> _Connection:
        connection = self._connection
        if (
            connection is not None
            and connection.closed is None
            and not connection.going_away
            and connection.next_stream_id < 2**31 - 1
            and len(connection.streams) < connection.max_streams
        ):
            return connection
        if connection is not None:
            connection.close()
        loop = asyncio.get_running_loop()
        connection = _Connection(loop)
        try:
            await loop.create_connection(
                lambda: connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except (OSError, ssl.SSLError) as e:
            raise _ConnectionError(f"cannot connect to {self._authority}: {e}") from None
        transport = connection.transport
        if connection.closed is not None:  # lost while the handshake's callbacks ran
            raise _ConnectionError(f"cannot connect to {self._authority}: {connection.closed}")
        if self._ssl is not None and transport is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                transport.close()
                raise _ConnectionError(f"{self._authority} did not agree to HTTP/2 (ALPN h2)")
        self._connection = connection
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _result(stream: _Stream) -> CallResult:
    headers = stream.headers or []
    status = next((v for n, v in headers if n == b":status"), b"")
    if status != b"200":
        http = int(status) if status.isdigit() else 0
        return CallResult(_HTTP_TO_GRPC.get(http, UNKNOWN), f"HTTP status {http} from the server")
    fields = dict(stream.trailers if stream.trailers is not None else headers)
    raw_code = fields.get(b"grpc-status")
    if raw_code is None or not raw_code.isdigit():
        return CallResult(INTERNAL, "the answer carries no grpc-status")
    code = int(raw_code)
    if code >= len(CODE_NAMES):
        code = UNKNOWN  # as grpc's clients report a code they do not know
    message = urllib.parse.unquote_to_bytes(fields.get(b"grpc-message", b"")).decode("utf-8", "replace")
    details = b""
    if b"grpc-status-details-bin" in fields:
        raw = fields[b"grpc-status-details-bin"]
        with contextlib.suppress(ValueError):
            details = base64.b64decode(raw + b"=" * (-len(raw) % 4))
    if code != OK:
        return CallResult(code, message, details)
    data = stream.data
    if len(data) < 5 or len(data) != 5 + int.from_bytes(data[1:5], "big"):
        return CallResult(INTERNAL, "the answer is not one gRPC message")
    response = bytes(data[5:])
    if data[0] & 1:
        if dict(headers).get(b"grpc-encoding") != b"gzip":
            return CallResult(INTERNAL, "a compressed answer without a known grpc-encoding")
        try:
            response = gzip.decompress(response)
        except (OSError, EOFError, zlib.error) as e:
            return CallResult(INTERNAL, f"an unreadable compressed answer: {e}")
    return CallResult(OK, message, details, response)
