"""Hand-written OTLP protobuf encoder for trace data (SPEC §6.4, §6.5).

The OpenTelemetry SDK's exporter costs tens of microseconds per span to encode, so spans are written straight
to protobuf wire format here, with the standard library only. Workers encode each finished span into the bytes
of one `opentelemetry.proto.trace.v1.Span` message, framed as one `ScopeSpans.spans` field (the request's
spans from cached pieces, `tracing/spans.py` with the helpers below `encode_span`; other spans with
`encode_span` and `framed_span_head`), and hand batches of them to the supervisor as they are (a batch of
framed spans is a `frame_spans` buffer); the supervisor's exporter checks their framing (`count_framed_spans`)
and wraps those buffers, without decoding them, into an `ExportTraceServiceRequest`
(`encode_framed_export_request`) together with a `Resource` (`encode_resource`) and an `InstrumentationScope`
(`encode_scope`), cutting one at a span (`framed_spans_end`) only where an export batch or the queue limit
ends inside it.

Wire format as in opentelemetry-proto (trace/v1/trace.proto, common/v1/common.proto,
resource/v1/resource.proto, collector/trace/v1/trace_service.proto). Fields are written in field-number
order and proto3 defaults are omitted exactly as the official serializer does (so the bytes equal
`SerializeToString()` of the same message), with two deliberate choices:

- `Span.status` (a message field, so with presence) is written only when its code or message is set; an
  absent status decodes as `STATUS_CODE_UNSET` with an empty message, which is what it would hold anyway.
- `AnyValue` members are a `oneof`, so a value equal to its default (`""`, `0`, `False`, `0.0`, `b""`) is
  still written: that is what tells a decoder which type it has.

Protobuf parsers accept fields in any order and append repeated fields, so bytes from
`encode_attributes` (Span.attributes by default) can be appended to a finished span body to add
attributes late.

`iter_fields` is the other direction, a generic wire-format reader: the exporter uses it on collector answers
and the Zipkin converter (`tracing/zipkin.py`) on the spans written here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

__all__ = [
    "EVENT_ATTRIBUTES",
    "IDS_AND_TIMES_SIZE",
    "PARENT_SPAN_ID_HEAD",
    "RESOURCE_ATTRIBUTES",
    "SCOPE_ATTRIBUTES",
    "SPAN_ATTRIBUTES",
    "SPAN_END_TAG",
    "SPAN_ID_HEAD",
    "SPAN_START_TAG",
    "STRING_HEAD_SLOTS",
    "TRACE_ID_HEAD",
    "AttrValue",
    "SpanKind",
    "StatusCode",
    "count_framed_spans",
    "encode_attributes",
    "encode_export_request",
    "encode_framed_export_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "frame_spans",
    "framed_span_head",
    "framed_spans_end",
    "int_attribute",
    "iter_fields",
    "span_name_and_kind",
    "span_status_and_flags",
    "span_times",
    "span_trace_state",
    "string_attribute",
    "string_attribute_head",
    "string_attribute_heads",
    "unframe_spans",
]


class SpanKind:
    """`Span.SpanKind` enum values (0 is SPAN_KIND_UNSPECIFIED, left out of the encoding as the default)."""

    INTERNAL: Final = 1
    SERVER: Final = 2
    CLIENT: Final = 3
    PRODUCER: Final = 4
    CONSUMER: Final = 5


class StatusCode:
    """`Status.StatusCode` enum values."""

    UNSET: Final = 0
    OK: Final = 1
    ERROR: Final = 2


# str → string_value (UTF-8 encoded once, where it is written), bool → bool_value, int → int_value (int64),
# float → double_value, bytes → bytes_value, list[str] → array_value of string_value.
AttrValue = str | bool | int | float | bytes | list[str]

# Field numbers of the repeated `KeyValue attributes` field in the messages that have one.
SPAN_ATTRIBUTES: Final = 9
EVENT_ATTRIBUTES: Final = 3
RESOURCE_ATTRIBUTES: Final = 1
SCOPE_ATTRIBUTES: Final = 3

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_TWO_64: Final = 1 << 64

_pack_fixed64: Final = struct.Struct("<Q").pack
_pack_fixed32: Final = struct.Struct("<I").pack
_pack_double: Final = struct.Struct("<d").pack

# One-byte varints (0..127) as ready-made bytes objects.
_B: Final = tuple(bytes((i,)) for i in range(128))


_pack_varint2: Final = struct.Struct("BB").pack
_pack_varint3: Final = struct.Struct("BBB").pack


def _varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer (callers map int64 negatives to n + 2**64 first)."""
    if n < 0x80:
        return _B[n]
    if n < 0x4000:
        return _pack_varint2((n & 0x7F) | 0x80, n >> 7)
    if n < 0x200000:
        return _pack_varint3((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _utf8(text: str) -> bytes:
    """UTF-8, with what cannot be encoded (lone surrogates) replaced by "?": protobuf strings must be valid."""
    try:
        return text.encode()  # without arguments: the fast path (a try costs nothing until it catches)
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _int64(value: int) -> bytes:
    """The varint of an int64 (a negative one as its two's complement: ten bytes)."""
    if 0 <= value < 0x80:
        return _B[value]
    if 0x80 <= value < 0x4000:
        return _pack_varint2((value & 0x7F) | 0x80, value >> 7)
    if 0 <= value <= _INT64_MAX:
        return _varint(value)
    if _INT64_MIN <= value < 0:
        return _varint(value + _TWO_64)
    raise ValueError(f"integer attribute value out of the int64 range: {value}")


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


# Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
# Span (trace.proto)
_SPAN_TRACE_ID: Final = _tag(1, 2)
_SPAN_SPAN_ID: Final = _tag(2, 2)
_SPAN_TRACE_STATE: Final = _tag(3, 2)
_SPAN_PARENT_SPAN_ID: Final = _tag(4, 2)
_SPAN_NAME: Final = _tag(5, 2)
_SPAN_KIND: Final = _tag(6, 0)
_SPAN_START: Final = _tag(7, 1)
_SPAN_END: Final = _tag(8, 1)
_SPAN_EVENTS: Final = _tag(11, 2)
_SPAN_STATUS: Final = _tag(15, 2)
_SPAN_FLAGS: Final = _tag(16, 5)  # two bytes: field 16 needs a two-byte tag
_TRACE_ID_16: Final = _SPAN_TRACE_ID + b"\x10"
_SPAN_ID_8: Final = _SPAN_SPAN_ID + b"\x08"
_PARENT_SPAN_ID_8: Final = _SPAN_PARENT_SPAN_ID + b"\x08"
_KIND: Final = tuple(_SPAN_KIND + _B[k] for k in range(128))
_SPAN_START_BYTE: Final = _SPAN_START[0]
_SPAN_END_BYTE: Final = _SPAN_END[0]
_pack_times: Final = struct.Struct("<BQBQ").pack  # start and end with their one-byte tags
# Span.Event
_EVENT_TIME: Final = _tag(1, 1)
_EVENT_NAME: Final = _tag(2, 2)
# Status (field 1 is reserved: the old deprecated_code)
_STATUS_MESSAGE: Final = _tag(2, 2)
_STATUS_CODE: Final = _tag(3, 0)
# InstrumentationScope (common.proto)
_SCOPE_NAME: Final = _tag(1, 2)
_SCOPE_VERSION: Final = _tag(2, 2)
# ExportTraceServiceRequest → ResourceSpans → ScopeSpans
_REQ_RESOURCE_SPANS: Final = _tag(1, 2)
_RS_RESOURCE: Final = _tag(1, 2)
_RS_SCOPE_SPANS: Final = _tag(2, 2)
_SS_SCOPE: Final = _tag(1, 2)
_SS_SPANS: Final = _tag(2, 2)
_SS_SPANS_BYTE: Final = _SS_SPANS[0]
_SPANS_FIELD_HEAD: Final = tuple(_SS_SPANS + _B[n] for n in range(128))
# Frame heads of spans of 128 bytes to 16 KiB (a two-byte length), made on first use (at most 16,256 of
# 3 bytes each).
_TWO_BYTE_HEADS: Final[list[bytes | None]] = [None] * 0x4000

# KeyValue { string key = 1; AnyValue value = 2; }
# AnyValue { oneof value { string_value = 1; bool_value = 2; int_value = 3 (int64); double_value = 4;
#            ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; } }
# ArrayValue { repeated AnyValue values = 1; }
_KV_KEY: Final = _tag(1, 2)
_KV_VALUE: Final = _tag(2, 2)
_AV_STRING: Final = _tag(1, 2)
_AV_BOOL: Final = _tag(2, 0)
_AV_INT: Final = _tag(3, 0)
_AV_DOUBLE: Final = _tag(4, 1)
_AV_ARRAY: Final = _tag(5, 2)
_AV_BYTES: Final = _tag(7, 2)
_ARRAY_VALUES: Final = _tag(1, 2)

# Complete `value` fields (KeyValue field 2 with its AnyValue) for the values that have a fixed encoding.
_VALUE_TRUE: Final = _KV_VALUE + b"\x02" + _AV_BOOL + b"\x01"
_VALUE_FALSE: Final = _KV_VALUE + b"\x02" + _AV_BOOL + b"\x00"

# Tags of the attribute fields in use, by field number.
_ATTR_TAGS: Final[dict[int, bytes]] = {f: _tag(f, 2) for f in (1, 3, 9)}
_SPAN_ATTR_TAG: Final = _ATTR_TAGS[SPAN_ATTRIBUTES]
_EVENT_ATTR_TAG: Final = _ATTR_TAGS[EVENT_ATTRIBUTES]
_RESOURCE_ATTR_TAG: Final = _ATTR_TAGS[RESOURCE_ATTRIBUTES]

# Attribute key → its encoded `key` field. Keys come from a small fixed set (semantic conventions, agent
# audit tags), so the caches stop growing at a bound rather than evicting.
_KEY_CACHE_MAX: Final = 1024
_key_cache: Final[dict[str, bytes]] = {}


def _key_field(key: str) -> bytes:
    field = _key_cache.get(key)
    if field is None:
        kb = _utf8(key)
        # An empty key is the proto3 default: the official serializer leaves the field out.
        field = _KV_KEY + _varint(len(kb)) + kb if kb else b""
        if len(_key_cache) < _KEY_CACHE_MAX:
            _key_cache[key] = field
    return field


def _value_field(value: object) -> bytes:
    """The complete `value` field of a KeyValue, for any AttrValue."""
    if isinstance(value, bool):
        return _VALUE_TRUE if value else _VALUE_FALSE
    if isinstance(value, int):
        av = _AV_INT + _int64(value)
    elif isinstance(value, str):
        av = _ld(_AV_STRING, _utf8(value))
    elif isinstance(value, float):
        av = _AV_DOUBLE + _pack_double(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        av = _ld(_AV_BYTES, bytes(value))
    elif isinstance(value, list | tuple):
        parts = []
        for item in value:
            if not isinstance(item, str):
                raise TypeError(f"array attribute values must be strings, got {type(item).__name__}")
            parts.append(_ld(_ARRAY_VALUES, _ld(_AV_STRING, _utf8(item))))
        av = _ld(_AV_ARRAY, b"".join(parts))
    else:
        raise TypeError(f"unsupported attribute value type: {type(value).__name__}")
    return _ld(_KV_VALUE, av)


# Everything before the payload of a string attribute (attribute tag, KeyValue length, key field, value
# tag and length, AnyValue tag and length) depends only on the attribute tag, the key and the string's
# length in bytes; before an int's varint, only on the tag, the key and the varint's length. These prefixes
# are cached per tag and key in a list of slots: string length n < _STR_SLOTS at index n, int varint length
# m (1..10) at _INT_SLOT + m. A cached string or int attribute then costs two appends.
_STR_SLOTS: Final = 128
_INT_SLOT: Final = _STR_SLOTS - 1
STRING_HEAD_SLOTS: Final = _STR_SLOTS
_SLOTS: Final = _INT_SLOT + 11
_Prefixes = dict[str, list[bytes | None]]
_prefix_caches: Final[dict[bytes, _Prefixes]] = {}


def _prefixes(tag: bytes) -> _Prefixes:
    cache = _prefix_caches.get(tag)
    if cache is None:
        cache = _prefix_caches[tag] = {}
    return cache


def _prefix(tag: bytes, cache: _Prefixes, key: str, slot: int, any_value_head: bytes, payload_size: int) -> bytes:
    """Build (and cache in `slot`, when there is one) what precedes a payload of `payload_size` bytes in a
    KeyValue field."""
    kf = _key_field(key)
    any_value_size = len(any_value_head) + payload_size
    value_head = _KV_VALUE + _varint(any_value_size) + any_value_head
    prefix = tag + _varint(len(kf) + len(value_head) + payload_size) + kf + value_head
    if slot < 0:
        return prefix
    slots = _key_slots(cache, key)
    if slots is not None:
        slots[slot] = prefix
    return prefix


def _key_slots(cache: _Prefixes, key: str) -> list[bytes | None] | None:
    """The slots of `key` in `cache`, made on first use (None past the cache's bound)."""
    slots = cache.get(key)
    if slots is None:
        if len(cache) >= _KEY_CACHE_MAX:
            return None
        slots = cache[key] = [None] * _SLOTS
    return slots


def _str_head(tag: bytes, prefixes: _Prefixes, key: str, n: int) -> bytes:
    """What precedes a string value of `n` bytes in a `tag`-numbered KeyValue field."""
    if n < _STR_SLOTS:
        slots = prefixes.get(key)
        if slots is not None:
            prefix = slots[n]
            if prefix is not None:
                return prefix
        return _prefix(tag, prefixes, key, n, _AV_STRING + _B[n], n)
    return _prefix(tag, prefixes, key, -1, _AV_STRING + _varint(n), n)


def _int_field(tag: bytes, prefixes: _Prefixes, key: str, value: int) -> bytes:
    """A `tag`-numbered KeyValue field with an int64 value."""
    payload = _int64(value)
    slot = _INT_SLOT + len(payload)
    slots = prefixes.get(key)
    prefix = None if slots is None else slots[slot]
    if prefix is None:
        prefix = _prefix(tag, prefixes, key, slot, _AV_INT, len(payload))
    return prefix + payload


def _put_str(out: list[bytes], tag: bytes, prefixes: _Prefixes, key: str, value: str) -> None:
    """Append a `tag`-numbered KeyValue field with a string value to `out`."""
    payload = _utf8(value)
    out.append(_str_head(tag, prefixes, key, len(payload)))
    out.append(payload)


def _put_field(out: list[bytes], tag: bytes, key: str, value_field: bytes) -> None:
    """Append a `tag`-numbered KeyValue field made of `key` and a complete `value` field."""
    kf = _key_cache.get(key)
    if kf is None:
        kf = _key_field(key)
    size = len(kf) + len(value_field)
    out.append(tag)
    out.append(_B[size] if size < 0x80 else _varint(size))
    out.append(kf)
    out.append(value_field)


def _put_attributes(out: list[bytes], tag: bytes, prefixes: _Prefixes, attrs: Iterable[tuple[str, AttrValue]]) -> None:
    """Append one `tag`-numbered KeyValue field per attribute to `out`."""
    for key, value in attrs:
        if type(value) is str:
            _put_str(out, tag, prefixes, key, value)
        elif type(value) is int:
            out.append(_int_field(tag, prefixes, key, value))
        else:
            _put_field(out, tag, key, _value_field(value))


_SPAN_PREFIXES: Final = _prefixes(_SPAN_ATTR_TAG)
_EVENT_PREFIXES: Final = _prefixes(_EVENT_ATTR_TAG)


def encode_attributes(attrs: Iterable[tuple[str, AttrValue]], field: int = SPAN_ATTRIBUTES) -> bytes:
    """The repeated `KeyValue attributes` fields for `attrs`, ready to splice into a message body.

    `field` is the field number of `attributes` in the enclosing message: `SPAN_ATTRIBUTES` (the
    default), `EVENT_ATTRIBUTES`, `RESOURCE_ATTRIBUTES` or `SCOPE_ATTRIBUTES`.
    """
    tag = _ATTR_TAGS.get(field)
    if tag is None:
        tag = _tag(field, 2)
    out: list[bytes] = []
    _put_attributes(out, tag, _prefixes(tag), attrs)
    return b"".join(out)


def encode_span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Iterable[tuple[str, AttrValue]] = (),
    status_code: int = 0,
    status_message: str = "",
    trace_state: str = "",
    flags: int = 0,
    events: Iterable[tuple[int, str, Iterable[tuple[str, AttrValue]]]] = (),
) -> bytes:
    """The serialized body of one `Span` message (not length-prefixed).

    `trace_id` is 16 bytes, `span_id` 8, `parent_span_id` 8 or b"" for a root span; times are Unix
    nanoseconds (fixed64). `flags` is `Span.flags` (fixed32): the W3C trace flags in bits 0-7, plus
    `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` (0x100) and `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK` (0x200);
    0 leaves the field out. `events` are `(time_ns, name, attributes)`. Ids are not checked here: the
    context module makes them. Characters that UTF-8 cannot encode (lone surrogates) become "?".
    """
    out = [
        _TRACE_ID_16 if len(trace_id) == 16 else _SPAN_TRACE_ID + _varint(len(trace_id)),
        trace_id,
        _SPAN_ID_8 if len(span_id) == 8 else _SPAN_SPAN_ID + _varint(len(span_id)),
        span_id,
    ]
    if trace_state:
        out.append(span_trace_state(trace_state))
    if parent_span_id:
        out.append(
            _PARENT_SPAN_ID_8 if len(parent_span_id) == 8 else _SPAN_PARENT_SPAN_ID + _varint(len(parent_span_id))
        )
        out.append(parent_span_id)
    out.append(span_name_and_kind(name, kind))
    if start_ns and end_ns:
        out.append(span_times(start_ns, end_ns))
    elif start_ns:
        out.append(_SPAN_START)
        out.append(_pack_fixed64(start_ns))
    elif end_ns:
        out.append(_SPAN_END)
        out.append(_pack_fixed64(end_ns))
    _put_attributes(out, _SPAN_ATTR_TAG, _SPAN_PREFIXES, attributes)
    for time_ns, event_name, event_attrs in events:
        event: list[bytes] = []
        if time_ns:
            event.append(_EVENT_TIME)
            event.append(_pack_fixed64(time_ns))
        if event_name:
            event.append(_ld(_EVENT_NAME, _utf8(event_name)))
        _put_attributes(event, _EVENT_ATTR_TAG, _EVENT_PREFIXES, event_attrs)
        body = b"".join(event)
        out.append(_SPAN_EVENTS)
        out.append(_varint(len(body)))
        out.append(body)
    out.append(span_status_and_flags(status_code, flags, status_message))
    return b"".join(out)


# The request path's spans (tracing/spans.py) are assembled from the pieces below, most of them cached per
# method, status, route, connection or target, and joined once with the span's framing in front: a span
# then costs a few lookups and one copy of its bytes. Fields stay in field-number order.

# The id fields' tags and lengths: a 16-byte trace id, 8-byte span and parent span ids.
TRACE_ID_HEAD: Final = _TRACE_ID_16
SPAN_ID_HEAD: Final = _SPAN_ID_8
PARENT_SPAN_ID_HEAD: Final = _PARENT_SPAN_ID_8
# The bytes of the trace id and span id fields and of `span_times`, together.
IDS_AND_TIMES_SIZE: Final = 2 + 16 + 2 + 8 + 18


def span_trace_state(trace_state: str) -> bytes:
    """The `trace_state` field (it comes between the span id and the parent span id)."""
    return _ld(_SPAN_TRACE_STATE, _utf8(trace_state)) if trace_state else b""


def span_name_and_kind(name: str, kind: int) -> bytes:
    """The `name` and `kind` fields (each left out when empty or 0, as the official serializer does)."""
    out = b""
    if name:
        name_bytes = _utf8(name)
        out = _SPAN_NAME + _varint(len(name_bytes)) + name_bytes
    if kind:
        out += _KIND[kind] if 0 < kind < 0x80 else _SPAN_KIND + _varint(kind + _TWO_64 if kind < 0 else kind)
    return out


def span_times(start_ns: int, end_ns: int) -> bytes:
    """The start and end time fields (both non-zero: 18 bytes)."""
    return _pack_times(_SPAN_START_BYTE, start_ns, _SPAN_END_BYTE, end_ns)


# The tags of the start and end time fields (each followed by 8 little-endian bytes), for spans written
# field by field (`tracing/spans.py`).
SPAN_START_TAG: Final = _SPAN_START_BYTE
SPAN_END_TAG: Final = _SPAN_END_BYTE


def string_attribute_head(key: str, size: int) -> bytes:
    """What precedes a string value of `size` UTF-8 bytes in the span attribute `key`: the attribute is
    this followed by the value's bytes."""
    return _str_head(_SPAN_ATTR_TAG, _SPAN_PREFIXES, key, size)


def string_attribute_heads(key: str) -> list[bytes | None]:
    """The cache behind `string_attribute_head` for the span attribute `key`: slot n holds the head of an
    n-byte value once one was made (n < `STRING_HEAD_SLOTS`), so that a caller holding the list skips the
    lookup by key."""
    slots = _key_slots(_SPAN_PREFIXES, key)
    return slots if slots is not None else [None] * _SLOTS  # past the bound: never filled


def string_attribute(key: str, value: str) -> bytes:
    """A span's string attribute."""
    payload = _utf8(value)
    return _str_head(_SPAN_ATTR_TAG, _SPAN_PREFIXES, key, len(payload)) + payload


def int_attribute(key: str, value: int) -> bytes:
    """A span's int64 attribute."""
    return _int_field(_SPAN_ATTR_TAG, _SPAN_PREFIXES, key, value)


def span_status_and_flags(status_code: int, flags: int, status_message: str = "") -> bytes:
    """The `status` field (left out when its code and message are both unset) and the `flags` field (left
    out when 0); arguments as in `encode_span`."""
    out = b""
    if status_code or status_message:
        status = _ld(_STATUS_MESSAGE, _utf8(status_message)) if status_message else b""
        if status_code:
            status += _STATUS_CODE + _varint(status_code + _TWO_64 if status_code < 0 else status_code)
        out = _SPAN_STATUS + _varint(len(status)) + status
    if flags:
        out += _SPAN_FLAGS + _pack_fixed32(flags)
    return out


def framed_span_head(size: int) -> bytes:
    """The tag and length that frame a span body of `size` bytes as one `ScopeSpans.spans` field."""
    if size < 0x80:
        return _SPANS_FIELD_HEAD[size]
    if size < 0x4000:
        head = _TWO_BYTE_HEADS[size]
        if head is None:
            head = _TWO_BYTE_HEADS[size] = _SS_SPANS + _varint(size)
        return head
    return _SS_SPANS + _varint(size)


def encode_resource(attributes: Iterable[tuple[str, AttrValue]]) -> bytes:
    """The serialized body of a `Resource` message with these attributes."""
    out: list[bytes] = []
    _put_attributes(out, _RESOURCE_ATTR_TAG, _prefixes(_RESOURCE_ATTR_TAG), attributes)
    return b"".join(out)


def encode_scope(name: str, version: str = "") -> bytes:
    """The serialized body of an `InstrumentationScope` message."""
    out = b""
    if name:
        out += _ld(_SCOPE_NAME, _utf8(name))
    if version:
        out += _ld(_SCOPE_VERSION, _utf8(version))
    return out


def frame_spans(spans: Iterable[bytes]) -> bytes:
    """Spans (bodies from `encode_span`) as the repeated `ScopeSpans.spans` field: tag, length and body of
    each, in one buffer.

    This is how workers hand spans to the supervisor: a framed buffer goes into an export request as it is
    (`encode_framed_export_request`), and several of them concatenated are still one valid field sequence.
    """
    parts: list[bytes] = []
    for span in spans:
        parts.append(framed_span_head(len(span)))
        parts.append(span)
    return b"".join(parts)


def _read_varint(buf: bytes, pos: int, max_shift: int = 63) -> tuple[int, int]:
    """The varint at `pos` and the offset after it; ValueError if it is cut off or has more than
    `max_shift` / 7 + 1 bytes."""
    end = len(buf)
    shift = result = 0
    while True:
        if pos >= end or shift > max_shift:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _framed_span_at(framed: bytes, offset: int) -> tuple[int, int]:
    """Where the body of the span framed at `offset` starts and where it ends; ValueError if the framing is
    broken there."""
    if framed[offset] != _SS_SPANS_BYTE:
        raise ValueError(f"not a ScopeSpans.spans field at offset {offset}")
    try:
        size, body = _read_varint(framed, offset + 1, 28)  # at most 5 bytes: a span under 32 GiB
    except ValueError:
        raise ValueError("truncated or oversized span length") from None
    if body + size > len(framed):
        raise ValueError("truncated span")
    return body, body + size


def count_framed_spans(framed: bytes) -> int:
    """How many spans a `frame_spans` buffer holds; ValueError if it is not one."""
    count = 0
    offset = 0
    end = len(framed)
    while offset < end:
        offset = _framed_span_at(framed, offset)[1]
        count += 1
    return count


def framed_spans_end(framed: bytes, start: int, n: int) -> int:
    """Where the `n` spans framed from offset `start` of a `frame_spans` buffer end (or the buffer, if it
    holds fewer)."""
    offset = start
    end = len(framed)
    for _ in range(n):
        if offset >= end:
            break
        offset = _framed_span_at(framed, offset)[1]
    return offset


def unframe_spans(framed: bytes) -> list[bytes]:
    """The span bodies of a `frame_spans` buffer."""
    spans: list[bytes] = []
    offset = 0
    end = len(framed)
    while offset < end:
        body, offset = _framed_span_at(framed, offset)
        spans.append(framed[body:offset])
    return spans


def encode_framed_export_request(resource: bytes, scope: bytes, framed: Sequence[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` with one ResourceSpans holding one ScopeSpans whose spans are the
    `frame_spans` buffers `framed`, copied in as they are.

    `resource` and `scope` are message bodies from `encode_resource` and `encode_scope`; both fields are
    always present, even when empty.
    """
    # One join at the end, so that the (possibly large) request is allocated and copied once: the lengths of
    # the enclosing messages are added up from their parts first. (Both ScopeSpans tags are one byte.)
    scope_size = _varint(len(scope))
    scope_spans_size = 1 + len(scope_size) + len(scope)
    for chunk in framed:
        scope_spans_size += len(chunk)
    head = b"".join((_RS_RESOURCE, _varint(len(resource)), resource, _RS_SCOPE_SPANS, _varint(scope_spans_size)))
    parts = [_REQ_RESOURCE_SPANS + _varint(len(head) + scope_spans_size), head, _SS_SCOPE, scope_size, scope]
    parts.extend(framed)
    return b"".join(parts)


def encode_export_request(resource: bytes, scope: bytes, spans: Sequence[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` with one ResourceSpans holding one ScopeSpans with `spans` (bodies
    from `encode_span`, copied in without being decoded); see `encode_framed_export_request`."""
    return encode_framed_export_request(resource, scope, [frame_spans(spans)])


# --- reading -----------------------------------------------------------------------------------------------


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a serialized message, in wire order; raises ValueError
    when malformed.

    Values are raw: a varint (wire type 0) as its unsigned integer (an int64 -1 is 2**64 - 1), fixed64 and fixed32
    (wire types 1 and 5) as unsigned little-endian integers (a double is `struct.unpack("<d", v.to_bytes(8,
    "little"))`), length-delimited fields (wire type 2) as bytes. Groups (wire types 3 and 4) are not supported.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
        yield number, wire, value
