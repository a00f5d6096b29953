"""The supervisor's access-log writer: a thread that reads the workers' access sockets and appends whole
lines to the file, in order per worker."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sentinel.logging.writer import AccessLogWriter
from tests.support.process import wait_for


def lines(tag: str, count: int = 3) -> bytes:
    return b"".join(b'{"worker":"%s","line":%d}\n' % (tag.encode(), n) for n in range(count))


def attached(writer: AccessLogWriter) -> socket.socket:
    """A worker's end of a new access socket whose other end the writer reads."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer.attach(theirs)
    return ours


def test_lines_of_two_workers_arrive_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLogWriter(str(path))
    a, b = attached(writer), attached(writer)
    first_a, first_b, second_a = lines("a"), lines("b"), lines("a2")
    try:
        a.sendall(first_a[:10])  # half a line: held until its end comes
        b.sendall(first_b)
        wait_for(lambda: path.read_bytes() == first_b, what="b's lines")
        a.sendall(first_a[10:] + second_a)
        wait_for(lambda: path.stat().st_size == len(first_a + first_b + second_a), what="a's lines")
    finally:
        a.close()
        b.close()
        writer.close()
    written = path.read_bytes()
    assert written == first_b + first_a + second_a


def test_a_line_cut_by_its_worker_exiting_is_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLogWriter(str(path))
    worker = attached(writer)
    whole = lines("w", 2)
    worker.sendall(whole + b'{"cut":')
    worker.close()
    wait_for(lambda: writer.lines_cut == 1, what="the cut line counted")
    writer.close()
    assert path.read_bytes() == whole


def test_close_writes_what_was_sent_and_reopen_switches_files(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    before, after = lines("before"), lines("after")
    writer = AccessLogWriter(str(path))
    worker = attached(writer)
    try:
        worker.sendall(before)
        wait_for(lambda: path.read_bytes() == before, what="the lines before rotation")
        path.rename(rotated)
        writer.reopen()
        wait_for(path.exists, what="the reopened file")
        worker.sendall(after)  # sent, not yet read when close comes: close reads it first
        writer.close()
    finally:
        worker.close()
    assert rotated.read_bytes() == before
    assert path.read_bytes() == after


def test_finish_closes_once_the_last_worker_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLogWriter(str(path))
    old = attached(writer)
    writer.finish()  # a reload replaced this writer; its old worker is still draining
    old.sendall(lines("old"))
    wait_for(lambda: path.read_bytes() == lines("old"), what="the old worker's lines")
    assert writer.running
    old.close()
    wait_for(lambda: not writer.running, what="the writer to finish")
    writer.close()  # a no-op by now, and safe
    assert path.read_bytes() == lines("old")


def test_a_stuck_destination_pushes_back_to_the_worker_not_into_the_supervisor(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read yet
    writer = AccessLogWriter(str(fifo))
    worker = attached(writer)
    worker.setblocking(False)
    line = b'{"x":"' + b"y" * 1000 + b'"}\n'
    stream = memoryview(line * 10_000)
    sent = 0
    try:
        # Into a 64 KiB pipe nobody drains: the writer blocks on it and stops reading, so the worker's
        # socket fills and says so (the worker then buffers and, past its limit, drops: ipc/batch.py).
        while True:
            try:
                sent += worker.send(stream[sent : sent + len(line)])
            except BlockingIOError:
                break
            assert sent < len(stream), "the writer kept reading into memory"
        assert sent > 64 * 1024
        whole = bytes(stream[:sent]).rfind(b"\n") + 1  # what the writer can write: whole lines only
        os.set_blocking(reader, True)
        received = b""
        while len(received) < whole:
            received += os.read(reader, 1 << 20)
    finally:
        worker.close()
        writer.close()
        os.close(reader)
    assert received == bytes(stream[:whole])
