"""Access-log records, taken in the worker and formatted by the supervisor (SPEC §7).

On the request path a worker only gathers what the line needs into a tuple (`AccessLog.log`) and appends
it to a batch that goes to the supervisor as one ACCESS frame (marshal) at `BATCH` records or at the
worker's next flush (`ipc.batch`). The supervisor formats the lines (`AccessLineFormatter`: JSON or
combined) and is the only writer of the file (`logging.writer`), so lines of several workers never
interleave and SIGUSR1 reopens one file in one place. Formatting there keeps about two microseconds per
request off the worker's event loop. If the supervisor falls behind, records are dropped and counted,
never waited for.
"""

from __future__ import annotations

import json
import marshal
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sentinel.config.model import AccessLogConfig, AccessLogFormat, RouteConfig
from sentinel.ipc import ACCESS
from sentinel.ipc.batch import FrameBatcher
from sentinel.logging.app import rfc3339_ms

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange

BATCH: Final = 256  # records per ACCESS frame (or fewer, at the worker's periodic flush)
_QUERY: Final = '"query":'
_UNROUTED_FIELDS: Final = '"route_id":null,"upstream":null,'
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _plain(text: str) -> bool:
    """True when `text` can go into a JSON string as it is (printable ASCII without quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def json_string(text: str) -> str:
    return f'"{text}"' if _plain(text) else json.dumps(text)


def _opt(text: str | None) -> str:
    return "null" if text is None else json_string(text)


def route_fields(route: RouteConfig) -> str:
    """`"route_id":...,"upstream":...,` of a route's lines: made once per route, at config load."""
    return f'"route_id":{json_string(route.id)},"upstream":{_opt(route.upstream)},'


class _TimeCache:
    """A formatted timestamp and the time unit (second or millisecond) it was made for."""

    __slots__ = ("text", "unit")

    def __init__(self) -> None:
        self.unit = -1
        self.text = ""


# One access-log record: what a line says about a request, as plain values marshal can carry.
#   0 start_ns, 1 end_ns, 2 trace_id (b"" when not logged), 3 span_id, 4 correlation_id, 5 method,
#   6 path, 7 query, 8 HTTP/1.0?, 9 status, 10 body bytes, 11 client ip, 12 user-agent, 13 referer,
#   14 host (bytes or None), 15 the route's pre-formatted fields, 16 upstream target, 17 attempts,
#   18 sampled
Record = tuple[
    int,
    int,
    bytes,
    bytes,
    str,
    bytes,
    str,
    str,
    bool,
    int,
    int,
    str,
    bytes | None,
    bytes | None,
    bytes | None,
    str,
    str | None,
    int,
    bool,
]


