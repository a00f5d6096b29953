"""Access-log lines, formatted in the worker and handed to the supervisor in batches (SPEC §7).

A JSON line is written as bytes, piece by piece, straight into the batch's buffer (`ipc.batch`): values
that need JSON escaping go through `json.dumps`, the rest are copied in. (Bytes need no encoding, and a
str build would also work out the widest character of every piece.) The batch goes to the supervisor,
unframed, on the worker's access socket (apart from the control socket) at `FLUSH_BYTES` or at the
worker's next flush. The supervisor's writer thread is the only writer of the file (`logging.writer`),
so lines of several workers never interleave and SIGUSR1 reopens one file in one place. If the writer
falls behind, lines are dropped and counted, never waited for.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from librt.strings import BytesWriter

from sentinel.config.model import AccessLogConfig, AccessLogFormat, RouteConfig
from sentinel.ipc.batch import FrameBatcher
from sentinel.logging.timestamps import THREE_DIGITS, rfc3339_ms

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.upstream.target import TargetState

# Small enough that a frame stays in cache and goes in one write (see tracing.recorder.BATCH).
FLUSH_BYTES: Final = 32 * 1024
_UNROUTED_FIELDS: Final = b'"route_id":null,"upstream":null,'
_NO_TARGET_FIELDS: Final = b'"upstream_addr":null,"upstream_attempts":'
# Each byte as "a" if it goes into a JSON string as it is (printable ASCII but the quote and the
# backslash), else "1": a value needs no escaping when its translation `isalpha()`. (Translating with a
# table is one pass; `translate(None, delete)` first builds a table of its own, ~1,000 instructions.)
_JSON_PLAIN: Final = bytes(0x61 if 0x20 <= c < 0x7F and c not in b'"\\' else 0x31 for c in range(256))
# Numbers of a line as text: statuses, and small counts and milliseconds, made once.
_NUMBERS: Final = tuple(str(n).encode() for n in range(1024))
_THREE_DIGITS: Final = tuple(d.encode() for d in THREE_DIGITS)
_DOT_THREE_DIGITS: Final = tuple(b"." + d for d in _THREE_DIGITS)
# A line's protocol and status with the keys around them, for the statuses 100-599.
_STATUS_HTTP11: Final = tuple(b'","protocol":"HTTP/1.1","status":%d,"body_bytes":' % n for n in range(100, 600))
_STATUS_HTTP10: Final = tuple(b'","protocol":"HTTP/1.0","status":%d,"body_bytes":' % n for n in range(100, 600))
# A line's end: the number of upstream attempts (0 to 15) and whether the request was sampled.
_TAILS: Final = 16
_TAILS_SAMPLED: Final = tuple(b'%d,"sampled":true}\n' % n for n in range(_TAILS))
_TAILS_UNSAMPLED: Final = tuple(b'%d,"sampled":false}\n' % n for n in range(_TAILS))
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _plain(text: str) -> bool:
    """True when `text` can go into a JSON string as it is (printable ASCII without quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _escaped(text: str) -> str:
    """The inside of `text`'s JSON string."""
    return json.dumps(text)[1:-1]


def json_string(text: str) -> str:
    return f'"{text}"' if _plain(text) else json.dumps(text)


def _header(ex: Exchange, name: bytes) -> str | None:
    """A request header as text (for the combined format)."""
    value = ex.h.get(name)
    return None if value is None else value.decode("latin-1")


def _json_plain(data: bytes) -> bool:
    """Whether `data` goes into a JSON string as it is (False for b"", which the escaping path handles)."""
    return data.translate(_JSON_PLAIN).isalpha()


def _quote_or_backslash(text: str) -> bool:
    return '"' in text or "\\" in text


def _opt_bytes(value: bytes | None) -> bytes:
    """A header value as a JSON string (its bytes read as Latin-1), or null."""
    if value is None:
        return b"null"
    if _json_plain(value):
        return b'"%s"' % value
    return json.dumps(value.decode("latin-1")).encode()


def _number(n: int) -> bytes:
    return _NUMBERS[n] if 0 <= n < 1024 else str(n).encode()


def _opt(text: str | None) -> str:
    return "null" if text is None else json_string(text)


def millis_bytes(ns: int) -> bytes:
    """A duration in milliseconds with three decimals, rounded half up: what `f"{ns / 1e6:.3f}"` gives
    (but for exact halves), from tables rather than a format spec (compiled, a format spec makes the
    build a `str.format` call). A negative duration (the wall clock stepped back) is logged as 0."""
    us = _micros(ns)
    return b"%s.%s" % (_number(us // 1000), _THREE_DIGITS[us % 1000])


def _micros(ns: int) -> int:
    return (ns + 500) // 1000 if ns > 0 else 0


def millis(ns: int) -> str:
    """`millis_bytes` as text (the combined format)."""
    return millis_bytes(ns).decode()


def _target_fields(target: TargetState) -> bytes:
    """`"upstream_addr":...,"upstream_attempts":` of a target's lines, made on its first line."""
    text = target.log_fields
    if not text:
        text = target.log_fields = f'"upstream_addr":{json_string(target.key)},"upstream_attempts":'.encode()
    return text


def route_fields(route: RouteConfig) -> bytes:
    """`"route_id":...,"upstream":...,` of a route's lines: made once per route, at config load."""
    return f'"route_id":{json_string(route.id)},"upstream":{_opt(route.upstream)},'.encode()


class _TimeCache:
    """A formatted timestamp (ASCII) and the time unit (second or millisecond) it was made for."""

    __slots__ = ("bare", "text", "unit")

    def __init__(self) -> None:
        self.unit = -1
        self.text = b""
        self.bare = b""


class AccessLog:
    __slots__ = ("_clf", "_combined", "_errors_always", "_iso", "_random", "_rate", "batch", "with_trace")

    def __init__(
        self,
        config: AccessLogConfig,
        send: Callable[[list[bytes]], None],
        send_buffer_size: Callable[[], int],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.batch = FrameBatcher(None, send, send_buffer_size, max_bytes=FLUSH_BYTES)
        self._combined = config.format is AccessLogFormat.COMBINED
        self.with_trace = config.include_trace_id
        self._rate = config.sample_rate
        self._errors_always = config.sample_errors_always
        self._random = rng
        self._iso = _TimeCache()
        self._clf = _TimeCache()

    def log(self, ex: Exchange, end_ns: int) -> None:
        if self._rate < 1.0:
            keep = (self._errors_always and (ex.status >= 400 or ex.status == 0)) or self._random() < self._rate
            if not keep:
                return
        batch = self.batch
        if self._combined:
            batch.add(self._combined_line(ex, end_ns).encode("utf-8", "replace"))
        else:
            self._write_json_line(batch.buffer, ex, end_ns)
            batch.written()

    def _write_json_line(self, out: BytesWriter, ex: Exchange, end_ns: int) -> None:
        """The JSON line, written into `out` piece by piece (compiled, each write is a C call and a copy, so
        constant keys are joined to the values next to them wherever a table or a cache can hold both)."""
        h = ex.h
        proto = ex.proto
        # User agent and host repeat on a connection: their JSON is kept per connection, checked once.
        ua, host = h.get(b"user-agent"), ex.host
        if ua != proto.log_ua_raw or host != proto.log_host_raw:
            proto.log_ua_raw, proto.log_host_raw = ua, host
            client = b',"client_ip":"%s","user_agent":%s,"referer":' % (proto.client_ip_bytes, _opt_bytes(ua))
            host_json = b',"host":%s,' % _opt_bytes(host)
            proto.log_client, proto.log_host = client, host_json
            proto.log_no_referer = b"%snull%s" % (client, host_json)
        referer = h.get(b"referer")
        # Read as Latin-1 from the request's bytes, so encoding them back gives those bytes. In origin form
        # without a query (nearly every request) the path is the request target as it came.
        raw_url, path_text, query_text = ex.raw_url, ex.path, ex.query
        if len(raw_url) == len(path_text):
            path, query = raw_url, b""
        else:
            path = path_text.encode("latin-1")
            query = query_text.encode("latin-1") if query_text else b""
        cid_text = ex.correlation_id
        cid = cid_text.encode()
        # The target is printable ASCII (llhttp refuses anything else in it) and so is the correlation id
        # (an incoming one is checked for it; a new one is letters and digits), so only a quote or a
        # backslash needs escaping. (`in` on str is one C search; on bytes, compiled, it first tries the
        # operand as an integer, and translating the bytes through a table costs twice as much.)
        if _quote_or_backslash(ex.url) or (ex.correlation_incoming and _quote_or_backslash(cid_text)):
            path, query, cid = _escaped_bytes(path), _escaped_bytes(query), _escaped_bytes(cid)
        route = ex.route
        tried = ex.tried
        # Every value first, then the writes: nothing can fail half-way through a line in the batch.
        with_ids = self.with_trace and len(ex.trace_id) > 0
        head = self._line_head(ex.start_ns, with_ids)
        trace_hex = ex.trace_hex_bytes() if with_ids else b""
        span_hex = ex.span_hex_bytes() if with_ids else b""
        us = _micros(end_ns - ex.start_ns)
        status = ex.status
        if 100 <= status < 600:
            status_piece = (_STATUS_HTTP10 if ex.http10 else _STATUS_HTTP11)[status - 100]
        else:
            status_piece = b'","protocol":"%s","status":%s,"body_bytes":' % (
                b"HTTP/1.0" if ex.http10 else b"HTTP/1.1",
                str(status).encode(),
            )
        target = _target_fields(tried[-1]) if tried else _NO_TARGET_FIELDS
        attempts = ex.attempts
        if attempts < _TAILS:
            tail = (_TAILS_SAMPLED if ex.sampled else _TAILS_UNSAMPLED)[attempts]
        else:
            tail = b'%d,"sampled":%s}\n' % (attempts, b"true" if ex.sampled else b"false")
        out.write(head)
        if with_ids:
            out.write(trace_hex)
            out.write(b'","span_id":"')
            out.write(span_hex)
        out.write(b'","correlation_id":"')
        out.write(cid)
        out.write(b'","method":"')
        out.write(ex.method)
        out.write(b'","path":"')
        out.write(path)
        if query:
            out.write(b'","query":"')
            out.write(query)
        out.write(status_piece)
        out.write(_number(ex.response_bytes))
        out.write(b',"duration_ms":')
        out.write(_number(us // 1000))
        out.write(_DOT_THREE_DIGITS[us % 1000])
        if referer is None:
            out.write(proto.log_no_referer)
        else:
            out.write(proto.log_client)
            out.write(_opt_bytes(referer))
            out.write(proto.log_host)
        out.write(route.log_fields if route is not None else _UNROUTED_FIELDS)
        out.write(target)
        out.write(tail)

    def _line_head(self, ns: int, with_ids: bool) -> bytes:
        """`{"timestamp":"...` up to the trace id's value (or up to the correlation id's key, without ids),
        made once per millisecond (busy workers log many lines per ms)."""
        ms = ns // 1_000_000
        cache = self._iso
        if cache.unit != ms:
            cache.unit = ms
            stamp = rfc3339_ms(ms).encode()
            cache.text = b'{"timestamp":"%s","trace_id":"' % stamp
            cache.bare = b'{"timestamp":"%s' % stamp
        return cache.text if with_ids else cache.bare

    def _combined_line(self, ex: Exchange, end_ns: int) -> str:
        """nginx's `combined`, then the trace id and the duration: `... "referer" "agent" TRACE_ID 1.234ms`."""
        second = ex.start_ns // 1_000_000_000
        cache = self._clf
        if cache.unit != second:
            t = time.gmtime(second)
            cache.unit = second
            text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"
            cache.text = text.encode()
        target = ex.path + ("?" + ex.query if ex.query else "")
        trace = f" {ex.trace_hex}" if self.with_trace and ex.trace_id else ""
        return (
            f'{ex.proto.client_ip} - - [{cache.text.decode()}] "{_clf(ex.method.decode("latin-1"))} {_clf(target)} '
            f'{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}" {ex.status} {ex.response_bytes} '
            f'"{_clf(_header(ex, b"referer") or "-")}" "{_clf(_header(ex, b"user-agent") or "-")}"'
            f"{trace} {millis(end_ns - ex.start_ns)}ms\n"
        )


def _escaped_bytes(text: bytes) -> bytes:
    """The inside of the JSON string of `text` read as Latin-1 (ASCII, non-ASCII as `\\u` escapes)."""
    return _escaped(text.decode("latin-1")).encode()


def _clf(text: str) -> str:
    """Escape as nginx does in its text logs: quotes, backslashes and non-printable bytes as \\xHH."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\x{ord(c) & 0xFF:02X}" for c in text)
