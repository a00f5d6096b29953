"""Span building (SPEC §6.4) checked by decoding with the official OTLP messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from librt.strings import BytesWriter
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sentinel.tracing import spans
from sentinel.tracing.otlp import span_times, unframe_spans
from sentinel.tracing.spans import agent_call_span


def _decode(framed: bytes) -> Span:
    """The one span of a framed span (what the recorder takes)."""
    (body,) = unframe_spans(framed)
    span: Span = Span.FromString(body)
    return span


def _ids() -> tuple[bytes, bytes]:
    """The request's trace id and its SERVER span id (the agent call's parent)."""
    return bytes(range(1, 17)), bytes(range(1, 9))


def test_agent_call_span() -> None:
    raw = agent_call_span(
        *_ids(),
        b"\x09" * 8,
        "auth",
        "request_headers",
        1_000,
        2_000,
        decision="block",
        outcome="ok",
        failure_mode="closed",
        audit={"tags": ["bearer", "expired"], "rule_ids": ["R1"]},
    )
    span = _decode(raw)
    assert span.name == "agent auth request_headers"
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.trace_id == bytes(range(1, 17))
    assert span.parent_span_id == bytes(range(1, 9))
    assert span.span_id == b"\x09" * 8
    attrs = {kv.key: kv.value for kv in span.attributes}
    assert attrs["sentinel.agent.id"].string_value == "auth"
    assert attrs["sentinel.agent.event"].string_value == "request_headers"
    assert attrs["sentinel.agent.decision"].string_value == "block"
    assert attrs["sentinel.agent.outcome"].string_value == "ok"
    assert attrs["sentinel.agent.failure_mode"].string_value == "closed"
    assert [v.string_value for v in attrs["sentinel.agent.tags"].array_value.values] == ["bearer", "expired"]
    assert [v.string_value for v in attrs["sentinel.agent.rule_ids"].array_value.values] == ["R1"]
    assert "error.type" not in attrs
    assert span.status.code == 0


def test_failed_agent_call_is_an_error() -> None:
    raw = agent_call_span(
        *_ids(),
        b"\x01" * 8,
        "ratelimit",
        "request_headers",
        1,
        2,
        decision="allow",
        outcome="timeout",
        failure_mode="open",
    )
    span = _decode(raw)
    attrs = {kv.key: kv.value.string_value for kv in span.attributes}
    assert attrs["error.type"] == "timeout"
    assert span.status.code == 2


def test_agent_call_span_keeps_the_random_trace_id_flag() -> None:
    def flags(trace_flags: int) -> int:
        raw = agent_call_span(
            *_ids(),
            b"\x01" * 8,
            "a",
            "request_headers",
            1,
            2,
            decision="allow",
            outcome="ok",
            failure_mode="open",
            trace_flags=trace_flags,
        )
        return _decode(raw).flags

    assert (flags(0x00), flags(0x01), flags(0x02), flags(0x03)) == (0x101, 0x101, 0x103, 0x103)


def _written_times(start_ns: int, end_ns: int) -> bytes:
    out = BytesWriter()
    spans._write_times(out, start_ns, end_ns)  # as the request's spans write them
    return out.getvalue()


@pytest.mark.parametrize(
    ("start_ns", "end_ns"),
    [(1, 2), ((1 << 24) - 1, 1 << 24), (1_764_000_000_000_000_000, 1_764_000_000_016_777_216), ((1 << 63) - 2, 1)],
)
def test_written_times_are_the_time_fields(start_ns: int, end_ns: int) -> None:
    assert _written_times(start_ns, end_ns) == span_times(start_ns, end_ns)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, (1 << 63) - 1), st.integers(1, (1 << 63) - 1))
def test_written_times_for_any_times(start_ns: int, end_ns: int) -> None:
    assert _written_times(start_ns, end_ns) == span_times(start_ns, end_ns)
