"""Agent protocol wire format, shared by the SDK (agent side) and the proxy (SPEC §5).

v2 (Unix socket): every frame is a u32 big-endian length that counts the type byte, one type byte,
then a JSON payload. Requests and answers are matched by `correlation_id` (the agent echoes it in
`audit.custom.correlation_id`), so several calls can be in flight on one connection.

v1: a u32 big-endian length, then a JSON envelope `{"version":1,"event_type":...,"payload":...}`;
one call at a time per connection, answered in order.

Standard library only, so that agents need nothing else to speak the protocol.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

# v2 message types (the Rust original's `v2/uds.rs`, not its stale protocol.md table).
HANDSHAKE_REQUEST = 0x01
HANDSHAKE_RESPONSE = 0x02
REQUEST_HEADERS = 0x10
REQUEST_BODY_CHUNK = 0x11
RESPONSE_HEADERS = 0x12
RESPONSE_BODY_CHUNK = 0x13
REQUEST_COMPLETE = 0x14
WEBSOCKET_FRAME = 0x15
GUARDRAIL_INSPECT = 0x16
CONFIGURE = 0x17
AGENT_RESPONSE = 0x20
HEALTH_STATUS = 0x30
METRICS_REPORT = 0x31
CONFIG_UPDATE_REQUEST = 0x32
FLOW_CONTROL = 0x33
CANCEL = 0x40
PING = 0x41
PONG = 0x42

MESSAGE_TYPES = frozenset(
    {
        HANDSHAKE_REQUEST,
        HANDSHAKE_RESPONSE,
        REQUEST_HEADERS,
        REQUEST_BODY_CHUNK,
        RESPONSE_HEADERS,
        RESPONSE_BODY_CHUNK,
        REQUEST_COMPLETE,
        WEBSOCKET_FRAME,
        GUARDRAIL_INSPECT,
        CONFIGURE,
        AGENT_RESPONSE,
        HEALTH_STATUS,
        METRICS_REPORT,
        CONFIG_UPDATE_REQUEST,
        FLOW_CONTROL,
        CANCEL,
        PING,
        PONG,
    }
)

# The events an agent lists in its handshake `supported_events`.
EVENT_NUMBERS = {
    "configure": 0,
    "request_headers": 1,
    "request_body_chunk": 2,
    "response_headers": 3,
    "response_body_chunk": 4,
    "request_complete": 5,
    "websocket_frame": 6,
    "guardrail_inspect": 7,
}

# Event name (v1 `event_type`, snake_case as serde writes it) ↔ v2 message type.
EVENT_MESSAGE_TYPES = {
    "request_headers": REQUEST_HEADERS,
    "request_body_chunk": REQUEST_BODY_CHUNK,
    "response_headers": RESPONSE_HEADERS,
    "response_body_chunk": RESPONSE_BODY_CHUNK,
    "request_complete": REQUEST_COMPLETE,
    "configure": CONFIGURE,
}
MESSAGE_EVENT_NAMES = {kind: name for name, kind in EVENT_MESSAGE_TYPES.items()}

MAX_FRAME_V2 = 16 * 1024 * 1024
MAX_MESSAGE_V1 = 10 * 1024 * 1024
PROTOCOL_VERSION = 2

_V2_HEADER = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")
# NaN and Infinity are not JSON: the Rust side would refuse them.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class ProtocolError(Exception):
    """The peer broke the wire format: the connection cannot be trusted any more."""


def dumps(obj: Any) -> bytes:
    return _dumps(obj).encode()


def encode_frame(kind: int, payload: Any) -> bytes:
    """One v2 frame; `payload` is JSON-encoded unless it is bytes already."""
    body = payload if isinstance(payload, bytes) else dumps(payload)
    if len(body) + 1 > MAX_FRAME_V2:
        raise ProtocolError(f"frame of {len(body) + 1} bytes is over the {MAX_FRAME_V2}-byte limit")
    return _V2_HEADER.pack(len(body) + 1, kind) + body


def encode_v1(message: Any) -> bytes:
    body = message if isinstance(message, bytes) else dumps(message)
    if len(body) > MAX_MESSAGE_V1:
        raise ProtocolError(f"message of {len(body)} bytes is over the {MAX_MESSAGE_V1}-byte limit")
    return _LENGTH.pack(len(body)) + body


class LoopBatch:
    """Frames written together at the end of the event-loop iteration that produced them: one write for
    all the calls (or answers) of one batch of reads, and frames never interleave."""

    __slots__ = ("_frames", "_write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        frames = self._frames
        if not frames:
            asyncio.get_running_loop().call_soon(self.flush)
        frames.append(frame)

    def flush(self) -> None:
        frames = self._frames
        if frames:
            self._write(frames[0] if len(frames) == 1 else b"".join(frames))
            frames.clear()


class FrameDecoder:
    """Cuts a byte stream into v2 frames `(type, payload)`; raises ProtocolError on a bad frame.

    The header is checked as soon as its bytes are in, so a bad length fails at once; a frame is
    collected in a bytearray, so a large one costs one copy, not one per read.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        if not buffer and len(data) >= 5:
            # The common case: whole frames in one read, nothing left over from the last one.
            frames, offset = _cut(data)
            if offset < len(data):
                buffer += memoryview(data)[offset:]
            return frames
        buffer += data
        frames, offset = _cut(buffer)
        del buffer[:offset]
        return frames


def _cut(buffer: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    frames: list[tuple[int, bytes]] = []
    offset = 0
    end = len(buffer)
    while end - offset >= 4:
        (length,) = _LENGTH.unpack_from(buffer, offset)
        if length == 0:
            raise ProtocolError("zero-length frame")
        if length > MAX_FRAME_V2:
            raise ProtocolError(f"frame of {length} bytes is over the {MAX_FRAME_V2}-byte limit")
        if end - offset < 5:
            break
        kind = buffer[offset + 4]
        if kind not in MESSAGE_TYPES:
            raise ProtocolError(f"unknown message type 0x{kind:02x}")
        stop = offset + 4 + length
        if stop > end:
            break
        frames.append((kind, bytes(buffer[offset + 5 : stop])))
        offset = stop
    return frames, offset


class MessageDecoder:
    """Cuts a byte stream into v1 messages (u32 length + JSON bytes)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > MAX_MESSAGE_V1:
                raise ProtocolError(f"message of {length} bytes is over the {MAX_MESSAGE_V1}-byte limit")
            stop = offset + 4 + length
            if stop > end:
                break
            messages.append(bytes(buffer[offset + 4 : stop]))
            offset = stop
        del buffer[:offset]
        return messages


def load_object(payload: bytes) -> dict[str, Any]:
    """A JSON payload that must be an object."""
    try:
        value = _decode(payload.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every message: json.loads with an option builds a new one per call.
_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def handshake_request(proxy_version: str, proxy_id: str = "sentinel-proxy") -> dict[str, Any]:
    return {
        "supported_versions": [PROTOCOL_VERSION],
        "proxy_id": proxy_id,
        "proxy_version": proxy_version,
        "config": None,
        "supported_encodings": ["json"],
    }
