"""Correlation ids (SPEC §6.1): TinyFlake or UUIDv4, or a valid one the client sent."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Final

from sentinel.config.model import TraceIdFormat

BASE58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TIME_MODULUS: Final = 58**3
_getrandbits: Final = random.getrandbits
_time: Final = time.time  # Final: compiled, a C static rather than a lookup in the module's dict
# Checked in order; the first valid one is kept (SPEC §6.1).
INCOMING_HEADERS: Final = ("x-correlation-id", "x-request-id", "x-trace-id")


def base58(value: int, width: int) -> str:
    """The `width` least significant Base58 digits of `value`, most significant first, padded with '1'."""
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 58)
        digits.append(BASE58[rem])
    return "".join(reversed(digits))


class _Second:
    """The current Unix second and its 3 Base58 digits, remade once a second."""

    def __init__(self) -> None:
        self.unix = -1
        self.text = ""


_SECOND: Final = _Second()


def tinyflake() -> str:
    """11 characters: 3 of Unix seconds mod 58^3, then 8 from 6 random bytes read little-endian.

    The random bytes need not be cryptographic (a correlation id is not a secret), so they come from
    the fast PRNG rather than a getrandom() syscall per request. Compiled, the eight divisions are on
    machine integers and each digit is a one-character string CPython keeps cached: a table of digit
    pairs, tried before, cost more in cache misses (random entries of a 3,364-string table) than the
    four divisions it saved.
    """
    now = int(_time())
    second = _SECOND
    if second.unix != now:
        second.text = base58(now % _TIME_MODULUS, 3)
        second.unix = now
    r = _getrandbits(48)
    d8 = BASE58[r % 58]
    r //= 58
    d7 = BASE58[r % 58]
    r //= 58
    d6 = BASE58[r % 58]
    r //= 58
    d5 = BASE58[r % 58]
    r //= 58
    d4 = BASE58[r % 58]
    r //= 58
    d3 = BASE58[r % 58]
    r //= 58
    d2 = BASE58[r % 58]
    r //= 58
    d1 = BASE58[r % 58]
    return f"{second.text}{d1}{d2}{d3}{d4}{d5}{d6}{d7}{d8}"


def uuid4() -> str:
    return str(uuid.uuid4())


def generator(fmt: TraceIdFormat) -> Callable[[], str]:
    return tinyflake if fmt is TraceIdFormat.TINYFLAKE else uuid4


_VISIBLE_ASCII: Final = bytes(range(0x21, 0x7F))


def is_valid_incoming(value: str | bytes) -> bool:
    """1 to 128 printable ASCII characters (no spaces or controls)."""
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    # Deleting every visible character leaves nothing: one C call, several times cheaper than a regex.
    return 0 < len(raw) <= 128 and not raw.translate(None, _VISIBLE_ASCII)


def correlation_id(headers: Mapping[str, str], new: Callable[[], str]) -> str:
    for name in INCOMING_HEADERS:
        value = headers.get(name)
        if value is not None and is_valid_incoming(value):
            return value
    return new()
