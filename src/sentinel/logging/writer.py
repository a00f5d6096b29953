"""The access-log writer in the supervisor: one thread that owns the file, so the event loop never waits
for a slow disk (SPEC §7).

The loop thread hands over batches of whole lines (`write`), the thread writes them in order. What the
workers send in a short while is held and handed over together (`HANDOFF_BYTES`, `HANDOFF_DELAY`): each
hand-over wakes the thread and passes the GIL back and forth, which at one hand-over per worker frame
cost the supervisor about a microsecond per line (docs/performance.md, session 12). The held frames are
written with one `writev` to a regular file (O_APPEND: one write is never interleaved with another
process's write) and cut at line ends into pieces of at most PIPE_BUF bytes for a pipe (where only such
writes are atomic), so a line never mixes with the application log lines the workers write to the same
stdout. `reopen` (SIGUSR1) is queued like a batch: every line handed over before it goes to the old
file, every line after it to the new one, so rotation loses nothing. If the disk falls more than
`max_pending` bytes behind, batches are dropped and counted.
"""

from __future__ import annotations

import asyncio
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
# Held frames go to the thread at this many bytes or frames, or this long after the first of them.
# nginx's `access_log ... buffer=` holds lines in the same way (its `flush=` bounds how long).
HANDOFF_BYTES: Final = 256 * 1024
HANDOFF_FRAMES: Final = 64  # far below IOV_MAX (1024), the most one writev takes
HANDOFF_DELAY: Final = 0.05


class AccessLogWriter:
    def __init__(self, path: str | None, max_pending: int = 64 * 1024 * 1024) -> None:
        self.path = path
        self.fd = open_append(path) if path is not None else sys.stdout.fileno()
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[list[bytes] | bytes] = queue.SimpleQueue()
        # Two counters, each written by one thread only: what was handed over and what was written.
        self._queued = 0
        self._written = 0
        self.dropped_lines = 0
        # Frames held in the loop thread until the next hand-over, and the timer that bounds their wait.
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="sentinel-access-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queued - self._written

    def write(self, data: bytes) -> None:
        """Take a batch of whole lines for the writer thread (called from the event loop; never blocks)."""
        if self.pending > self._max_pending:
            self.dropped_lines += data.count(b"\n")
            return
        self._queued += len(data)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= HANDOFF_BYTES or len(self._held) >= HANDOFF_FRAMES:
            self._hand_over()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside an event loop: nothing would hand the frames over later
                self._hand_over()
                return
            self._timer = loop.call_later(HANDOFF_DELAY, self._hand_over)

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self._queue.put(self._held)
            self._held = []
            self._held_bytes = 0

    def reopen(self) -> None:
        self._hand_over()  # what came before the signal goes to the old file
        self._queue.put(_REOPEN)

    def close(self, timeout: float = 5.0) -> None:
        """Write what was handed over (waiting at most `timeout` seconds), then close the file."""
        self._hand_over()
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if item is _REOPEN:
                self._reopen()
                continue
            frames = [item] if isinstance(item, bytes) else item
            try:
                self._write_all(frames)
            except OSError as exc:
                log.error("cannot write the access log %s: %s", self.path or "stdout", exc)
            self._written += sum(map(len, frames))
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

    def _write_all(self, frames: list[bytes]) -> None:
        fd = self.fd
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            for data in frames:
                self._write_to_pipe(fd, data)
            return
        written = os.writev(fd, frames)
        total = sum(map(len, frames))
        if written < total:  # a signal or a full disk cut the write short: the rest goes on alone
            rest = memoryview(b"".join(frames))[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]

    @staticmethod
    def _write_to_pipe(fd: int, data: bytes) -> None:
        """`data` in pieces of at most PIPE_BUF bytes, each cut at a line end."""
        view = memoryview(data)
        while view:
            piece = view
            if len(view) > select.PIPE_BUF:
                cut = data.rfind(b"\n", len(data) - len(view), len(data) - len(view) + select.PIPE_BUF)
                end = cut + 1 - (len(data) - len(view)) if cut >= 0 else len(view)
                piece = view[:end]
            written = os.write(fd, piece)
            view = view[written:]
