"""Typed views of the event payloads the proxy sends (reference notes §2.3).

Each wrapper keeps the decoded JSON as `.raw`, so a field this SDK does not model is still reachable.
Parsing is lenient about absent optional fields (older proxies omit `traceparent`, for example) but
a field of the wrong type raises `ValueError`, which the server reports as a failed call.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Headers = dict[str, list[str]]


def _str(raw: dict[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _opt_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string or null, got {type(value).__name__}")
    return value


def _int(raw: dict[str, Any], key: str, default: int = 0) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an integer, got {type(value).__name__}")
    return value


def _opt_int(raw: dict[str, Any], key: str) -> int | None:
    return None if raw.get(key) is None else _int(raw, key)


def _float(raw: dict[str, Any], key: str) -> float:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key!r} must be a number, got {type(value).__name__}")
    return float(value)


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be a boolean, got {type(value).__name__}")
    return value


def _headers(raw: dict[str, Any]) -> Headers:
    """`{name: [values]}` with lower-case names; a bare string value is accepted as one value."""
    value = raw.get("headers") or {}
    if not isinstance(value, dict):
        raise ValueError("'headers' must be an object")
    headers: Headers = {}
    for name, values in value.items():
        items = [values] if isinstance(values, str) else values
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"header {name!r} must be a list of strings")
        headers.setdefault(name.lower(), []).extend(items)
    return headers


def _first(headers: Headers, name: str) -> str | None:
    values = headers.get(name.lower())
    return values[0] if values else None


def _data(raw: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(_str(raw, "data"), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"'data' is not standard base64: {exc}") from None


@dataclass(frozen=True, slots=True)
class Metadata:
    correlation_id: str
    request_id: str
    client_ip: str
    client_port: int
    server_name: str | None
    protocol: str
    route_id: str | None
    upstream_id: str | None
    timestamp: str
    traceparent: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Metadata:
        return cls(
            correlation_id=_str(raw, "correlation_id"),
            request_id=_str(raw, "request_id"),
            client_ip=_str(raw, "client_ip"),
            client_port=_int(raw, "client_port"),
            server_name=_opt_str(raw, "server_name"),
            protocol=_str(raw, "protocol", "HTTP/1.1"),
            route_id=_opt_str(raw, "route_id"),
            upstream_id=_opt_str(raw, "upstream_id"),
            timestamp=_str(raw, "timestamp"),
            traceparent=_opt_str(raw, "traceparent"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    metadata: Metadata
    method: str
    uri: str
    headers: Headers
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RequestHeaders:
        metadata = raw.get("metadata")
        if not isinstance(metadata, dict):
            raise ValueError("'metadata' must be an object")
        return cls(Metadata.from_json(metadata), _str(raw, "method", "GET"), _str(raw, "uri", "/"), _headers(raw), raw)

    @property
    def correlation_id(self) -> str:
        # v2 injects it at the top level; v1 has it only in the metadata.
        top = self.raw.get("correlation_id")
        return top if isinstance(top, str) else self.metadata.correlation_id

    def header(self, name: str) -> str | None:
        """The first value of a request header (names are case-insensitive)."""
        return _first(self.headers, name)

    @property
    def path(self) -> str:
        return urlsplit(self.uri).path

    @property
    def query(self) -> str:
        return urlsplit(self.uri).query


@dataclass(frozen=True, slots=True)
class RequestBody:
    correlation_id: str
    data: bytes
    is_last: bool
    chunk_index: int
    total_size: int | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RequestBody:
        return cls(
            _str(raw, "correlation_id"),
            _data(raw),
            _bool(raw, "is_last"),
            _int(raw, "chunk_index"),
            _opt_int(raw, "total_size"),
            raw,
        )


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    correlation_id: str
    status: int
    headers: Headers
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ResponseHeaders:
        return cls(_str(raw, "correlation_id"), _int(raw, "status"), _headers(raw), raw)

    def header(self, name: str) -> str | None:
        """The first value of a response header (names are case-insensitive)."""
        return _first(self.headers, name)


@dataclass(frozen=True, slots=True)
class ResponseBody:
    correlation_id: str
    data: bytes
    is_last: bool
    chunk_index: int
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ResponseBody:
        return cls(_str(raw, "correlation_id"), _data(raw), _bool(raw, "is_last"), _int(raw, "chunk_index"), raw)


@dataclass(frozen=True, slots=True)
class RequestComplete:
    correlation_id: str
    status: int
    duration_ms: float
    request_body_size: int
    response_body_size: int
    upstream_attempts: int
    error: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RequestComplete:
        return cls(
            _str(raw, "correlation_id"),
            _int(raw, "status"),
            _float(raw, "duration_ms"),
            _int(raw, "request_body_size"),
            _int(raw, "response_body_size"),
            _int(raw, "upstream_attempts"),
            _opt_str(raw, "error"),
            raw,
        )
