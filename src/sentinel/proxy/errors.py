"""Error responses the proxy itself produces (SPEC §3): compact JSON with the trace and correlation ids."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


_STATUS_LINES: Final = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode()) for code, phrase in _REASONS.items()}


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK\r\n`, precomputed for the known codes."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def error_body(status: int, message: str, trace_id: str, correlation_id: str) -> bytes:
    return json.dumps(
        {"error": message, "status": status, "trace_id": trace_id, "correlation_id": correlation_id},
        separators=(",", ":"),
    ).encode()
