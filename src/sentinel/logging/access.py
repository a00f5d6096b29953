"""Access-log lines, formatted in the worker and handed to the supervisor in batches (SPEC §7).

A line is built with string formatting (values that need JSON escaping go through `json.dumps`, the
rest are copied in) and appended to a batch that goes to the supervisor as one ACCESS frame on the
control socket at `FLUSH_BYTES` or at the worker's next flush (`ipc.batch`). The supervisor is the only writer of
the file (`logging.writer`), so lines of several workers never interleave and SIGUSR1 reopens one file
in one place. If the supervisor falls behind, lines are dropped and counted, never waited for.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sentinel.config.model import AccessLogConfig, AccessLogFormat, RouteConfig
from sentinel.ipc import ACCESS
from sentinel.ipc.batch import FrameBatcher
from sentinel.logging.timestamps import THREE_DIGITS, rfc3339_ms

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange

FLUSH_BYTES: Final = 256 * 1024
# The optional parts of a JSON line, around their values.
_TRACE_OPEN: Final = '"trace_id":"'
_SPAN_OPEN: Final = '","span_id":"'
_QUERY_OPEN: Final = '","query":"'
_IDS_CLOSE: Final = '",'
_UNROUTED_FIELDS: Final = '"route_id":null,"upstream":null,'
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


def _opt_bytes(value: bytes | None) -> str:
    """A header value as a JSON string (its bytes read as Latin-1), or null."""
    return "null" if value is None else json_string(value.decode("latin-1"))


def _opt(text: str | None) -> str:
    return "null" if text is None else json_string(text)


def millis(ns: int) -> str:
    """A duration in milliseconds with three decimals, rounded half up: what `f"{ns / 1e6:.3f}"` gives
    (but for exact halves), without the format spec, which makes mypyc build the whole line with
    `str.format` (about 1 µs a line). A negative duration (the wall clock stepped back) is logged as 0."""
    us = (ns + 500) // 1000 if ns > 0 else 0
    return f"{us // 1000}.{THREE_DIGITS[us % 1000]}"


def route_fields(route: RouteConfig) -> str:
    """`"route_id":...,"upstream":...,` of a route's lines: made once per route, at config load."""
    return f'"route_id":{json_string(route.id)},"upstream":{_opt(route.upstream)},'


class _TimeCache:
    """A formatted timestamp and the time unit (second or millisecond) it was made for."""

    __slots__ = ("text", "unit")

    def __init__(self) -> None:
        self.unit = -1
        self.text = ""


