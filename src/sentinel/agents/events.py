"""The event payloads the proxy sends (Rust notes §2.3), built from an exchange.

Each builder returns the event's members after `correlation_id` (see connection.event_payload), as
bytes: `"k":v,...}`. What is the same for every agent of a request is built once per request.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from sentinel.logging.app import rfc3339_now

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _members(obj: dict[str, Any]) -> bytes:
    return _dumps(obj)[1:].encode()  # without the opening brace


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


def request_headers_tail(ex: Exchange) -> bytes:
    """The RequestHeaders event without the opening of `metadata` and its traceparent, which are per
    agent call (each call is its own span)."""
    proto = ex.proto
    route = ex.route
    host = ex.h.get(b"host")
    metadata = {
        "correlation_id": ex.correlation_id,
        "request_id": str(uuid.UUID(bytes=os.urandom(16), version=4)),
        "client_ip": proto.client_ip,
        "client_port": proto.client_port,
        "server_name": host.decode("latin-1") if host is not None else None,
        "protocol": "HTTP/1.0" if ex.http10 else "HTTP/1.1",
        "tls_version": None,
        "tls_cipher": None,
        "route_id": route.config.id if route is not None else None,
        "upstream_id": route.config.upstream if route is not None else None,
        "timestamp": rfc3339_now(),
    }
    return (
        _members(metadata)
        + b","
        + _members(
            {
                "method": ex.method.decode("latin-1"),
                "uri": ex.raw_url.decode("latin-1"),
                "headers": header_map(ex.headers),
            }
        )
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
