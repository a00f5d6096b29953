"""Correlation ids (SPEC §6.1): TinyFlake or UUIDv4, or a valid one the client sent."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping

from sentinel.config.model import TraceIdFormat

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TIME_MODULUS = 58**3
_getrandbits = random.getrandbits
# Checked in order; the first valid one is kept (SPEC §6.1).
INCOMING_HEADERS = ("x-correlation-id", "x-request-id", "x-trace-id")


def base58(value: int, width: int) -> str:
    """The `width` least significant Base58 digits of `value`, most significant first, padded with '1'."""
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 58)
        digits.append(BASE58[rem])
    return "".join(reversed(digits))


# Two Base58 digits at a time: 4 lookups instead of 8 divisions for the random part.
_PAIRS = [a + b for a in BASE58 for b in BASE58]
_PAIR_BASE = 58 * 58
_time_part: list[int | str] = [-1, ""]  # (second, its 3 Base58 digits), recomputed once a second


def tinyflake() -> str:
    """11 characters: 3 of Unix seconds mod 58^3, then 8 from 6 random bytes read little-endian.

    The random bytes need not be cryptographic (a correlation id is not a secret), so they come from
    the fast PRNG rather than a getrandom() syscall per request.
    """
    now = int(time.time())
    if _time_part[0] != now:
        _time_part[:] = (now, base58(now % _TIME_MODULUS, 3))
    value = _getrandbits(48)
    value, d4 = divmod(value, _PAIR_BASE)
    value, d3 = divmod(value, _PAIR_BASE)
    value, d2 = divmod(value, _PAIR_BASE)
    d1 = value % _PAIR_BASE
    return str(_time_part[1]) + _PAIRS[d1] + _PAIRS[d2] + _PAIRS[d3] + _PAIRS[d4]


def uuid4() -> str:
    return str(uuid.uuid4())


def generator(fmt: TraceIdFormat) -> Callable[[], str]:
    return tinyflake if fmt is TraceIdFormat.TINYFLAKE else uuid4


_VISIBLE_ASCII = bytes(range(0x21, 0x7F))


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
