"""W3C Trace Context processing (SPEC §6.2) and head sampling (SPEC §6.3).

The traceparent and tracestate tables follow the rules of the W3C Recommendation (Level 1, plus the
Level 2 random-trace-id flag) and the cases of the W3C conformance suite (w3c/trace-context test/test.py).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.tracing import context
from sentinel.tracing.context import (
    FLAG_RANDOM,
    FLAG_SAMPLED,
    SpanContext,
    extract,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    parse_tracestate,
)
from sentinel.tracing.sampling import ParentBasedSampler, TraceIdRatioSampler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01".encode()


def tp(value: str | bytes) -> SpanContext | None:
    return parse_traceparent([value.encode() if isinstance(value, str) else value])


# ── traceparent: valid ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (f"00-{TRACE}-{SPAN}-01", 0x01),
        (f"00-{TRACE}-{SPAN}-00", 0x00),
        (f"00-{TRACE}-{SPAN}-02", 0x02),  # Level 2 random-trace-id, not sampled
        (f"00-{TRACE}-{SPAN}-03", 0x03),  # random-trace-id kept as received
        # Reserved bits must be sent as zero, so they are cleared; the known ones survive.
        (f"00-{TRACE}-{SPAN}-ff", 0x03),
        (f"00-{TRACE}-{SPAN}-09", 0x01),
        (f"00-{TRACE}-{SPAN}-04", 0x00),
        # Surrounding OWS is not part of an HTTP field value.
        (f" 00-{TRACE}-{SPAN}-01", 0x01),
        (f"\t00-{TRACE}-{SPAN}-01", 0x01),
        (f"00-{TRACE}-{SPAN}-01 ", 0x01),
        (f"00-{TRACE}-{SPAN}-01\t", 0x01),
        (f"\t 00-{TRACE}-{SPAN}-01 \t", 0x01),
        # A higher version is parsed as 00 from its first four fields; more may follow after a dash.
        (f"cc-{TRACE}-{SPAN}-01", 0x01),
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like", 0x01),
        (f"01-{TRACE}-{SPAN}-00-extra", 0x00),
        (f"01-{TRACE}-{SPAN}-03-", 0x03),
        (f"fe-{TRACE}-{SPAN}-ff-x", 0x03),  # only the flags this version defines are read
        (f"01-{TRACE}-{SPAN}-01-UPPER-and-\x01-anything", 0x01),  # unknown fields are not ours to check
        (f" 0f-{TRACE}-{SPAN}-01-x ", 0x01),
    ],
)
def test_valid_traceparent(value: str, flags: int) -> None:
    ctx = tp(value)
    assert ctx == SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), flags, None)


def test_valid_traceparent_ids_and_properties() -> None:
    ctx = tp(f"00-{TRACE}-{SPAN}-03")
    assert ctx is not None
    assert ctx.trace_id_hex == TRACE
    assert ctx.span_id_hex == SPAN
    assert len(ctx.trace_id) == 16
    assert len(ctx.span_id) == 8
    assert ctx.sampled
    assert ctx.random_trace_id
    plain = tp(f"00-{TRACE}-{SPAN}-00")
    assert plain is not None
    assert not plain.sampled
    assert not plain.random_trace_id


def test_parsed_context_is_an_ordinary_span_context() -> None:
    # The parsers fill the slots directly rather than through the frozen __init__.
    parsed = tp(f"00-{TRACE}-{SPAN}-01")
    built = SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), 1, None)
    assert parsed == built
    assert hash(parsed) == hash(built)
    assert repr(parsed) == repr(built)
    assert type(parsed) is SpanContext
    with pytest.raises(AttributeError):
        parsed.flags = 0  # type: ignore[misc]


def test_ids_of_one_and_all_ones_are_valid() -> None:
    low = tp(f"00-{'0' * 31}1-{'0' * 15}1-00")
    high = tp(f"00-{'f' * 32}-{'f' * 16}-00")
    assert low is not None
    assert low.trace_id == bytes(15) + b"\x01"
    assert low.span_id == bytes(7) + b"\x01"
    assert high is not None
    assert high.trace_id == b"\xff" * 16


# ── traceparent: invalid ──────────────────────────────────────────────────────────────────────────

_T, _S = TRACE, SPAN


@pytest.mark.parametrize(
    "value",
    [
        # version
        f"ff-{_T}-{_S}-01",  # forbidden
        f"ff-{_T}-{_S}-01-more",
        f"0A-{_T}-{_S}-01",  # uppercase hex
        f"AA-{_T}-{_S}-01",
        f".0-{_T}-{_S}-01",
        f"0.-{_T}-{_S}-01",
        f"0g-{_T}-{_S}-01",
        f"000-{_T}-{_S}-01",  # too long
        f"0000-{_T}-{_S}-01",
        f"0-{_T}-{_S}-01",  # too short
        f"-{_T}-{_S}-01",
        # version 00 is exactly 55 characters
        f"00-{_T}-{_S}-01-what-the-future-will-be-like",
        f"00-{_T}-{_S}-01-",
        f"00-{_T}-{_S}-01.",
        f"00-{_T}-{_S}-01x",
        f"00-{_T}-{_S}-01\n",  # only space and tab are OWS
        f"00-{_T}-{_S}-01\r",
        # a higher version: extra data only after a dash following the flags, and never shorter
        f"cc-{_T}-{_S}-01.what-the-future-will-be-like",
        f"cc-{_T}-{_S}-01x",
        f"cc-{_T}-{_S}-1",
        f"cc-{_T}-{_S}",
        f"cc-{_T}-{_S[:-1]}-01-x",
        # trace-id
        f"00-{'0' * 32}-{_S}-01",  # all zero
        f"cc-{'0' * 32}-{_S}-01",
        f"00-{_T.upper()}-{_S}-01",
        f"00-4BF92F3577b34da6a3ce929d0e0e4736-{_S}-01",
        f"00-.{_T[1:]}-{_S}-01",
        f"00-{_T[:-1]}.-{_S}-01",
        f"00-{_T[:-1]}g-{_S}-01",
        f"00-{_T}1-{_S}-01",  # too long
        f"00-{_T[:-1]}-{_S}-01",  # too short
        f"00- {_T[1:]}-{_S}-01",  # whitespace inside
        # parent-id
        f"00-{_T}-{'0' * 16}-01",  # all zero
        f"01-{_T}-{'0' * 16}-01",
        f"00-{_T}-{_S.upper()}-01",
        f"00-{_T}-.{_S[1:]}-01",
        f"00-{_T}-{_S[:-1]}.-01",
        f"00-{_T}-{_S}7-01",  # too long
        f"00-{_T}-{_S[:-1]}-01",  # too short
        # trace-flags
        f"00-{_T}-{_S}-0A",  # uppercase hex
        f"00-{_T}-{_S}-.0",
        f"00-{_T}-{_S}-0.",
        f"00-{_T}-{_S}-001",  # too long
        f"00-{_T}-{_S}-1",  # too short
        f"00-{_T}-{_S}-",
        # dashes
        f"00-{_T[:5]}-{_T[6:]}-{_S}-01",  # right length and characters, a dash in the wrong place
        f"00-{_T}-{_S[:5]}-{_S[6:]}-01",
        f"00-{_T}-{_S}--1",
        f"00-{_T}-{_S}-1-",
        f"00{_T}-{_S}-01",
        f"00-{_T}{_S}-01",
        f"00-{_T}-{_S}01",
        f"00_{_T}-{_S}-01",
        f"00-{_T}_{_S}-01",
        f"00-{_T}-{_S}_01",
        f"00--{_T}-{_S}-01",
        # garbage
        "",
        " ",
        "\t \t",
        "00",
        "00-",
        "x" * 55,
        "-" * 55,
    ],
)
def test_invalid_traceparent(value: str) -> None:
    assert tp(value) is None


@pytest.mark.parametrize(
    "value",
    [
        VALID.replace(b"4b", b"\xc3\xa9"),  # non-ASCII, same length
        VALID[:-1] + b"\xb1",
        b"\x00" * 55,
        VALID + b"\x00",
    ],
)
def test_invalid_traceparent_bytes(value: bytes) -> None:
    assert tp(value) is None


@pytest.mark.parametrize(
    "values",
    [
        [],
        [VALID, VALID],  # several traceparent headers are invalid, even identical ones
        [VALID, f"00-{_T[:-1]}2-{_S}-01".encode()],
        [VALID, b""],
        [b"", VALID],
        [VALID, VALID, VALID],
    ],
)
def test_not_exactly_one_traceparent_header(values: list[bytes]) -> None:
    assert parse_traceparent(values) is None


@given(st.binary(max_size=80))
def test_traceparent_never_raises(value: bytes) -> None:
    ctx = parse_traceparent([value])
    if ctx is not None:
        assert len(ctx.trace_id) == 16
        assert ctx.trace_id != bytes(16)
        assert ctx.span_id != bytes(8)


# ── tracestate ────────────────────────────────────────────────────────────────────────────────────

KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")  # starts with a space
MEMBERS_32 = [",".join(f"bar{n:02}={n:02}" for n in range(i, min(i + 10, 33))) for i in (1, 11, 21, 31)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["foo=1"], "foo=1"),
        (["foo=1,bar=2"], "foo=1,bar=2"),
        (["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        # several headers are joined in order
        (["foo=1,bar=2", "rojo=1,congo=2", "baz=3"], "foo=1,bar=2,rojo=1,congo=2,baz=3"),
        (["b=1", "a=2"], "b=1,a=2"),
        # empty headers and empty members are allowed and dropped
        (["foo=1", ""], "foo=1"),
        (["", "foo=1"], "foo=1"),
        (["foo=1,,bar=2"], "foo=1,bar=2"),
        ([",foo=1,"], "foo=1"),
        (["foo=1, ,\t,bar=2"], "foo=1,bar=2"),
        (["foo=1,", ",bar=2"], "foo=1,bar=2"),
        # OWS around members
        (["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3"),
        (["foo=1\t \t,\t \tbar=2,\t \tbaz=3"], "foo=1,bar=2,baz=3"),
        ([" foo=1"], "foo=1"),
        (["\tfoo=1"], "foo=1"),
        (["foo=1 "], "foo=1"),
        (["foo=1\t"], "foo=1"),
        (["\t foo=1 \t"], "foo=1"),
        # a value's leading spaces are part of it, its trailing spaces are OWS
        (["foo= bar"], "foo= bar"),
        (["foo=  b a r  ,x=1"], "foo=  b a r,x=1"),
        # member count: 32 is the limit, empty members do not count
        (MEMBERS_32, ",".join(f"bar{n:02}={n:02}" for n in range(1, 33))),
        ([",".join(["", *(f"k{n}=v" for n in range(32)), ""]) + ",,"], ",".join(f"k{n}=v" for n in range(32))),
        # key grammar
        (["a=1"], "a=1"),
        ([f"{KEY_CHARS}=1"], f"{KEY_CHARS}=1"),
        (["z" * 256 + "=1"], "z" * 256 + "=1"),
        (["foo=1", "z" * 256 + "=1"], "foo=1," + "z" * 256 + "=1"),
        (["foo@bar=1"], "foo@bar=1"),
        (["1foo@bar=1"], "1foo@bar=1"),  # a tenant may start with a digit
        (["0@a=1"], "0@a=1"),
        ([f"{KEY_CHARS}@a-z0-9_-*/=1"], f"{KEY_CHARS}@a-z0-9_-*/=1"),
        (["t" * 241 + "@" + "v" * 14 + "=1"], "t" * 241 + "@" + "v" * 14 + "=1"),
        (["foo=1,foo@bar=2,foo@baz=3"], "foo=1,foo@bar=2,foo@baz=3"),  # distinct keys
        # value grammar
        ([f"foo={VALUE_CHARS}"], f"foo={VALUE_CHARS}"),
        ([f"foo@bar={VALUE_CHARS}"], f"foo@bar={VALUE_CHARS}"),
        (["foo=" + "v" * 256], "foo=" + "v" * 256),
        (["foo=" + " " * 255 + "v"], "foo=" + " " * 255 + "v"),
        (["foo=!"], "foo=!"),
        (["foo=~"], "foo=~"),
    ],
)
def test_valid_tracestate(values: list[str], expected: str) -> None:
    assert parse_tracestate([v.encode() for v in values]) == expected


@pytest.mark.parametrize(
    "values",
    [
        # nothing there
        [],
        [""],
        ["", ""],
        [" \t "],
        [",, ,"],
        # member count
        [*MEMBERS_32[:-1], MEMBERS_32[-1] + ",bar33=33"],
        [",".join(f"k{n}=v" for n in range(33))],
        # duplicate keys, within a header and across headers
        ["foo=1,foo=1"],
        ["foo=1,foo=2"],
        ["foo=1", "foo=1"],
        ["foo=1", "foo=2"],
        ["a@b=1,x=2,a@b=3"],
        # key grammar
        ["foo =1"],
        ["FOO=1"],
        ["fOo=1"],
        ["foo.bar=1"],
        ["foo bar=1"],
        ["1foo=1"],  # a simple key starts with a letter
        ["_foo=1"],
        ["*=1"],
        ["=1"],
        ["foo"],
        ["foo=1,bar"],
        ["foo=1", "z" * 257 + "=1"],
        ["foo=1", "t" * 242 + "@v=1"],
        ["foo=1", "t@" + "v" * 15 + "=1"],
        ["foo@=1,bar=2"],
        ["@foo=1,bar=2"],
        ["foo@@bar=1,bar=2"],
        ["foo@bar@baz=1,bar=2"],
        ["foo@1bar=1"],  # a system id starts with a letter
        ["foo@Bar=1"],
        ["_foo@bar=1"],
        # value grammar
        ["foo=bar=baz"],
        ["foo="],
        ["foo=,bar=3"],
        ["foo= "],
        ["foo=1,bar=2,baz"],
        ["foo=a\tb"],
        ["foo=a\x7fb"],
        ["foo=a\x00b"],
        ["foo=a\nb"],
        ["foo=" + "v" * 257],
        ["foo=" + " " * 256 + "v"],
        # one bad member spoils the whole list
        ["foo=1,BAR=2,baz=3"],
        ["foo=1", "bar=2", "baz="],
    ],
)
def test_invalid_tracestate(values: list[str]) -> None:
    assert parse_tracestate([v.encode() for v in values]) is None


@pytest.mark.parametrize("value", [b"foo=caf\xc3\xa9", b"caf\xc3\xa9=1", b"foo=\xff", b"foo=1,bar=\x80"])
def test_non_ascii_tracestate_is_invalid(value: bytes) -> None:
    assert parse_tracestate([value]) is None


# ── extract ───────────────────────────────────────────────────────────────────────────────────────


def test_extract_keeps_valid_tracestate() -> None:
    ctx = extract([VALID], [b"congo=t61rcWkgMzE", b" rojo=00f067aa0ba902b7 "])
    assert ctx == SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), 1, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")


@pytest.mark.parametrize("tracestate", [[], [b""], [b"foo=1,foo=2"], [b"FOO=1"], [b"foo=1", b"bar="]])
def test_extract_invalid_or_empty_tracestate_does_not_affect_traceparent(tracestate: list[bytes]) -> None:
    ctx = extract([f"00-{TRACE}-{SPAN}-03".encode()], tracestate)
    assert ctx == SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), 3, None)


@pytest.mark.parametrize(
    "traceparent",
    [[], [b""], [f"00-{'0' * 32}-{SPAN}-01".encode()], [VALID, VALID], [f"ff-{TRACE}-{SPAN}-01".encode()]],
)
def test_extract_discards_tracestate_when_traceparent_is_invalid(traceparent: list[bytes]) -> None:
    assert extract(traceparent, [b"foo=1"]) is None


def test_extract_future_version_with_tracestate() -> None:
    ctx = extract([f"cc-{TRACE}-{SPAN}-01-later".encode()], [b"foo=1"])
    assert ctx == SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), 1, "foo=1")


def test_extract_does_not_parse_tracestate_when_traceparent_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(values: object) -> None:
        raise AssertionError("tracestate parsed")

    monkeypatch.setattr(context, "parse_tracestate", fail)
    assert extract([b"bogus"], [b"foo=1"]) is None


# ── rendering ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("flags", ["00", "01", "02", "03"])
def test_rendering_round_trip(flags: str) -> None:
    value = f"00-{TRACE}-{SPAN}-{flags}".encode()
    ctx = parse_traceparent([value])
    assert ctx is not None
    assert ctx.traceparent() == value
    assert parse_traceparent([ctx.traceparent()]) == ctx


def test_rendering_downgrades_a_future_version() -> None:
    ctx = tp(f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like")
    assert ctx is not None
    assert ctx.traceparent() == f"00-{TRACE}-{SPAN}-01".encode()


@pytest.mark.parametrize(
    ("flags", "sampled", "expected"),
    [
        (0x00, None, "00"),
        (0x01, None, "01"),
        (0x00, True, "01"),
        (0x01, False, "00"),
        (0x02, True, "03"),  # random-trace-id kept
        (0x03, False, "02"),
        (0x03, True, "03"),
        (0x02, False, "02"),
    ],
)
def test_rendering_with_new_span_and_sampled_decision(flags: int, sampled: bool | None, expected: str) -> None:
    ctx = SpanContext(bytes.fromhex(TRACE), bytes.fromhex(SPAN), flags, "foo=1")
    child = bytes.fromhex("b7ad6b7169203331")
    assert ctx.traceparent(child, sampled) == f"00-{TRACE}-b7ad6b7169203331-{expected}".encode()
    assert ctx.traceparent(sampled=sampled) == f"00-{TRACE}-{SPAN}-{expected}".encode()


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.integers(0, 3))
def test_rendering_round_trip_any_ids(trace_id: bytes, span_id: bytes, flags: int) -> None:
    ctx = SpanContext(trace_id, span_id, flags, None)
    rendered = ctx.traceparent()
    assert len(rendered) == 55
    valid = trace_id != bytes(16) and span_id != bytes(8)
    assert parse_traceparent([rendered]) == (ctx if valid else None)


# ── generated ids ─────────────────────────────────────────────────────────────────────────────────


def test_new_ids() -> None:
    trace_ids = {new_trace_id() for _ in range(1000)}
    span_ids = {new_span_id() for _ in range(1000)}
    assert len(trace_ids) == 1000
    assert len(span_ids) == 1000
    assert all(len(t) == 16 and t != bytes(16) for t in trace_ids)
    assert all(len(s) == 8 and s != bytes(8) for s in span_ids)
    ctx = SpanContext(new_trace_id(), new_span_id(), FLAG_RANDOM | FLAG_SAMPLED, None)
    assert parse_traceparent([ctx.traceparent()]) == ctx


def test_new_ids_are_never_all_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def draws() -> Iterator[int]:
        yield 0
        yield 0
        while True:
            yield 5

    it = draws()
    monkeypatch.setattr(context, "_getrandbits", lambda bits: next(it))
    assert new_trace_id() == bytes(15) + b"\x05"
    it = draws()
    assert new_span_id() == bytes(7) + b"\x05"


def test_request_ids_come_in_records_with_their_hex() -> None:
    ids = context.RequestIds(records=4)
    records = []
    for _ in range(10):  # past two refills
        at = ids.take()
        raw, text = ids.raw, ids.hex
        record = raw[at : at + context.RECORD_SIZE]
        assert len(record) == context.RECORD_SIZE
        assert text[2 * at : 2 * at + 2 * context.RECORD_SIZE] == record.hex().encode()
        records.append(record)
    assert len(set(records)) == 10
    trace_id, server, client = records[0][:16], records[0][16:24], records[0][24:]
    assert all(part.strip(b"\0") for part in (trace_id, server, client))  # none all zero


def test_a_draw_with_eight_zero_bytes_in_a_row_is_thrown_away() -> None:
    draws = iter([bytes(40) + b"\x01" * 24, b"\x01" * 31 + bytes(8) + b"\x01" * 25, b"\x07" * 64])
    ids = context.RequestIds(records=2, draw=lambda n: next(draws)[:n])
    ids.take()
    assert ids.raw == b"\x07" * 64


def test_forgetting_a_draw_makes_the_next_request_draw_again() -> None:
    draws = iter([b"\x01" * 64, b"\x02" * 64])
    ids = context.RequestIds(records=2, draw=lambda n: next(draws)[:n])
    assert ids.take() == 0
    ids.forget()  # what a forked child does
    assert ids.take() == 0
    assert ids.raw == b"\x02" * 64


def test_a_forked_child_draws_its_own_ids() -> None:
    context.REQUEST_IDS.take()  # the parent holds a draw
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its pool holds, then a fresh record
        try:
            held = context.REQUEST_IDS.raw
            at = context.REQUEST_IDS.take()
            os.write(write_end, b"%d:" % len(held) + context.REQUEST_IDS.raw[at : at + context.RECORD_SIZE])
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    held, record = report.split(b":", 1)
    assert held == b"0"  # the parent's draw was forgotten at the fork
    assert len(record) == context.RECORD_SIZE
    assert record not in context.REQUEST_IDS.raw


def test_traceparent_from_hex() -> None:
    trace_id, span_id = new_trace_id(), new_span_id()
    for flags in (0, 1, 2, 3, 0xFF):
        value = context.traceparent_from_hex(trace_id.hex().encode(), span_id.hex().encode(), flags)
        assert value == f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}".encode()


# ── sampling ──────────────────────────────────────────────────────────────────────────────────────

# Produced with the OpenTelemetry Python SDK 1.45.2 (opentelemetry-sdk, in a scratch venv, not a
# project dependency): for each rate, `TraceIdRatioBased(rate).bound`; for each trace id,
# `TraceIdRatioBased(rate).should_sample(None, int(trace_id, 16), "x").decision.is_sampled()` over
# RATES, written "1" (sampled) or "0". The first eight ids sit on either side of the bound of 0.1, 1/3,
# 0.5 and 0.999999 with all high bits set (the SDK reads only the low 64); then six random ids
# (random.Random(20240601).getrandbits(128)), the lowest id, and one whose low 64 bits are all ones.
RATES = (0.0, 0.0001, 0.1, 0.25, 0.3333333333333333, 0.5, 0.75, 0.9, 0.999999, 1.0)
OTEL_BOUNDS = (
    0,
    1844674407370955,
    1844674407370955264,
    4611686018427387904,
    6148914691236516864,
    9223372036854775808,
    13835058055282163712,
    16602069666338596864,
    18446725626965477376,
    18446744073709551616,
)
OTEL_DECISIONS = [
    ("ffffffffffffffff19999999999999ff", "0011111111"),
    ("ffffffffffffffff1999999999999a00", "0001111111"),
    ("ffffffffffffffff55555555555553ff", "0000111111"),
    ("ffffffffffffffff5555555555555400", "0000011111"),
    ("ffffffffffffffff7fffffffffffffff", "0000011111"),
    ("ffffffffffffffff8000000000000000", "0000001111"),
    ("ffffffffffffffffffffef39085f47ff", "0000000011"),
    ("ffffffffffffffffffffef39085f4800", "0000000001"),
    ("79c8c2926b94b5b5749882321e35049e", "0000011111"),
    ("eb7a79959588532d4242aadbc8f429a4", "0000111111"),
    ("515c61236c88c5373cf3bd58da60fb1c", "0001111111"),
    ("88718c966f3d88f7f4b1b64633be40f5", "0000000011"),
    ("5b08acc213a5bf07da1b195060c40eb7", "0000000111"),
    ("4a894db7e48f12b96a5d670af9a3638e", "0000011111"),
    ("00000000000000000000000000000001", "0111111111"),
    ("0000000000000001ffffffffffffffff", "0000000001"),
]


@pytest.mark.parametrize(("rate", "bound"), list(zip(RATES, OTEL_BOUNDS, strict=True)))
def test_ratio_bound_matches_the_sdk(rate: float, bound: int) -> None:
    sampler = TraceIdRatioSampler(rate)
    assert sampler.bound == bound
    assert sampler.rate == rate


@pytest.mark.parametrize(("trace_id", "decisions"), OTEL_DECISIONS)
def test_ratio_decisions_match_the_sdk(trace_id: str, decisions: str) -> None:
    got = "".join("1" if TraceIdRatioSampler(rate).should_sample(bytes.fromhex(trace_id)) else "0" for rate in RATES)
    assert got == decisions


def test_rate_zero_never_and_one_always() -> None:
    never, always = TraceIdRatioSampler(0.0), TraceIdRatioSampler(1.0)
    for trace_id in (bytes(15) + b"\x01", b"\xff" * 16, *(new_trace_id() for _ in range(200))):
        assert not never.should_sample(trace_id)
        assert always.should_sample(trace_id)


def test_ratio_decisions_follow_the_integer_rule_at_every_bound() -> None:
    # Decisions compare bytes; the rule is on integers: the low 64 bits below the bound. Random rates,
    # with ids at the bound, just under it and random.
    rng = random.Random(20261126)
    for _ in range(500):
        sampler = TraceIdRatioSampler(rng.random())
        bound = sampler.bound
        for low in (bound - 1, bound, bound + 1, rng.getrandbits(64)):
            if 0 <= low < 1 << 64:
                trace_id = rng.getrandbits(64).to_bytes(8, "big") + low.to_bytes(8, "big")
                assert sampler.should_sample(trace_id) == (low < bound), (sampler, low)


@pytest.mark.parametrize("rate", [-0.1, 1.0000001, 2.0, math.nan, math.inf])
def test_rate_out_of_range(rate: float) -> None:
    with pytest.raises(ValueError, match="sampling rate"):
        TraceIdRatioSampler(rate)


def test_parent_based() -> None:
    trace_id = bytes.fromhex("ffffffffffffffff19999999999999ff")  # sampled at 0.1 and above, not at 0.0001
    sampled = SpanContext(trace_id, bytes.fromhex(SPAN), FLAG_SAMPLED, None)
    unsampled = SpanContext(trace_id, bytes.fromhex(SPAN), 0, None)
    random_only = SpanContext(trace_id, bytes.fromhex(SPAN), FLAG_RANDOM, None)
    never, always = ParentBasedSampler(TraceIdRatioSampler(0.0)), ParentBasedSampler(TraceIdRatioSampler(1.0))
    # a valid parent decides, whatever the root and the trace id say
    assert never.should_sample(sampled, trace_id)
    assert not always.should_sample(unsampled, trace_id)
    assert not always.should_sample(random_only, trace_id)
    # without one, the root decides on the trace id
    assert not never.should_sample(None, trace_id)
    assert always.should_sample(None, trace_id)
    assert ParentBasedSampler(TraceIdRatioSampler(0.1)).should_sample(None, trace_id)
    assert not ParentBasedSampler(TraceIdRatioSampler(0.0001)).should_sample(None, trace_id)


def test_parent_based_with_extracted_parent() -> None:
    sampler = ParentBasedSampler(TraceIdRatioSampler(0.0))
    parent = extract([VALID], [])
    assert parent is not None
    assert sampler.should_sample(parent, parent.trace_id)
    invalid = extract([f"ff-{TRACE}-{SPAN}-01".encode()], [])
    assert not sampler.should_sample(invalid, new_trace_id())


@pytest.mark.parametrize("flags", [0, FLAG_SAMPLED, FLAG_RANDOM, FLAG_RANDOM | FLAG_SAMPLED, 0xFF, 0x1FF])
def test_flags_text_is_what_the_traceparent_value_ends_with(flags: int) -> None:
    trace_hex, span_hex = TRACE.encode(), b"00f067aa0ba902b7"
    value = context.traceparent_from_hex(trace_hex, span_hex, flags)
    assert value == b"00-%s-%s-%s" % (trace_hex, span_hex, context.flags_text(flags))
    assert context.flags_text(flags) == b"%02x" % (flags & 0xFF)
    assert parse_traceparent([value]) is not None
