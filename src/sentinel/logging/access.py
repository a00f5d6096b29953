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

FLUSH_INTERVAL: Final = 0.2
FLUSH_BYTES: Final = 64 * 1024
MAX_PENDING_BYTES: Final = 8 * 1024 * 1024
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _plain(text: str) -> bool:
    """True when `text` can go into a JSON string as it is (printable ASCII without quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def json_string(text: str) -> str:
    return f'"{text}"' if _plain(text) else json.dumps(text)


def _header(ex: Exchange, name: bytes) -> str | None:
    value = ex.h.get(name)
    return None if value is None else value.decode("latin-1")


def _opt(text: str | None) -> str:
    return "null" if text is None else json_string(text)


class _SecondCache:
    """The formatted whole-second part of timestamps, recomputed once per second."""

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
        "_iso",
        "_pending",
        "_random",
        "_rate",
        "_send",
        "_send_buffer_size",
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
        second, rest = divmod(ns, 1_000_000_000)
        cache = self._iso
        if cache.second != second:
            cache.second = second
            cache.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{cache.text}.{rest // 1_000_000:03d}Z"

    def _json_line(self, ex: Exchange, end_ns: int) -> str:
        route = ex.route
        tried = ex.tried
        query = f',"query":{json_string(ex.query)}' if ex.query else ""
        ids = (
            f'"trace_id":"{ex.trace_id.hex()}","span_id":"{ex.span_id.hex()}",'
            if self.with_trace and ex.trace_id
            else ""
        )
        return (
            f'{{"timestamp":"{self._timestamp(ex.start_ns)}",{ids}'
            f'"correlation_id":{json_string(ex.correlation_id)},'
            f'"method":"{ex.method.decode("latin-1")}","path":{json_string(ex.path)}{query},'
            f'"protocol":"{"HTTP/1.0" if ex.http10 else "HTTP/1.1"}","status":{ex.status},'
            f'"body_bytes":{ex.response_bytes},"duration_ms":{(end_ns - ex.start_ns) / 1e6:.3f},'
            f'"client_ip":"{ex.proto.client_ip}","user_agent":{_opt(_header(ex, b"user-agent"))},'
            f'"referer":{_opt(_header(ex, b"referer"))},"host":{_opt(_header(ex, b"host"))},'
            f'"route_id":{_opt(route.config.id if route is not None else None)},'
            f'"upstream":{_opt(route.config.upstream if route is not None else None)},'
            f'"upstream_addr":{_opt(tried[-1].key if tried else None)},'
            f'"upstream_attempts":{ex.attempts},"sampled":{"true" if ex.sampled else "false"}}}\n'
        )

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
