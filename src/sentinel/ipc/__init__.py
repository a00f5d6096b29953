"""The supervisor ↔ worker channel: one Unix stream socket per worker, framed messages.

Frame: u32 big-endian length of what follows, a type byte, then the payload. Type 1 carries a
JSON control message (both ways; metric snapshots and scrapes are control messages too), type 2 a
batch of finished spans, type 3 a batch of access-log lines (worker → supervisor).
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

CONTROL = 1
SPANS = 2  # worker → supervisor: encoded OTLP spans framed as the ScopeSpans.spans field (otlp.frame_spans)
ACCESS = 3  # worker → supervisor: whole access-log lines, UTF-8
_HEADER = struct.Struct(">IB")
MAX_FRAME = 64 * 1024 * 1024


def frame_header(kind: int, payload_size: int) -> bytes:
    """What precedes a payload of `payload_size` bytes in a frame of type `kind`."""
    return _HEADER.pack(payload_size + 1, kind)


def encode(kind: int, payload: bytes) -> bytes:
    return frame_header(kind, len(payload)) + payload


def encode_control(message: dict[str, Any]) -> bytes:
    return encode(CONTROL, json.dumps(message, separators=(",", ":")).encode())


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
