"""The application log (SPEC §7 `logging { level; format; file }`): JSON lines or a human format.

Every process (supervisor and workers) logs through the standard `logging` package to the same
destination. Each record is one `os.write` of one whole line to a file opened with O_APPEND (or to
stdout), so lines from several processes never interleave. Records about a request carry its
`trace_id` and `span_id` (pass `extra=request_ids(...)`), which puts them next to the access log line
and the trace of the same request. SIGUSR1 reopens the file (log rotation).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Final

from sentinel.config.model import LogFormat, LoggingConfig, LogLevel
from sentinel.logging.timestamps import rfc3339_ms

TRACE: Final = 5
LEVELS: Final = {
    LogLevel.TRACE: TRACE,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}
_NAMES: Final = {TRACE: "trace", logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}
ROOT: Final = "sentinel"


def level_name(levelno: int) -> str:
    return _NAMES.get(levelno, "error" if levelno >= logging.ERROR else "info")


def request_ids(trace_id: bytes, span_id: bytes) -> dict[str, str]:
    """`extra=` for a log record about a request: its W3C trace id and SERVER span id, as hex."""
    return {"trace_id": trace_id.hex(), "span_id": span_id.hex()} if trace_id else {}


class JsonFormatter(logging.Formatter):
    """Compact JSON: timestamp, level, message, logger, then trace_id/span_id when about a request."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": rfc3339_ms(int(record.created * 1000)),
            "level": level_name(record.levelno),
            "message": record.getMessage(),
            "logger": record.name,
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = getattr(record, "span_id", "")
        line["pid"] = record.process
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


class PrettyFormatter(logging.Formatter):
    """`2024-01-15T10:30:45.123Z  WARN sentinel.proxy: message trace_id=… span_id=…` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = rfc3339_ms(int(record.created * 1000))
        text = f"{stamp} {level_name(record.levelno).upper():>5} {record.name}: {record.getMessage()}"
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            text += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def open_append(path: str) -> int:
    """A file descriptor for appending to `path`, creating it (and its directory) if needed."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class LineHandler(logging.Handler):
    """Writes each record as one line with one `os.write` (atomic with O_APPEND, so never interleaved)."""

    def __init__(self, path: str | None) -> None:
        super().__init__()
        self.path = path
        self.fd = open_append(path) if path is not None else sys.stdout.fileno()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            while data:
                data = data[os.write(self.fd, data) :]
        except Exception:
            self.handleError(record)

    def reopen(self) -> None:
        """After log rotation: write to a new file at the same path from now on."""
        if self.path is None:
            return
        fd = open_append(self.path)
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        if self.path is not None and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


def configure(config: LoggingConfig) -> LineHandler:
    """Send the `sentinel` loggers to the configured destination; returns the handler (for `reopen`)."""
    logging.addLevelName(TRACE, "TRACE")
    root = logging.getLogger(ROOT)
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler = LineHandler(config.file)
    handler.setFormatter(JsonFormatter() if config.format is LogFormat.JSON else PrettyFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[config.level])
    root.propagate = False
    return handler
