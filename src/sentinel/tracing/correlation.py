"""Correlation ids (SPEC §6.1): TinyFlake or UUIDv4, or a valid one the client sent."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping

from sentinel.config.model import TraceIdFormat

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TIME_MODULUS = 58**3
# Checked in order; the first valid one is kept (SPEC §6.1).
INCOMING_HEADERS = ("x-correlation-id", "x-request-id", "x-trace-id")


def base58(value: int, width: int) -> str:
    """The `width` least significant Base58 digits of `value`, most significant first, padded with '1'."""
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 58)
        digits.append(BASE58[rem])
    return "".join(reversed(digits))


def tinyflake() -> str:
    """11 characters: 3 of Unix seconds mod 58^3, then 8 from 6 random bytes read little-endian."""
    return base58(int(time.time()) % _TIME_MODULUS, 3) + base58(int.from_bytes(os.urandom(6), "little"), 8)


def uuid4() -> str:
    return str(uuid.uuid4())


def generator(fmt: TraceIdFormat) -> Callable[[], str]:
    return tinyflake if fmt is TraceIdFormat.TINYFLAKE else uuid4


def is_valid_incoming(value: str) -> bool:
    """1 to 128 printable ASCII characters (no spaces or controls)."""
    return 0 < len(value) <= 128 and value.isascii() and all(33 <= ord(c) <= 126 for c in value)


def correlation_id(headers: Mapping[str, str], new: Callable[[], str]) -> str:
    for name in INCOMING_HEADERS:
        value = headers.get(name)
        if value is not None and is_valid_incoming(value):
            return value
    return new()