class AccessLog:
    """The worker's side: which requests are logged (sample rate), and their records in batches."""

    __slots__ = ("_errors_always", "_random", "_rate", "batch", "with_trace")

    def __init__(
        self,
        config: AccessLogConfig,
        send: Callable[[bytes], None],
        send_buffer_size: Callable[[], int],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.batch = FrameBatcher[Record](ACCESS, _pack_records, send, send_buffer_size, max_items=BATCH)
        self.with_trace = config.include_trace_id
        self._rate = config.sample_rate
        self._errors_always = config.sample_errors_always
        self._random = rng

    def log(self, ex: Exchange, end_ns: int) -> None:
        if self._rate < 1.0:
            keep = (self._errors_always and (ex.status >= 400 or ex.status == 0)) or self._random() < self._rate
            if not keep:
                return
        h = ex.h
        route = ex.route
        tried = ex.tried
        with_ids = self.with_trace and ex.trace_id
        self.batch.add(
            (
                ex.start_ns,
                end_ns,
                ex.trace_id if with_ids else b"",
                ex.span_id if with_ids else b"",
                ex.correlation_id,
                ex.method,
                ex.path,
                ex.query,
                ex.http10,
                ex.status,
                ex.response_bytes,
                ex.proto.client_ip,
                h.get(b"user-agent"),
                h.get(b"referer"),
                h.get(b"host"),
                route.log_fields if route is not None else _UNROUTED_FIELDS,
                tried[-1].key if tried else None,
                ex.attempts,
                ex.sampled,
            )
        )


def _pack_records(records: list[Record]) -> bytes:
    return marshal.dumps(records)


class AccessLineFormatter:
    """The supervisor's side: records from the workers' ACCESS frames into lines of the configured format."""

    __slots__ = ("_clf", "_combined", "_iso", "_targets")

    def __init__(self, config: AccessLogConfig) -> None:
        self._combined = config.format is AccessLogFormat.COMBINED
        self._iso = _TimeCache()
        self._clf = _TimeCache()
        self._targets: dict[str, str] = {}

    def lines(self, payload: bytes) -> bytes:
        """The lines for one ACCESS frame's payload."""
        records: list[Record] = marshal.loads(payload)
        line = self._combined_line if self._combined else self._json_line
        return "".join([line(r) for r in records]).encode("utf-8", "replace")

    def _timestamp(self, ns: int) -> str:
        """RFC 3339 UTC with milliseconds, formatted once per millisecond (busy workers log many per ms)."""
        ms = ns // 1_000_000
        cache = self._iso
        if cache.unit != ms:
            cache.unit = ms
            cache.text = rfc3339_ms(ms)
        return cache.text

    def _json_line(self, r: Record) -> str:
        start_ns, end_ns, trace_id, span_id, cid, method, path, query = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        ua, referer, host = r[12], r[13], r[14]
        ua_s = ua.decode("latin-1") if ua is not None else ""
        referer_s = referer.decode("latin-1") if referer is not None else ""
        host_s = host.decode("latin-1") if host is not None else ""
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
        ids = f'"trace_id":"{trace_id.hex()}","span_id":"{span_id.hex()}",' if trace_id else ""
        target = r[16]
        return (
            f'{{"timestamp":"{self._timestamp(start_ns)}",{ids}"correlation_id":{cid_j},'
            f'"method":"{method.decode("latin-1")}","path":{path_j}{f",{_QUERY}{query_j}" if query else ""},'
            f'"protocol":"{"HTTP/1.0" if r[8] else "HTTP/1.1"}","status":{r[9]},'
            f'"body_bytes":{r[10]},"duration_ms":{(end_ns - start_ns) / 1e6:.3f},'
            f'"client_ip":"{r[11]}","user_agent":{ua_j},"referer":{referer_j},"host":{host_j},'
            f"{r[15]}"
            f'"upstream_addr":{self._target_field(target) if target is not None else "null"},'
            f'"upstream_attempts":{r[17]},"sampled":{"true" if r[18] else "false"}}}\n'
        )

    def _target_field(self, key: str) -> str:
        text = self._targets.get(key)
        if text is None:
            text = self._targets[key] = json_string(key)
        return text

    def _combined_line(self, r: Record) -> str:
        """nginx's `combined`, then the trace id and the duration: `... "referer" "agent" TRACE_ID 1.234ms`."""
        start_ns, end_ns, query = r[0], r[1], r[7]
        second = start_ns // 1_000_000_000
        cache = self._clf
        if cache.unit != second:
            t = time.gmtime(second)
            cache.unit = second
            cache.text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"
        target = r[6] + ("?" + query if query else "")
        trace = f" {r[2].hex()}" if r[2] else ""
        referer, ua = r[13], r[12]
        return (
            f'{r[11]} - - [{cache.text}] "{_clf(r[5].decode("latin-1"))} {_clf(target)} '
            f'{"HTTP/1.0" if r[8] else "HTTP/1.1"}" {r[9]} {r[10]} '
            f'"{_clf(referer.decode("latin-1") if referer else "-")}" '
            f'"{_clf(ua.decode("latin-1") if ua else "-")}"'
            f"{trace} {(end_ns - start_ns) / 1e6:.3f}ms\n"
        )


def _clf(text: str) -> str:
    """Escape as nginx does in its text logs: quotes, backslashes and non-printable bytes as \\xHH."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\x{ord(c) & 0xFF:02X}" for c in text)
