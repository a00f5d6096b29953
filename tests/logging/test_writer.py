"""The supervisor's access-log writer: frames held briefly in the loop thread, then written in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sentinel.logging import writer as writer_module
from sentinel.logging.writer import AccessLogWriter
from tests.support.process import wait_for


def frame(tag: str, lines: int = 3) -> bytes:
    return b"".join(b'{"frame":"%s","line":%d}\n' % (tag.encode(), n) for n in range(lines))


async def until(condition: object, timeout: float = 10.0) -> None:
    """Yield to the loop until `condition()` holds (its timers run meanwhile)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_frames_of_a_short_while_are_written_together_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    frames = [frame(str(n)) for n in range(5)]

    async def main() -> None:
        writer = AccessLogWriter(str(path))
        for data in frames:
            writer.write(data)
        # Held in this thread until the hand-over: the writer thread cannot have any of it yet.
        assert path.read_bytes() == b""
        assert writer.pending == sum(map(len, frames))
        await until(lambda: writer.pending == 0)
        assert path.read_bytes() == b"".join(frames)
        writer.close()

    asyncio.run(main())


def test_a_full_hand_over_goes_at_once_without_the_timer(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    big = frame("big", lines=writer_module.HANDOFF_BYTES // 20)
    assert len(big) >= writer_module.HANDOFF_BYTES

    async def main() -> None:
        writer = AccessLogWriter(str(path))
        writer.write(big)
        # The loop is blocked here, so no timer could fire: the size alone handed the frame over.
        wait_for(lambda: path.stat().st_size == len(big), what="the big frame on disk")
        writer.close()

    asyncio.run(main())
    assert path.read_bytes() == big


def test_close_and_reopen_write_what_is_held_to_the_right_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    before, after = frame("before"), frame("after")

    async def main() -> None:
        writer = AccessLogWriter(str(path))
        writer.write(before)
        path.rename(rotated)
        writer.reopen()  # held lines were handed over first: they belong to the old file
        writer.write(after)
        writer.close()  # and what is held at shutdown is written, not lost

    asyncio.run(main())
    assert rotated.read_bytes() == before
    assert path.read_bytes() == after
