"""W3C Trace Context (SPEC §6.2): `traceparent` and `tracestate` exactly as the Recommendation says.

Level 1 processing model plus the Level 2 `random-trace-id` flag. Header values arrive as bytes (that is
what the HTTP parser hands over), so everything here works on bytes and decodes only what it keeps.
Every request goes through `extract`, sampled or not, so the common case (one well-formed version-00
`traceparent`) is checked with a few C-level calls and no regex; the rarer forms (surrounding OWS, a
future version) and `tracestate` use patterns compiled at import.
"""

from __future__ import annotations

import binascii
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

# Final: compiled, a C static rather than a lookup in the module's dict on every call.
_hexlify: Final = binascii.hexlify
_unhexlify: Final = binascii.unhexlify
FLAG_SAMPLED: Final = 0x01
FLAG_RANDOM: Final = 0x02  # Level 2: at least the rightmost 7 bytes of the trace id are random.
# Flags this implementation understands. The other bits are "reserved for future use" and vendors
# MUST send them as zero, so they are cleared on the way in rather than forwarded.
KNOWN_FLAGS: Final = FLAG_SAMPLED | FLAG_RANDOM

MAX_TRACESTATE_MEMBERS: Final = 32

_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)
_OWS: Final = b" \t"
_getrandbits = random.getrandbits

# Fast path for a version-00 value: deleting every allowed byte with `translate` checks all 55 in one
# C call (cheaper than a regex match and its groups); the positions of the dashes are checked apart.
_LC_HEX_AND_DASH: Final = b"0123456789abcdef-"
# trace-flags text -> the flags kept; a missing key means the two characters are not lowercase hex.
_FLAGS: Final = {b"%02x" % n: n & KNOWN_FLAGS for n in range(256)}
_FLAGS_TEXT: Final = tuple(b"%02x" % n for n in range(256))
# The first 55 characters of any version; what follows them is checked apart (future versions).
_ANY_VERSION: Final = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})").fullmatch

# tracestate list-member, after the OWS around it is stripped (W3C Level 1, §3.3.1.3):
#   simple-key       = lcalpha 0*255( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
#   multi-tenant-key = tenant-id "@" system-id
#   tenant-id        = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
#   system-id        = lcalpha 0*13( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
#   value            = 0*255( %x20 / nblk-chr ) nblk-chr ; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
# A value's trailing spaces are OWS, not part of it, so stripping the member first is what the spec
# means; its leading spaces are kept. A tab anywhere inside is invalid.
_MEMBER: Final = re.compile(
    rb"([a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    rb"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
).fullmatch


@dataclass(slots=True, frozen=True)
class SpanContext:
    """A valid incoming (or generated) trace position. Not validated here: the parsers only build valid ones."""

    trace_id: bytes  # 16 raw bytes, not all zero
    span_id: bytes  # 8 raw bytes, not all zero (the caller's parent-id)
    flags: int  # only KNOWN_FLAGS bits
    tracestate: str | None = None  # normalised, or None when absent, empty or invalid

    @property
    def sampled(self) -> bool:
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def random_trace_id(self) -> bool:
        return bool(self.flags & FLAG_RANDOM)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    @property
    def span_id_hex(self) -> str:
        return self.span_id.hex()

    def traceparent(self, span_id: bytes | None = None, sampled: bool | None = None) -> bytes:
        """`00-<trace>-<span>-<flags>`: always version 00, the highest this side knows (a higher one is
        downgraded, as the spec requires). `span_id` replaces the parent-id, `sampled` the sampled bit;
        the other flag bits (random-trace-id) are kept."""
        flags = self.flags
        if sampled is not None:
            flags = (flags | FLAG_SAMPLED) if sampled else (flags & ~FLAG_SAMPLED)
        return traceparent_value(self.trace_id, self.span_id if span_id is None else span_id, flags)


def traceparent_value(trace_id: bytes, span_id: bytes, flags: int) -> bytes:
    """`00-<trace>-<span>-<flags>` (also the format of `traceresponse`)."""
    return traceparent_from_hex(_hexlify(trace_id), _hexlify(span_id), flags)


def traceparent_from_hex(trace_hex: bytes, span_hex: bytes, flags: int) -> bytes:
    """`traceparent_value` from the ids' hex text. Only `%s` conversions: compiled, that is a
    concatenation, where `%02x` would make it the generic, interpreted-speed `%`."""
    return b"00-%s-%s-%s" % (trace_hex, span_hex, _FLAGS_TEXT[flags & 0xFF])


def flags_text(flags: int) -> bytes:
    """trace-flags as its two lowercase hex characters (the low 8 bits), from a table."""
    return _FLAGS_TEXT[flags & 0xFF]


def _span_context(trace_id: bytes, span_id: bytes, flags: int, tracestate: str | None) -> SpanContext:
    # Compiled (mypyc), the dataclass constructor is a C function; interpreted, a frozen dataclass's
    # __init__ costs about a microsecond, which only requests carrying a traceparent pay.
    return SpanContext(trace_id, span_id, flags, tracestate)


