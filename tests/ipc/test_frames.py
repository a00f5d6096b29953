"""FrameSplitter: the frames of a stream, however its reads cut it."""

from __future__ import annotations

import random

import pytest

from sentinel.ipc import CONTROL, MAX_FRAME, SPANS, FrameSplitter, encode, frame_header

FRAMES = [(CONTROL, b'{"type":"ready"}'), (SPANS, bytes(range(256)) * 300), (SPANS, b"line\n" * 7), (CONTROL, b"")]
STREAM = b"".join(encode(kind, payload) for kind, payload in FRAMES)


def split(stream: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    splitter = FrameSplitter()
    out: list[tuple[int, bytes]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(splitter.feed(stream[start:end]))
    return out


def test_one_read_with_every_frame() -> None:
    assert split(STREAM, []) == FRAMES


def test_a_read_per_byte() -> None:
    assert split(STREAM, list(range(1, len(STREAM)))) == FRAMES


@pytest.mark.parametrize("seed", range(20))
def test_reads_cut_anywhere(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 40)))
    assert split(STREAM, cuts) == FRAMES


def test_a_frame_cut_short_by_the_end_of_the_stream_is_not_returned() -> None:
    assert split(STREAM[:-3], [10, 500]) == FRAMES[:-1]


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1])
def test_a_bad_length_is_an_error(length: int) -> None:
    header = frame_header(SPANS, 0)
    bad = length.to_bytes(4, "big") + header[4:]
    with pytest.raises(ValueError, match="bad frame length"):
        FrameSplitter().feed(encode(CONTROL, b"{}") + bad)
