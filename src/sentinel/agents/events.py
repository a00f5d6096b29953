"""The event payloads the proxy sends (Rust notes §2.3), built from an exchange.

Each builder returns the event's members after `correlation_id` (see connection.event_payload), as
bytes: `"k":v,...}`. What is the same for every agent of a request is built once per request.
"""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING, Any

from sentinel.logging.access import json_string
from sentinel.logging.timestamps import rfc3339_now

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_quote = json_string


def _members(obj: dict[str, Any]) -> bytes:
    return _dumps(obj)[1:].encode()  # without the opening brace


def _uuid4() -> str:
    """A random (version 4) UUID, as the Rust original sends for `request_id`; uuid.uuid4() is slower."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def header_map(headers: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        values = out.get(key)
        if values is None:
            out[key] = [value.decode("latin-1")]
        else:
            values.append(value.decode("latin-1"))
    return out


def route_members(route_id: str, upstream_id: str | None) -> bytes:
    """The metadata members that are the same for every request of a route, encoded at config load."""
    return _members({"tls_version": None, "tls_cipher": None, "route_id": route_id, "upstream_id": upstream_id})[:-1]


_PROTOCOLS = {True: b'"HTTP/1.0"', False: b'"HTTP/1.1"'}


def request_headers_tail(ex: Exchange, route_part: bytes) -> bytes:
    """The RequestHeaders event without the opening of `metadata` and its traceparent, which are per
    agent call (each call is its own span). Built by hand around the route's constant part: this runs
    for every request of a route with agents."""
    proto = ex.proto
    host = ex.host
    return b'"correlation_id":%s,"request_id":"%s","client_ip":%s,"client_port":%d,"server_name":%s,' % (
        _quote(ex.correlation_id).encode(),
        _uuid4().encode(),
        _quote(proto.client_ip).encode(),
        proto.client_port,
        _quote(host.decode("latin-1")).encode() if host is not None else b"null",
    ) + b'"protocol":%s,%s,"timestamp":"%s"},"method":%s,"uri":%s,"headers":%s}' % (
        _PROTOCOLS[ex.http10],
        route_part,
        rfc3339_now().encode(),
        _quote(ex.method.decode("latin-1")).encode(),
        _quote(ex.raw_url.decode("latin-1")).encode(),
        _dumps(header_map(ex.headers)).encode(),
    )


def request_headers_event(tail: bytes, traceparent: bytes) -> bytes:
    if traceparent:
        return b'"metadata":{"traceparent":"' + traceparent + b'",' + tail
    return b'"metadata":{' + tail


def body_event(data: bytes, total_size: int, counter: str) -> bytes:
    """RequestBodyChunk (`bytes_received`) or ResponseBodyChunk (`bytes_sent`): the whole buffered body
    as one last chunk."""
    return _members(
        {
            "data": base64.b64encode(data).decode(),
            "is_last": True,
            "total_size": total_size,
            "chunk_index": 0,
            counter: total_size if counter == "bytes_received" else 0,
        }
    )


def response_headers_event(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    return _members({"status": status, "headers": header_map(headers)})


def request_complete_event(ex: Exchange, duration_ms: float) -> bytes:
    return _members(
        {
            "status": ex.status,
            "duration_ms": round(duration_ms, 3),
            "request_body_size": ex.request_body_bytes,
            "response_body_size": ex.response_bytes,
            "upstream_attempts": ex.attempts,
            "error": ex.error_type() or None,
        }
    )