def parse_traceparent(values: Sequence[bytes]) -> SpanContext | None:
    """All the `traceparent` values received, in order; None unless exactly one and it is valid."""
    if len(values) != 1:
        return None  # absent, or several headers: the spec treats the latter as invalid
    value = values[0]
    if not (
        len(value) == 55
        and value[:3] == b"00-"
        and value[35] == 0x2D  # "-"
        and value[52] == 0x2D
        and not value.translate(None, _LC_HEX_AND_DASH)
    ):
        return _parse_slow(value)
    flags = _FLAGS.get(value[53:55])
    try:
        trace_id = _unhexlify(value[3:35])
        span_id = _unhexlify(value[36:52])
    except binascii.Error:
        return None  # a dash where a hex digit belongs
    if flags is None or trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return _span_context(trace_id, span_id, flags, None)


def _parse_slow(value: bytes) -> SpanContext | None:
    """Anything the fast path did not take: surrounding OWS, a future version, or an invalid value."""
    value = value.strip(_OWS)
    if len(value) < 55:
        return None
    match = _ANY_VERSION(value[:55])
    if match is None:
        return None
    version = match[1]
    if version == b"ff":
        return None
    if version == b"00":
        if len(value) != 55:
            return None  # version 00 has exactly four fields
    elif len(value) > 55 and value[55] != 0x2D:  # "-"
        # A higher version may add fields, but only after a dash following the flags. What they
        # hold is not ours to parse or check.
        return None
    trace_id = _unhexlify(match[2])
    span_id = _unhexlify(match[3])
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    # For a higher version, only the flags this version defines are read; _FLAGS does that too.
    return _span_context(trace_id, span_id, _FLAGS[match[4]], None)


def parse_tracestate(values: Sequence[bytes]) -> str | None:
    """Several headers are one list joined in order with ','. Returns the members joined by ',' with
    the OWS and empty members dropped, or None if there is none or any rule is broken (the whole
    header is then dropped: the spec gives no way to keep part of an invalid list)."""
    if not values:
        return None
    joined = values[0] if len(values) == 1 else b",".join(values)
    members: list[bytes] = []
    keys: set[bytes] = set()
    for raw in joined.split(b","):
        member = raw.strip(_OWS)
        if not member:
            continue  # empty and whitespace-only members are allowed, and mean nothing
        match = _MEMBER(member)
        if match is None:
            return None
        key = match[1]
        if key in keys:
            return None  # one entry per key
        keys.add(key)
        members.append(member)
        if len(members) > MAX_TRACESTATE_MEMBERS:
            return None
    if not members:
        return None
    # The pattern admits only printable ASCII, so this cannot fail.
    return b",".join(members).decode("ascii")


def extract(traceparent_values: Sequence[bytes], tracestate_values: Sequence[bytes]) -> SpanContext | None:
    """The incoming trace position, or None to start a new trace.

    `tracestate` is not even parsed when `traceparent` is invalid (the spec forbids it), and an invalid
    `tracestate` is dropped without affecting `traceparent`.
    """
    parent = parse_traceparent(traceparent_values)
    if parent is None or not tracestate_values:
        return parent
    tracestate = parse_tracestate(tracestate_values)
    if tracestate is None:
        return parent
    return _span_context(parent.trace_id, parent.span_id, parent.flags, tracestate)


def new_trace_id() -> bytes:
    """16 random bytes, never all zero. All 128 bits are random, so ids the proxy generates may carry
    FLAG_RANDOM. The fast PRNG is enough: a trace id must be unique, not secret."""
    while True:
        value = _getrandbits(128)
        if value:
            return value.to_bytes(16, "big")


RECORD_SIZE: Final = 32  # bytes of ids per request (RequestIds)


class RequestIds:
    """The ids of traced requests, drawn from the OS's CSPRNG in bulk.

    Each request takes one 32-byte record: a trace id (16 bytes; unused when the request continues its
    caller's trace), its SERVER span id and its first CLIENT span id (8 bytes each). The hex text of the whole
    draw is made once as well, so that the `traceparent` sent upstream and the access log's ids are slices
    too: per request, this costs a few slices instead of a PRNG call, an int-to-bytes conversion and two hex
    conversions.

    A draw holding eight zero bytes in a row anywhere is thrown away whole, so no id is ever all zero.
    One per worker process, used from its event loop's thread only: `take` and then reading `raw` and
    `hex` is not atomic.
    """

    __slots__ = ("_draw", "_size", "hex", "offset", "raw")

    def __init__(self, records: int = 1024, draw: Callable[[int], bytes] = os.urandom) -> None:
        self._draw = draw
        self.raw = b""
        self.hex = b""  # raw as hex text (ASCII): the record at offset o in raw is at 2 * o here
        self.offset = 0
        self._size = records * RECORD_SIZE

    def take(self) -> int:
        """The offset in `raw` of an unused record (`raw` and `hex` are replaced when used up)."""
        offset = self.offset
        if offset >= len(self.raw):
            self._refill()
            offset = 0
        self.offset = offset + RECORD_SIZE
        return offset

    def _refill(self) -> None:
        while True:
            raw = self._draw(self._size)
            if _ZERO_SPAN_ID not in raw:
                break
        self.raw = raw
        self.hex = _hexlify(raw)
        self.offset = 0

    def forget(self) -> None:
        """Drop what is left of the draw (in a forked child, which must not reuse its parent's ids)."""
        self.raw = b""
        self.hex = b""
        self.offset = 0


REQUEST_IDS: Final = RequestIds()
os.register_at_fork(after_in_child=REQUEST_IDS.forget)


def new_span_id() -> bytes:
    """8 random bytes, never all zero."""
    while True:
        value = _getrandbits(64)
        if value:
            return value.to_bytes(8, "big")
