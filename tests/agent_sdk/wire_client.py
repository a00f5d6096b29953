"""A minimal proxy side of the agent protocol, written from the wire format alone (reference notes §2.2,
§2.6) so that the SDK is checked against the format and not against its own code: it imports neither
`sentinel_agent_sdk` nor `sentinel`.

v2 frame: u32 big-endian length counting the type byte, the type byte, a JSON payload.
v1 message: u32 big-endian length, a JSON envelope `{"version":1,"event_type":...,"payload":...}`.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Self

HANDSHAKE_REQUEST = 0x01
HANDSHAKE_RESPONSE = 0x02
REQUEST_HEADERS = 0x10
REQUEST_BODY_CHUNK = 0x11
RESPONSE_HEADERS = 0x12
RESPONSE_BODY_CHUNK = 0x13
REQUEST_COMPLETE = 0x14
CONFIGURE = 0x17
AGENT_RESPONSE = 0x20
CANCEL = 0x40
PING = 0x41
PONG = 0x42


class Closed(Exception):
    """The agent closed the connection."""


class _Socket:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Closed(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def is_closed_by_peer(self) -> bool:
        """Wait (up to the socket timeout) for the agent to close; True if it did (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WireClient(_Socket):
    """v2: `handshake()`, then `send(kind, payload)` and `read_frame()` / `read_response()`."""

    def send(self, kind: int, payload: dict[str, Any] | bytes) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_raw(struct.pack(">IB", len(body) + 1, kind) + body)

    def read_frame(self) -> tuple[int, bytes]:
        length, kind = struct.unpack(">IB", self._read_exactly(5))
        return kind, self._read_exactly(length - 1)

    def read_json(self) -> tuple[int, dict[str, Any]]:
        kind, body = self.read_frame()
        value = json.loads(body)
        assert isinstance(value, dict), body
        return kind, value

    def handshake(self, versions: list[int] | None = None) -> dict[str, Any]:
        self.send(
            HANDSHAKE_REQUEST,
            {
                "supported_versions": [2] if versions is None else versions,
                "proxy_id": "sentinel-proxy",
                "proxy_version": "0.0.0-test",
                "config": None,
                "supported_encodings": ["json"],
            },
        )
        kind, answer = self.read_json()
        assert kind == HANDSHAKE_RESPONSE, hex(kind)
        return answer

    def read_response(self) -> dict[str, Any]:
        kind, answer = self.read_json()
        assert kind == AGENT_RESPONSE, hex(kind)
        return answer

    def call(self, kind: int, payload: dict[str, Any]) -> dict[str, Any]:
        self.send(kind, payload)
        return self.read_response()


class WireClientV1(_Socket):
    """v1: one call at a time, `call(event_type, payload)` returns the AgentResponse."""

    def send(self, message: dict[str, Any] | bytes) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.send_raw(struct.pack(">I", len(body)) + body)

    def read(self) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self._read_exactly(4))
        value = json.loads(self._read_exactly(length))
        assert isinstance(value, dict), value
        return value

    def call(self, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.send({"version": 1, "event_type": event_type, "payload": payload})
        return self.read()


# -- event payloads, as the proxy builds them (§2.3) ----------------------------------------------


def metadata(correlation_id: str, *, client_ip: str = "192.0.2.10", traceparent: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "correlation_id": correlation_id,
        "request_id": f"req-{correlation_id}",
        "client_ip": client_ip,
        "client_port": 54321,
        "server_name": "example.test",
        "protocol": "HTTP/1.1",
        "tls_version": None,
        "tls_cipher": None,
        "route_id": "api",
        "upstream_id": "api-backend",
        "timestamp": "2026-01-02T03:04:05.678901+00:00",
    }
    if traceparent is not None:
        meta["traceparent"] = traceparent
    return meta


def request_headers(
    correlation_id: str,
    headers: dict[str, list[str]] | None = None,
    *,
    uri: str = "/api/users?page=2",
    client_ip: str = "192.0.2.10",
    traceparent: str | None = None,
    v2: bool = True,
) -> dict[str, Any]:
    """A RequestHeaders payload; v2 injects `correlation_id` at the top level next to `metadata`."""
    event: dict[str, Any] = {
        "metadata": metadata(correlation_id, client_ip=client_ip, traceparent=traceparent),
        "method": "GET",
        "uri": uri,
        "headers": {"host": ["example.test"], **(headers or {})},
    }
    if v2:
        event["correlation_id"] = correlation_id
    return event
