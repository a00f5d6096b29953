"""The supervisor ↔ worker channel: one Unix stream socket per worker, framed messages.

Frame: u32 big-endian length of what follows, a type byte, then the payload. Type 1 carries a
JSON control message (both ways; metric snapshots and scrapes are control messages too), type 2 a
batch of finished spans (worker → supervisor). Access-log lines have a socket of their own
(logging/writer.py), read by the supervisor's writer thread rather than its event loop.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

CONTROL = 1
SPANS = 2  # worker → supervisor: encoded OTLP spans framed as the ScopeSpans.spans field (otlp.frame_spans)
_HEADER = struct.Struct(">IB")
MAX_FRAME = 64 * 1024 * 1024


def frame_header(kind: int, payload_size: int) -> bytes:
    """What precedes a payload of `payload_size` bytes in a frame of type `kind`."""
    return _HEADER.pack(payload_size + 1, kind)


def encode(kind: int, payload: bytes) -> bytes:
    return frame_header(kind, len(payload)) + payload


def encode_control(message: dict[str, Any]) -> bytes:
    return encode(CONTROL, json.dumps(message, separators=(",", ":")).encode())


class FrameSplitter:
    """Cuts frames out of a stream read in chunks of any size (a chunk may hold several frames, or part of
    one): a reader of many frames resumes once per read instead of twice per frame (`read_frame`)."""

    __slots__ = ("_need", "_rest")

    def __init__(self) -> None:
        self._rest = bytearray()  # the start of a frame not yet whole ...
        self._need = 0  # ... and the bytes it has when it is (header and payload; the header's if unknown)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by `data`, in order; raises ValueError on a bad length (as `read_frame`)."""
        rest = self._rest
        if rest:
            rest += data  # amortised: a large frame arriving in many reads is not copied once per read
            if len(rest) < self._need:
                return []
            data = bytes(rest)
            rest.clear()
        frames: list[tuple[int, bytes]] = []
        at, end, size = 0, len(data), _HEADER.size
        need = size
        while end - at >= size:
            length, kind = _HEADER.unpack_from(data, at)
            if length < 1 or length > MAX_FRAME:
                raise ValueError(f"bad frame length {length}")
            stop = at + size + length - 1
            if stop > end:
                need = stop - at
                break
            frames.append((kind, data[at + size : stop]))
            at = stop
        if at < end:
            rest += data[at:]
            self._need = need
        return frames


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, or None at end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    length, kind = _HEADER.unpack(header)
    if length < 1 or length > MAX_FRAME:
        raise ValueError(f"bad frame length {length}")
    try:
        payload = await reader.readexactly(length - 1)
    except asyncio.IncompleteReadError:
        return None
    return kind, payload


def decode_control(payload: bytes) -> dict[str, Any]:
    message = json.loads(payload)
    if not isinstance(message, dict):
        raise ValueError("control message is not an object")
    return message
