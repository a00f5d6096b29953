"""Correlation ids (SPEC §6.1): TinyFlake generation and the check on incoming ids."""

from __future__ import annotations

import random
import time

import pytest

from sentinel.tracing.correlation import BASE58, base58, is_valid_incoming, tinyflake


def _decode58(text: str) -> int:
    value = 0
    for c in text:
        value = value * 58 + BASE58.index(c)
    return value


def test_base58_pads_and_keeps_the_low_digits() -> None:
    assert base58(0, 3) == "111"
    assert base58(57, 2) == "1z"
    assert base58(58, 2) == "21"
    assert _decode58(base58(123_456, 4)) == 123_456
    assert _decode58(base58(58**3 + 5, 3)) == 5  # only the `width` least significant digits


def test_tinyflake_is_seconds_then_the_random_draw() -> None:
    before = int(time.time())
    state = random.getstate()
    draw = random.getrandbits(48)
    random.setstate(state)  # tinyflake draws the same 48 bits from the shared PRNG
    flake = tinyflake()
    after = int(time.time())
    assert len(flake) == 11
    assert set(flake) <= set(BASE58)
    assert _decode58(flake[:3]) in {t % 58**3 for t in range(before, after + 1)}
    assert _decode58(flake[3:]) == draw % 58**8  # 48 bits need 8.2 digits: the low 8 are kept


def test_tinyflakes_differ() -> None:
    assert len({tinyflake() for _ in range(10_000)}) == 10_000


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"abc-123_X.Y:Z", True),
        (b"!", True),
        (b"~" * 128, True),
        (b"a" * 129, False),  # too long
        (b"", False),
        (b"has space", False),
        (b"tab\there", False),
        (b"del\x7f", False),
        (b"latin-1 \xe9", False),
        ("text-id", True),
        ("caf\u00e9", False),
        ("snow\u2603", True),  # outside Latin-1: encoded with "?" for the snowman, a visible character
    ],
)
def test_incoming_ids(value: str | bytes, valid: bool) -> None:
    assert is_valid_incoming(value) is valid
