"""RFC 3339 UTC timestamps with milliseconds (`2024-01-15T10:30:45.123Z`): log lines, access log, agent
events, builtins. Compiled (mypyc): the access log asks for one every millisecond under load."""

from __future__ import annotations

import time
from typing import Final

# "000" .. "999": a table lookup instead of a format spec (compiled, a format spec is a str.format call).
THREE_DIGITS: Final = tuple(f"{n:03d}" for n in range(1000))


class _SecondCache:
    """The second formatted last, and its text: most calls fall in the same second."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""


_LAST: Final = _SecondCache()


def rfc3339_ms(ms: int) -> str:
    """Unix milliseconds as `2024-01-15T10:30:45.123Z`."""
    second = ms // 1000
    cache = _LAST
    if cache.second != second:
        cache.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        cache.second = second
    return f"{cache.text}.{THREE_DIGITS[ms % 1000]}Z"


def rfc3339_now() -> str:
    return rfc3339_ms(time.time_ns() // 1_000_000)
