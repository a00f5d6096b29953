"""Access-log lines, formatted in the worker and handed to the supervisor in batches (SPEC §7).

A line is built with string formatting (values that need JSON escaping go through `json.dumps`, the
rest are copied in), appended to a list, and every `FLUSH_INTERVAL` seconds or `FLUSH_BYTES` the batch
goes to the supervisor as one ACCESS frame on the control socket. The supervisor is the only writer of
the file (`logging.writer`), so lines of several workers never interleave and SIGUSR1 reopens one file
in one place. If the supervisor falls behind, lines are dropped and counted, never waited for.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sentinel.config.model import AccessLogConfig, AccessLogFormat
from sentinel.ipc import ACCESS, encode

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.proxy.listener import RouteRuntime

FLUSH_INTERVAL: Final = 0.2
FLUSH_BYTES: Final = 64 * 1024
MAX_PENDING_BYTES: Final = 8 * 1024 * 1024
_QUERY: Final = '"query":'
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _plain(text: str) -> bool:
    """True when `text` can go into a JSON string as it is (printable ASCII without quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def json_string(text: str) -> str:
    return f'"{text}"' if _plain(text) else json.dumps(text)


def _header(ex: Exchange, name: bytes) -> str | None:
    """A request header as text (for the combined format)."""
    value = ex.h.get(name)
    return None if value is None else value.decode("latin-1")


def _opt(text: str | None) -> str:
    return "null" if text is None else json_string(text)


class _SecondCache:
    """A formatted timestamp and the time unit (second or millisecond) it was made for."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""


class AccessLog:
    __slots__ = (
        "_bytes",
        "_clf",
        "_combined",
        "_errors_always",
        "_fields",
        "_iso",
        "_keep",
        "_pending",
        "_random",
        "_rate",
        "_send",
        "_send_buffer_size",
        "_targets",
        "dropped",
        "with_trace",
    )

    def __init__(
        self,
        config: AccessLogConfig,
        send: Callable[[bytes], None],
        send_buffer_size: Callable[[], int],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._send = send
        self._send_buffer_size = send_buffer_size
        self._combined = config.format is AccessLogFormat.COMBINED
        self.with_trace = config.include_trace_id
        self._rate = config.sample_rate
        self._errors_always = config.sample_errors_always
        self._random = rng
        self._pending: list[str] = []
        self._bytes = 0
        self._iso = _SecondCache()
        self._clf = _SecondCache()
        self.dropped = 0  # lines dropped because the supervisor was behind
        self._fields: dict[int, str] = {}
        self._keep: list[RouteRuntime | None] = []
        self._targets: dict[str, str] = {}

    def log(self, ex: Exchange, end_ns: int) -> None:
        if self._rate < 1.0:
            keep = (self._errors_always and (ex.status >= 400 or ex.status == 0)) or self._random() < self._rate
            if not keep:
                return
        line = self._combined_line(ex, end_ns) if self._combined else self._json_line(ex, end_ns)
        self._pending.append(line)
        self._bytes += len(line)
        if self._bytes >= FLUSH_BYTES:
            self.flush()

    def _timestamp(self, ns: int) -> str:
        """RFC 3339 UTC with milliseconds, formatted once per millisecond (busy workers log many per ms)."""
        ms = ns // 1_000_000
        cache = self._iso
        if cache.second != ms:
            cache.second = ms
            second, rest = divmod(ms, 1000)
            cache.text = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{rest:03d}Z"
        return cache.text

    def _json_line(self, ex: Exchange, end_ns: int) -> str:
        h = ex.h
        ua, referer, host = h.get(b"user-agent"), h.get(b"referer"), h.get(b"host")
        ua_s = ua.decode("latin-1") if ua is not None else ""
        referer_s = referer.decode("latin-1") if referer is not None else ""
        host_s = host.decode("latin-1") if host is not None else ""
        path, query, cid = ex.path, ex.query, ex.correlation_id
        # What the client sent is checked once, all together: nearly always nothing needs escaping.
        if _plain(path + query + cid + ua_s + referer_s + host_s):
            path_j, query_j, cid_j = f'"{path}"', f'"{query}"', f'"{cid}"'
            ua_j = f'"{ua_s}"' if ua is not None else "null"
            referer_j = f'"{referer_s}"' if referer is not None else "null"
            host_j = f'"{host_s}"' if host is not None else "null"
        else:
            path_j, query_j, cid_j = json.dumps(path), json.dumps(query), json.dumps(cid)
            ua_j = json.dumps(ua_s) if ua is not None else "null"
            referer_j = json.dumps(referer_s) if referer is not None else "null"
            host_j = json.dumps(host_s) if host is not None else "null"
        route = ex.route
        tried = ex.tried
        ids = (
            f'"trace_id":"{ex.trace_id.hex()}","span_id":"{ex.span_id.hex()}",'
            if self.with_trace and ex.trace_id
            else ""
        )
        return (
            f'{{"timestamp":"{self._timestamp(ex.start_ns)}",{ids}"correlation_id":{cid_j},'
            f'"method":"{ex.method.decode("latin-1")}","path":{path_j}{f",{_QUERY}{query_j}" if query else ""},'
            f'"protocol":"{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}","status":{ex.status},'
            f'"body_bytes":{ex.response_bytes},"duration_ms":{(end_ns - ex.start_ns) / 1e6:.3f},'
            f'"client_ip":"{ex.proto.client_ip}","user_agent":{ua_j},"referer":{referer_j},"host":{host_j},'
            f"{self._route_fields(route)}"
            f'"upstream_addr":{self._target_field(tried[-1].key) if tried else "null"},'
            f'"upstream_attempts":{ex.attempts},"sampled":{"true" if ex.sampled else "false"}}}\n'
        )

    def _route_fields(self, route: RouteRuntime | None) -> str:
        """`"route_id":...,"upstream":...,` for a route: config values, formatted once per route."""
        key = id(route)
        text = self._fields.get(key)
        if text is None:
            if route is None:
                text = '"route_id":null,"upstream":null,'
            else:
                text = f'"route_id":{json_string(route.config.id)},"upstream":{_opt(route.config.upstream)},'
            self._fields[key] = text
            self._keep.append(route)  # so that its id is not reused while cached
        return text

    def _target_field(self, key: str) -> str:
        text = self._targets.get(key)
        if text is None:
            text = self._targets[key] = json_string(key)
        return text

    def _combined_line(self, ex: Exchange, end_ns: int) -> str:
        """nginx's `combined`, then the trace id and the duration: `... "referer" "agent" TRACE_ID 1.234ms`."""
        second = ex.start_ns // 1_000_000_000
        cache = self._clf
        if cache.second != second:
            t = time.gmtime(second)
            cache.second = second
            cache.text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"
        target = ex.path + ("?" + ex.query if ex.query else "")
        trace = f" {ex.trace_id.hex()}" if self.with_trace and ex.trace_id else ""
        return (
            f'{ex.proto.client_ip} - - [{cache.text}] "{_clf(ex.method.decode("latin-1"))} {_clf(target)} '
            f'{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}" {ex.status} {ex.response_bytes} '
            f'"{_clf(_header(ex, b"referer") or "-")}" "{_clf(_header(ex, b"user-agent") or "-")}"'
            f"{trace} {(end_ns - ex.start_ns) / 1e6:.3f}ms\n"
        )

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._bytes = 0
        if self._send_buffer_size() > MAX_PENDING_BYTES:
            self.dropped += len(pending)
            return
        self._send(encode(ACCESS, "".join(pending).encode("utf-8", "replace")))


def _clf(text: str) -> str:
    """Escape as nginx does in its text logs: quotes, backslashes and non-printable bytes as \\xHH."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\x{ord(c) & 0xFF:02X}" for c in text)
