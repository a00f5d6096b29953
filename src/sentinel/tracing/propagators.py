"""B3 (single and multi header) and Jaeger (`uber-trace-id`) propagation, off unless configured with
`propagation "tracecontext" "b3" "jaeger"` (SPEC §6.2). W3C `traceparent` is always read first; these
are read, in the configured order, only when it is absent or invalid, and written beside it.

Ids shorter than W3C's (64-bit B3 trace ids, Jaeger's unpadded hex) are left-padded with zeros; a
missing or zero id makes the header invalid. As in the OpenTelemetry propagators, a B3 context without
a sampling state counts as not sampled, and the debug flag as sampled.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote_to_bytes

from sentinel.tracing.context import FLAG_SAMPLED, SpanContext

_unhexlify: Final = binascii.unhexlify  # Final: compiled, a C static, not a dict lookup per call
_HEX: Final = re.compile(rb"[0-9a-f]{1,32}")
_B3_SINGLE: Final = re.compile(rb"([0-9a-f]{16}|[0-9a-f]{32})-([0-9a-f]{16})(?:-([01d]))?(?:-([0-9a-f]{16}))?")
_B3_SAMPLED: Final = {b"1": True, b"true": True, b"d": True, b"0": False, b"false": False}

B3_HEADERS = frozenset({b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-flags"})
JAEGER_HEADERS = frozenset({b"uber-trace-id"})


def _id(text: bytes, size: int) -> bytes | None:
    """Hex id of up to `size` bytes, left-padded; None if malformed or all zero."""
    if len(text) > size * 2 or not _HEX.fullmatch(text):
        return None
    raw = _unhexlify(text.rjust(size * 2, b"0"))
    return raw if raw.strip(b"\0") else None


def _context(trace_id: bytes | None, span_id: bytes | None, sampled: bool) -> SpanContext | None:
    if trace_id is None or span_id is None:
        return None
    return SpanContext(trace_id, span_id, FLAG_SAMPLED if sampled else 0)


def parse_b3(headers: Mapping[bytes, bytes]) -> SpanContext | None:
    """From `b3` (single header) or, failing that, the `X-B3-*` headers (lower-cased names)."""
    single = headers.get(b"b3")
    if single is not None:
        match = _B3_SINGLE.fullmatch(single.strip().lower())
        if match:
            trace_id, span_id, sampling, _parent = match.groups()
            return _context(_id(trace_id, 16), _id(span_id, 8), sampling in (b"1", b"d"))
    trace = headers.get(b"x-b3-traceid")
    span = headers.get(b"x-b3-spanid")
    if trace is None or span is None:
        return None
    trace = trace.strip().lower()
    if len(trace) not in (16, 32):
        return None
    sampled = _B3_SAMPLED.get(headers.get(b"x-b3-sampled", b"").strip().lower(), False)
    if headers.get(b"x-b3-flags", b"").strip() == b"1":
        sampled = True  # debug
    return _context(_id(trace, 16), _id(span.strip().lower(), 8), sampled)


def parse_jaeger(headers: Mapping[bytes, bytes]) -> SpanContext | None:
    """From `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}` (also URL-encoded)."""
    value = headers.get(b"uber-trace-id")
    if value is None:
        return None
    parts = unquote_to_bytes(value.strip()).lower().split(b":")
    if len(parts) != 4:
        return None
    trace_id, span_id, _parent, flags = parts
    try:
        sampled = bool(int(flags, 16) & 1)
    except ValueError:
        return None
    return _context(_id(trace_id, 16), _id(span_id, 8), sampled)


def b3_headers(trace_id: bytes, span_id: bytes, parent_span_id: bytes, sampled: bool) -> list[tuple[bytes, bytes]]:
    """Single and multi B3 headers for the upstream request (both: services read one or the other)."""
    trace, span, parent = trace_id.hex().encode(), span_id.hex().encode(), parent_span_id.hex().encode()
    flag = b"1" if sampled else b"0"
    return [
        (b"b3", b"%s-%s-%s-%s" % (trace, span, flag, parent)),
        (b"x-b3-traceid", trace),
        (b"x-b3-spanid", span),
        (b"x-b3-parentspanid", parent),
        (b"x-b3-sampled", flag),
    ]


def jaeger_header(trace_id: bytes, span_id: bytes, parent_span_id: bytes, sampled: bool) -> tuple[bytes, bytes]:
    value = b"%s:%s:%s:%d" % (
        trace_id.hex().encode(),
        span_id.hex().encode(),
        parent_span_id.hex().encode(),
        1 if sampled else 0,
    )
    return (b"uber-trace-id", value)
