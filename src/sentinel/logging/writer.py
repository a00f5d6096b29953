"""The access-log writer in the supervisor: one thread that owns the file, so the event loop never waits
for a slow disk (SPEC §7).

The loop thread hands over whole batches of lines (`write`), the thread writes them in order. Batches
are written whole to a regular file (O_APPEND: one write is never interleaved with another process's
write) and cut at line ends into pieces of at most PIPE_BUF bytes for a pipe (where only such writes
are atomic), so a line never mixes with the application log lines the workers write to the same
stdout. `reopen` (SIGUSR1) is queued like a batch: every line handed over before it goes to the old
file, every line after it to the new one, so rotation loses nothing. If the disk falls more than
`max_pending` bytes behind, batches are dropped and counted.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import stat
import sys
import threading
from typing import Final

from sentinel.logging.app import open_append

log = logging.getLogger("sentinel.access_log")

_REOPEN: Final = b"\x00reopen"
_STOP: Final = b"\x00stop"


class AccessLogWriter:
    def __init__(self, path: str | None, max_pending: int = 64 * 1024 * 1024) -> None:
        self.path = path
        self.fd = open_append(path) if path is not None else sys.stdout.fileno()
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        # Two counters, each written by one thread only: what was handed over and what was written.
        self._queued = 0
        self._written = 0
        self.dropped_lines = 0
        self._thread = threading.Thread(target=self._run, name="sentinel-access-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queued - self._written

    def write(self, data: bytes) -> None:
        """Hand a batch of whole lines to the writer thread (called from the event loop; never blocks)."""
        if self.pending > self._max_pending:
            self.dropped_lines += data.count(b"\n")
            return
        self._queued += len(data)
        self._queue.put(data)

    def reopen(self) -> None:
        self._queue.put(_REOPEN)

    def close(self, timeout: float = 5.0) -> None:
        """Write what was handed over (waiting at most `timeout` seconds), then close the file."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is _STOP:
                break
            if data is _REOPEN:
                self._reopen()
                continue
            try:
                self._write_all(data)
            except OSError as exc:
                log.error("cannot write the access log %s: %s", self.path or "stdout", exc)
            self._written += len(data)
        if self.path is not None:
            os.close(self.fd)

    def _reopen(self) -> None:
        if self.path is None:
            return
        try:
            fd = open_append(self.path)
        except OSError as exc:
            log.error("cannot reopen the access log %s, still writing to the old file: %s", self.path, exc)
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def _write_all(self, data: bytes) -> None:
        fd = self.fd
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
        view = memoryview(data)
        while view:
            piece = view
            if is_pipe and len(view) > select.PIPE_BUF:
                cut = data.rfind(b"\n", len(data) - len(view), len(data) - len(view) + select.PIPE_BUF)
                end = cut + 1 - (len(data) - len(view)) if cut >= 0 else len(view)
                piece = view[:end]
            written = os.write(fd, piece)
            view = view[written:]
