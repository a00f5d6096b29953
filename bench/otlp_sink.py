"""A local OTLP/gRPC collector for benchmarks: accepts every export, counts it, keeps nothing.

    python bench/otlp_sink.py PORT

It stands in for a collector on another machine, but runs on the machine under test, so its own CPU
comes out of the proxy's share: grpcio's server needed 2.4-3.3 µs per proxied request at sampling 1.0
(docs/performance.md). This one speaks just enough HTTP/2 (RFC 9113) for unary gRPC calls and never
decodes a header or a message: it sends its SETTINGS (windows and frames as large as allowed, so a
request arrives in few frames), acknowledges the client's SETTINGS and PINGs, keeps the connection's
flow-control window open, and answers every stream that ends with status 200, an empty
`ExportTraceServiceResponse` and `grpc-status: 0`. On SIGTERM or SIGINT it prints what it received as
one JSON line, `{"exports": N, "bytes": B}` (B: the gRPC messages' bytes, framing included).
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import sys
from typing import cast

import uvloop

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEAD = struct.Struct(">HBBBI")  # length (24 bits: 16 + 8), type, flags, stream id (31 bits)
_DATA, _HEADERS, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x6, 0x7, 0x8
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_MAX_WINDOW = 2**31 - 1
_MAX_FRAME = 2**24 - 1


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


# SETTINGS_INITIAL_WINDOW_SIZE (4) and SETTINGS_MAX_FRAME_SIZE (5), then the connection window opened fully.
_GREETING = _frame(_SETTINGS, 0, 0, struct.pack(">HIHI", 4, _MAX_WINDOW, 5, _MAX_FRAME)) + _frame(
    _WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - 65_535)
)
# HPACK (RFC 7541) with the static table only: ":status: 200" is index 8; content-type (index 31) as a
# literal without indexing; grpc-status as a literal with a new name.
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + b"\x10application/grpc"
_TRAILERS = b"\x00\x0bgrpc-status\x010"
_EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # not compressed, 0 bytes: an empty ExportTraceServiceResponse


class Counts:
    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # the preface, frame headers and small frames; DATA payloads are skipped
        self.preface = False
        self.skip = 0  # DATA payload bytes still to come (counted, not kept)
        self.skip_ends_stream = 0  # the stream to answer once they have come (0: none)
        self.unacknowledged = 0  # DATA bytes received since the connection window was last topped up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.transport.write(_GREETING)

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        view = memoryview(data)
        while view:
            if self.skip:
                n = min(self.skip, len(view))
                self.skip -= n
                view = view[n:]
                if not self.skip and self.skip_ends_stream:
                    self._answer(self.skip_ends_stream, out)
                    self.skip_ends_stream = 0
                continue
            buffer = self.buffer
            if not self.preface:
                need = len(_PREFACE) - len(buffer)
                buffer += view[:need]
                view = view[need:]
                if len(buffer) < len(_PREFACE):
                    break
                if buffer != _PREFACE:
                    self._close()
                    return
                self.preface = True
                buffer.clear()
                continue
            if len(buffer) < 9:  # a frame header
                need = 9 - len(buffer)
                buffer += view[:need]
                view = view[need:]
                if len(buffer) < 9:
                    break
            high, low, kind, flags, stream = _HEAD.unpack_from(buffer)
            length = (high << 8) | low
            stream &= 0x7FFFFFFF
            if kind == _DATA:
                buffer.clear()
                self.counts.bytes += length
                self.unacknowledged += length
                self.skip = length
                ends = stream if flags & _END_STREAM else 0
                if length:
                    self.skip_ends_stream = ends
                elif ends:
                    self._answer(ends, out)
                continue
            need = 9 + length - len(buffer)  # any other frame: small, kept whole
            buffer += view[:need]
            view = view[need:]
            if len(buffer) < 9 + length:
                break
            payload = bytes(buffer[9:])
            buffer.clear()
            if kind == _HEADERS:
                if flags & _END_STREAM:  # a call without a message: answered all the same
                    self._answer(stream, out)
            elif kind == _SETTINGS:
                if not flags & _ACK:
                    out.append(_frame(_SETTINGS, _ACK, 0))
            elif kind == _PING:
                if not flags & _ACK:
                    out.append(_frame(_PING, _ACK, 0, payload))
            elif kind == _GOAWAY:
                self._close()
                return
        if self.unacknowledged >= 1 << 30:
            out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacknowledged)))
            self.unacknowledged = 0
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _answer(self, stream: int, out: list[bytes]) -> None:
        self.counts.exports += 1
        out.append(_frame(_HEADERS, _END_HEADERS, stream, _RESPONSE_HEADERS))
        out.append(_frame(_DATA, 0, stream, _EMPTY_MESSAGE))
        out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _TRAILERS))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def main(port: int) -> None:
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps({"exports": counts.exports, "bytes": counts.bytes}), flush=True)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
