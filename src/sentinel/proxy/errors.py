"""Error responses the proxy itself produces (SPEC §3): compact JSON with the trace and correlation ids."""

from __future__ import annotations

import json
from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def error_body(status: int, message: str, trace_id: str, correlation_id: str) -> bytes:
    return json.dumps(
        {"error": message, "status": status, "trace_id": trace_id, "correlation_id": correlation_id},
        separators=(",", ":"),
    ).encode()
