"""The supervisor's access-log writer: one thread that owns the file and reads the workers' lines itself, so
neither event loop ever waits for a slow disk (SPEC §7).

Each worker writes its batches of whole lines to a socket of its own (its *access socket*, apart from the
control socket). The thread polls those sockets, reads whatever has arrived and appends it to the file:
the supervisor's event loop never sees a log line. (Routed through the loop, every batch cost a wake-up
of the loop, a task resumption, a copy into the stream reader and a hand-over to this thread, about a
microsecond of supervisor CPU per line: docs/performance.md, session 14.) While the thread waits for the
disk it reads nothing; the socket fills, the worker buffers, and past its limit the worker drops and
counts batches (ipc/batch.py), so a stuck disk costs lines, never a stalled request.

Lines from several workers never interleave: the thread writes only up to the last line end it has read
from a socket and keeps the rest until the line is complete. A regular file gets one `writev` per wake-up
(O_APPEND: never interleaved with another process's write); a pipe gets pieces of at most PIPE_BUF bytes
cut at line ends, since only such writes are atomic there (the workers' application log may share it).
`reopen` (SIGUSR1) is a command to the thread: what it has read before goes to the old file, what it
reads after to the new one, so rotation loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import stat
import sys
import threading
from typing import Final

from sentinel.logging.app import open_append

log = logging.getLogger("sentinel.access_log")

_READ: Final = 256 * 1024  # the most one read of a worker's socket takes
_ATTACH: Final = "attach"
_REOPEN: Final = "reopen"
_FINISH: Final = "finish"
_STOP: Final = "stop"


class _Source:
    """A worker's access socket and the start of a line not yet complete."""

    __slots__ = ("sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tail = b""


class AccessLogWriter:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd = open_append(path) if path is not None else sys.stdout.fileno()
        self._is_pipe = _is_pipe(self.fd)
        self._commands: queue.SimpleQueue[tuple[str, socket.socket | None]] = queue.SimpleQueue()
        # Commands wake the thread through this pipe, which it polls with the workers' sockets.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._closed = False
        self.lines_cut = 0  # incomplete lines dropped because their worker closed its socket mid-line
        self._thread = threading.Thread(target=self._run, name="sentinel-access-log", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """False once the thread has ended (closed, or finished with its last worker gone)."""
        return self._thread.is_alive()

    def attach(self, sock: socket.socket) -> None:
        """Read a worker's lines from `sock` until the worker closes its end; the writer owns `sock` now."""
        self._command(_ATTACH, sock)

    def reopen(self) -> None:
        self._command(_REOPEN)

    def finish(self) -> None:
        """Close the file once every attached worker has closed its socket (after a reload, the old workers
        drain into the destination they were started with)."""
        self._command(_FINISH)

    def close(self, timeout: float = 5.0) -> None:
        """Write what the workers have sent so far (waiting at most `timeout` seconds), then close."""
        if self._closed:
            return
        self._command(_STOP)
        self._thread.join(timeout)
        self._closed = True
        if not self._thread.is_alive():  # (else it is stuck on the disk, and owns the pipe until it returns)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _command(self, kind: str, sock: socket.socket | None = None) -> None:
        if self._closed:
            if sock is not None:
                sock.close()
            return
        self._commands.put((kind, sock))
        # (A full pipe holds wake-ups enough: the thread will see this command too.)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    # -- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        sources: dict[int, _Source] = {}
        finishing = False
        while True:
            ready = poller.poll()
            chunks: list[bytes] = []
            commands = False
            for fd, _ in ready:
                if fd == self._wake_read:
                    commands = True
                else:
                    self._read(sources, poller, fd, chunks)
            if chunks:
                self._write(chunks)
            if commands:
                stop, finish = self._run_commands(sources, poller)
                if stop:
                    self._drain(sources)
                    break
                finishing = finishing or finish
            if finishing and not sources:
                break
        for source in sources.values():
            source.sock.close()
        if self.path is not None:
            os.close(self.fd)

    def _read(self, sources: dict[int, _Source], poller: select.poll, fd: int, chunks: list[bytes]) -> bool:
        """Take what `fd` holds into `chunks` (whole lines only); False once the worker closed its end."""
        source = sources[fd]
        try:
            data = os.read(fd, _READ)
        except BlockingIOError:
            return True
        except OSError as exc:  # a reset socket: the worker is gone
            log.error("cannot read a worker's access-log lines: %s", exc)
            data = b""
        if not data:
            if source.tail:
                self.lines_cut += 1
            poller.unregister(fd)
            source.sock.close()
            del sources[fd]
            return False
        if source.tail:
            data = source.tail + data
        end = data.rfind(b"\n") + 1
        if end == len(data):  # the worker sends whole batches, so this is the usual case: no copy
            source.tail = b""
            chunks.append(data)
        else:
            source.tail = data[end:]
            if end:
                chunks.append(data[:end])
        return True

    def _run_commands(self, sources: dict[int, _Source], poller: select.poll) -> tuple[bool, bool]:
        """Run the queued commands; says whether one was STOP and whether one was FINISH."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        finish = False
        while True:
            try:
                kind, sock = self._commands.get_nowait()
            except queue.Empty:
                return False, finish
            if kind == _ATTACH and sock is not None:
                sock.setblocking(False)
                sources[sock.fileno()] = _Source(sock)
                poller.register(sock.fileno(), select.POLLIN)
            elif kind == _REOPEN:
                self._reopen()
            elif kind == _FINISH:
                finish = True
            elif kind == _STOP:
                return True, finish

    def _drain(self, sources: dict[int, _Source]) -> None:
        """At STOP: whatever the sockets hold now, until each is empty or closed."""
        poller = select.poll()  # a throw-away one: `_read` unregisters closed sockets from it
        for fd in sources:
            poller.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        for fd in list(sources):
            while self._read(sources, poller, fd, chunks) and _readable(fd):
                pass
        if chunks:
            self._write(chunks)

    def _reopen(self) -> None:
        if self.path is None:
            return
        try:
            fd = open_append(self.path)
        except OSError as exc:
            log.error("cannot reopen the access log %s, still writing to the old file: %s", self.path, exc)
            return
        old, self.fd = self.fd, fd
        self._is_pipe = _is_pipe(fd)
        os.close(old)

    def _write(self, chunks: list[bytes]) -> None:
        try:
            if self._is_pipe:
                for data in chunks:
                    _write_to_pipe(self.fd, data)
            else:
                _write_to_file(self.fd, chunks)
        except OSError as exc:
            log.error("cannot write the access log %s: %s", self.path or "stdout", exc)


def _is_pipe(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _write_to_file(fd: int, chunks: list[bytes]) -> None:
    written = os.writev(fd, chunks)
    total = sum(map(len, chunks))
    if written < total:  # a signal or a full disk cut the write short: the rest goes on alone
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


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