class AccessLog:
    __slots__ = ("_clf", "_combined", "_errors_always", "_iso", "_random", "_rate", "_targets", "batch", "with_trace")

    def __init__(
        self,
        config: AccessLogConfig,
        send: Callable[[list[bytes]], None],
        send_buffer_size: Callable[[], int],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.batch = FrameBatcher[str](ACCESS, _pack_lines, send, send_buffer_size, max_bytes=FLUSH_BYTES)
        self._combined = config.format is AccessLogFormat.COMBINED
        self.with_trace = config.include_trace_id
        self._rate = config.sample_rate
        self._errors_always = config.sample_errors_always
        self._random = rng
        self._iso = _TimeCache()
        self._clf = _TimeCache()
        self._targets: dict[str, str] = {}

    def log(self, ex: Exchange, end_ns: int) -> None:
        if self._rate < 1.0:
            keep = (self._errors_always and (ex.status >= 400 or ex.status == 0)) or self._random() < self._rate
            if not keep:
                return
        self.batch.add(self._combined_line(ex, end_ns) if self._combined else self._json_line(ex, end_ns))

    def _timestamp(self, ns: int) -> str:
        """RFC 3339 UTC with milliseconds, formatted once per millisecond (busy workers log many per ms)."""
        ms = ns // 1_000_000
        cache = self._iso
        if cache.unit != ms:
            cache.unit = ms
            cache.text = rfc3339_ms(ms)
        return cache.text

    def _json_line(self, ex: Exchange, end_ns: int) -> str:
        h = ex.h
        proto = ex.proto
        # User agent and host repeat on a connection: their JSON is kept per connection, checked once.
        ua, host = h.get(b"user-agent"), h.get(b"host")
        if ua != proto.log_ua_raw:
            proto.log_ua_raw = ua
            proto.log_ua = _opt_bytes(ua)
        if host != proto.log_host_raw:
            proto.log_host_raw = host
            proto.log_host = _opt_bytes(host)
        referer = h.get(b"referer")
        path, query, cid = ex.path, ex.query, ex.correlation_id
        # What else the client sent is checked once, all together: nearly always nothing needs escaping.
        if not _plain(path + query + cid):
            path, query, cid = _escaped(path), _escaped(query), _escaped(cid)
        route = ex.route
        tried = ex.tried
        # The line is one f-string, so one build: optional parts are empty strings rather than f-strings
        # of their own. (No conversion flags or format specs in it: either makes mypyc build the whole line
        # with str.format, about three times the instructions.)
        if self.with_trace and ex.trace_id:
            trace_open, trace_id, span_open, span_id, ids_close = (
                _TRACE_OPEN,
                ex.trace_hex,
                _SPAN_OPEN,
                ex.span_id.hex(),
                _IDS_CLOSE,
            )
        else:
            trace_open = trace_id = span_open = span_id = ids_close = ""
        return (
            f'{{"timestamp":"{self._timestamp(ex.start_ns)}",{trace_open}{trace_id}{span_open}{span_id}{ids_close}'
            f'"correlation_id":"{cid}","method":"{ex.method.decode("latin-1")}",'
            f'"path":"{path}{_QUERY_OPEN if query else ""}{query}",'
            f'"protocol":"{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}","status":{ex.status},'
            f'"body_bytes":{ex.response_bytes},"duration_ms":{millis(end_ns - ex.start_ns)},'
            f'"client_ip":"{proto.client_ip}","user_agent":{proto.log_ua},'
            f'"referer":{_opt_bytes(referer) if referer is not None else "null"},"host":{proto.log_host},'
            f"{route.log_fields if route is not None else _UNROUTED_FIELDS}"
            f'"upstream_addr":{self._target_field(tried[-1].key) if tried else "null"},'
            f'"upstream_attempts":{ex.attempts},"sampled":{"true" if ex.sampled else "false"}}}\n'
        )

    def _target_field(self, key: str) -> str:
        text = self._targets.get(key)
        if text is None:
            text = self._targets[key] = json_string(key)
        return text

    def _combined_line(self, ex: Exchange, end_ns: int) -> str:
        """nginx's `combined`, then the trace id and the duration: `... "referer" "agent" TRACE_ID 1.234ms`."""
        second = ex.start_ns // 1_000_000_000
        cache = self._clf
        if cache.unit != second:
            t = time.gmtime(second)
            cache.unit = second
            cache.text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"
        target = ex.path + ("?" + ex.query if ex.query else "")
        trace = f" {ex.trace_hex}" if self.with_trace and ex.trace_id else ""
        return (
            f'{ex.proto.client_ip} - - [{cache.text}] "{_clf(ex.method.decode("latin-1"))} {_clf(target)} '
            f'{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}" {ex.status} {ex.response_bytes} '
            f'"{_clf(_header(ex, b"referer") or "-")}" "{_clf(_header(ex, b"user-agent") or "-")}"'
            f"{trace} {millis(end_ns - ex.start_ns)}ms\n"
        )


def _pack_lines(lines: list[str]) -> list[bytes]:
    return ["".join(lines).encode("utf-8", "replace")]


def _clf(text: str) -> str:
    """Escape as nginx does in its text logs: quotes, backslashes and non-printable bytes as \\xHH."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\x{ord(c) & 0xFF:02X}" for c in text)
