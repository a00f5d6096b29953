"""Zipkin v2 JSON for `backend "zipkin"` (SPEC §6.5): OTLP `Span` bytes in, the body of `POST /api/v2/spans` out.

Why this decodes protobuf: the workers write each finished span straight into the bytes of one OTLP `Span`
message (`otlp.encode_span`, because the SDK is too slow on the request path), and the supervisor's exporter
only ever holds those bytes. Turning them into Zipkin JSON therefore starts by reading them back; that is done
here with `otlp.iter_fields` and the standard library, so the supervisor needs neither the OpenTelemetry SDK's
span model nor its Zipkin exporter (and its `requests` dependency) just to re-encode spans it already has. It
runs in the supervisor, once per export batch, never on the request path. Every `trace.proto` field with a Zipkin
counterpart is read, not only the ones `encode_span` writes today, and unknown fields are skipped.

The mapping is the OpenTelemetry specification's "OpenTelemetry to Zipkin Transformation" (with the generic
"Transformation to non-OTLP Formats" rules where it defers to them):

- `traceId` (32 hex), `id` (16 hex), `parentId` when the span has a parent, `name`;
- `kind`: SERVER, CLIENT, PRODUCER, CONSUMER; left out for INTERNAL and unspecified;
- `timestamp` and `duration` in whole microseconds (rounded to the nearest, as the SDK does); a duration is at
  least 1 (Zipkin's v2 API has no zero durations);
- `localEndpoint.serviceName` from the resource's `service.name`; the other resource attributes become tags;
- `remoteEndpoint`, for CLIENT and PRODUCER spans only, from the attributes in the specification's ranking: the
  first of `peer.service`, `server.address`, `net.peer.name`, `server.socket.domain`, `net.sock.peer.name`,
  `peer.hostname`, `db.name` as `serviceName`; the first of `network.peer.address`, `server.socket.address`,
  `net.sock.peer.addr`, `peer.address` (or else of the names above) that is an IP address as `ipv4`/`ipv6`
  (an IPv4-mapped IPv6 address as `ipv4`); the port that goes with that attribute (`network.peer.port`, ...)
  or else `server.port`/`net.peer.port`/`network.peer.port` as `port`; nothing when neither name nor address;
- `tags`: resource attributes, then span attributes, as strings: booleans `"true"`/`"false"`, numbers with
  `str`, arrays and maps as compact JSON, bytes as base64; `otel.scope.name`/`otel.scope.version`;
  `otel.status_code` `"OK"`/`"ERROR"` unless the status is UNSET, and on ERROR `error` = the status message
  (`""` when there is none), while an `error` attribute of `false` on a span without an error status is
  removed; `otel.dropped_{attributes,events,links}_count` when not zero;
- `annotations`: one per event, `timestamp` in microseconds and `value` `"<name>":{<attributes as JSON>}`, the
  specification's form (as opentelemetry-java writes it);
- absent or empty fields are left out; trace state, flags and links have no Zipkin counterpart and are dropped.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from sentinel.tracing.otlp import AttrValue, SpanKind, StatusCode, iter_fields

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_SERVICE_NAME",
    "AnyValue",
    "DecodedEvent",
    "DecodedSpan",
    "ZipkinEncoder",
    "decode_span",
    "tag_value",
]

CONTENT_TYPE: Final = "application/json"
DEFAULT_SERVICE_NAME: Final = "unknown_service"  # the SDK default Resource's, for a resource without one

# A decoded OTLP AnyValue: the ArrayValue and KeyValueList members as list and dict, an empty AnyValue as None.
AnyValue: TypeAlias = "str | bool | int | float | bytes | list[AnyValue] | dict[str, AnyValue] | None"

_KINDS: Final = {
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}
_REMOTE_KINDS: Final = frozenset({SpanKind.CLIENT, SpanKind.PRODUCER})
# The specification's remoteEndpoint ranking, split into what names the peer and what addresses it.
_REMOTE_NAMES: Final = (
    "peer.service",
    "server.address",
    "net.peer.name",
    "server.socket.domain",
    "net.sock.peer.name",
    "peer.hostname",
    "db.name",
)
_REMOTE_ADDRESSES: Final = (
    ("network.peer.address", "network.peer.port"),
    ("server.socket.address", "server.socket.port"),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("peer.address", ""),
)
_NAME_PORTS: Final = {"server.address": "server.port", "net.peer.name": "net.peer.port"}
_FALLBACK_PORTS: Final = ("server.port", "net.peer.port", "network.peer.port")
_MAX_DEPTH: Final = 32  # nesting of arrays and maps in an AnyValue
_TWO_63: Final = 1 << 63
_TWO_64: Final = 1 << 64
_unpack_double = struct.Struct("<d").unpack


@dataclass(slots=True)
class DecodedEvent:
    time_ns: int = 0
    name: str = ""
    attributes: list[tuple[str, AnyValue]] = field(default_factory=list)
    dropped_attributes: int = 0


@dataclass(slots=True)
class DecodedSpan:
    """The fields of an OTLP `Span` that Zipkin has a place for (ids as bytes, times in Unix nanoseconds)."""

    trace_id: bytes = b""
    span_id: bytes = b""
    parent_span_id: bytes = b""
    name: str = ""
    kind: int = 0
    start_ns: int = 0
    end_ns: int = 0
    attributes: list[tuple[str, AnyValue]] = field(default_factory=list)
    dropped_attributes: int = 0
    events: list[DecodedEvent] = field(default_factory=list)
    dropped_events: int = 0
    dropped_links: int = 0
    status_code: int = StatusCode.UNSET
    status_message: str = ""


# --- decoding ----------------------------------------------------------------------------------------------


def _bytes(number: int, wire: int, value: int | bytes) -> bytes:
    if wire != 2 or not isinstance(value, bytes):
        raise ValueError(f"field {number}: expected a length-delimited value")
    return value


def _text(number: int, wire: int, value: int | bytes) -> str:
    return _bytes(number, wire, value).decode("utf-8", "replace")


def _int(number: int, wire: int, value: int | bytes, expected_wire: int = 0) -> int:
    if wire != expected_wire or not isinstance(value, int):
        raise ValueError(f"field {number}: expected wire type {expected_wire}")
    return value


def _signed(value: int) -> int:
    """A varint read as int64/int32 (negative numbers are sign-extended to 64 bits on the wire)."""
    value %= _TWO_64
    return value - _TWO_64 if value >= _TWO_63 else value


def _any_value(buf: bytes, depth: int = 0) -> AnyValue:
    if depth > _MAX_DEPTH:
        raise ValueError("AnyValue nested too deeply")
    result: AnyValue = None
    for number, wire, value in iter_fields(buf):  # a oneof: the last member on the wire wins
        if number == 1:
            result = _text(number, wire, value)
        elif number == 2:
            result = _int(number, wire, value) != 0
        elif number == 3:
            result = _signed(_int(number, wire, value))
        elif number == 4:
            result = _unpack_double(_int(number, wire, value, 1).to_bytes(8, "little"))[0]
        elif number == 5:  # ArrayValue { repeated AnyValue values = 1; }
            result = [
                _any_value(_bytes(n, w, v), depth + 1) for n, w, v in iter_fields(_bytes(number, wire, value)) if n == 1
            ]
        elif number == 6:  # KeyValueList { repeated KeyValue values = 1; }
            result = dict(
                _key_value(_bytes(n, w, v), depth + 1) for n, w, v in iter_fields(_bytes(number, wire, value)) if n == 1
            )
        elif number == 7:
            result = _bytes(number, wire, value)
    return result


def _key_value(buf: bytes, depth: int = 0) -> tuple[str, AnyValue]:
    key, result = "", None
    for number, wire, value in iter_fields(buf):
        if number == 1:
            key = _text(number, wire, value)
        elif number == 2:
            result = _any_value(_bytes(number, wire, value), depth)
    return key, result


def _event(buf: bytes) -> DecodedEvent:
    event = DecodedEvent()
    for number, wire, value in iter_fields(buf):
        if number == 1:
            event.time_ns = _int(number, wire, value, 1)
        elif number == 2:
            event.name = _text(number, wire, value)
        elif number == 3:
            event.attributes.append(_key_value(_bytes(number, wire, value)))
        elif number == 4:
            event.dropped_attributes = _int(number, wire, value)
    return event


def decode_span(buf: bytes) -> DecodedSpan:
    """Read the bytes of one OTLP `Span` message (as `otlp.encode_span` writes them); ValueError if malformed."""
    span = DecodedSpan()
    for number, wire, value in iter_fields(buf):
        if number == 1:
            span.trace_id = _bytes(number, wire, value)
        elif number == 2:
            span.span_id = _bytes(number, wire, value)
        elif number == 4:
            span.parent_span_id = _bytes(number, wire, value)
        elif number == 5:
            span.name = _text(number, wire, value)
        elif number == 6:
            span.kind = _signed(_int(number, wire, value))
        elif number == 7:
            span.start_ns = _int(number, wire, value, 1)
        elif number == 8:
            span.end_ns = _int(number, wire, value, 1)
        elif number == 9:
            span.attributes.append(_key_value(_bytes(number, wire, value)))
        elif number == 10:
            span.dropped_attributes = _int(number, wire, value)
        elif number == 11:
            span.events.append(_event(_bytes(number, wire, value)))
        elif number == 12:
            span.dropped_events = _int(number, wire, value)
        elif number == 14:
            span.dropped_links = _int(number, wire, value)
        elif number == 15:
            for n2, w2, v2 in iter_fields(_bytes(number, wire, value)):  # Status (field 1 is reserved)
                if n2 == 2:
                    span.status_message = _text(n2, w2, v2)
                elif n2 == 3:
                    span.status_code = _signed(_int(n2, w2, v2))
        # 3 trace_state, 13 links, 16 flags: nothing in Zipkin to put them in.
    return span


# --- mapping -----------------------------------------------------------------------------------------------


def _jsonable(value: object) -> object:
    """An attribute value as what `json.dumps` should write: bytes as base64, containers recursively."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def tag_value(value: object) -> str:
    """An attribute value as a Zipkin tag: strings as they are, booleans lower case, numbers with `str`,
    bytes as base64, arrays and maps as compact JSON, an empty value as ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return json.dumps(_jsonable(value), separators=(",", ":"))


def _micros(ns: int) -> int:
    return (ns + 500) // 1000


def _ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:  # Zipkin has no place for a zone
            return ipaddress.IPv6Address(str(address).partition("%")[0])
    return address


def _port(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 0xFFFF:
        return value
    return None


def _remote_endpoint(attributes: dict[str, AnyValue]) -> dict[str, object] | None:
    name_key = next((k for k in _REMOTE_NAMES if isinstance(attributes.get(k), str) and attributes[k]), None)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port_keys: tuple[str, ...] = ()
    for address_key, port_key in _REMOTE_ADDRESSES:
        address = _ip(attributes.get(address_key))
        if address is not None:
            port_keys = (port_key,) if port_key else ()
            break
    else:  # no address attribute: a name attribute holding an IP literal (server.address "10.0.0.9") will do
        for key in _REMOTE_NAMES:
            address = _ip(attributes.get(key))
            if address is not None:
                port_keys = (_NAME_PORTS[key],) if key in _NAME_PORTS else ()
                break
    if name_key is None and address is None:
        return None
    if name_key in _NAME_PORTS:
        port_keys += (_NAME_PORTS[name_key],)
    endpoint: dict[str, object] = {}
    if name_key is not None:
        endpoint["serviceName"] = attributes[name_key]
    if isinstance(address, ipaddress.IPv4Address):
        endpoint["ipv4"] = str(address)
    elif address is not None:
        endpoint["ipv6"] = str(address)
    port = next((p for k in (*port_keys, *_FALLBACK_PORTS) if (p := _port(attributes.get(k))) is not None), None)
    if port is not None:
        endpoint["port"] = port
    return endpoint


def _annotation_value(event: DecodedEvent) -> str:
    attributes = {key: _jsonable(value) for key, value in event.attributes}
    return f"{json.dumps(event.name)}:{json.dumps(attributes, separators=(',', ':'))}"


class ZipkinEncoder:
    """Turns batches of OTLP `Span` bytes, all of one resource and instrumentation scope, into Zipkin v2 JSON."""

    def __init__(
        self,
        resource_attributes: Iterable[tuple[str, AttrValue]],
        scope_name: str = "",
        scope_version: str = "",
    ) -> None:
        """`resource_attributes` as given to `SpanExporter`: `service.name` names the local endpoint (else
        "unknown_service"), the others become tags of every span."""
        service_name = ""
        self._resource_tags: dict[str, str] = {}
        for key, value in resource_attributes:
            if key == "service.name":
                service_name = tag_value(value)
            else:
                self._resource_tags[key] = tag_value(value)
        self._local_endpoint: dict[str, object] = {"serviceName": service_name or DEFAULT_SERVICE_NAME}
        self._scope_tags: dict[str, str] = {}
        if scope_name:
            self._scope_tags["otel.scope.name"] = scope_name
        if scope_version:
            self._scope_tags["otel.scope.version"] = scope_version

    def convert(self, span: bytes | DecodedSpan) -> dict[str, object]:
        """One Zipkin span (a dict ready for `json.dumps`) from OTLP `Span` bytes; ValueError if malformed."""
        s = span if isinstance(span, DecodedSpan) else decode_span(span)
        out: dict[str, object] = {"traceId": s.trace_id.hex()}
        if s.parent_span_id:
            out["parentId"] = s.parent_span_id.hex()
        out["id"] = s.span_id.hex()
        kind = _KINDS.get(s.kind)
        if kind is not None:
            out["kind"] = kind
        if s.name:
            out["name"] = s.name
        if s.start_ns:
            out["timestamp"] = _micros(s.start_ns)
            if s.end_ns:
                out["duration"] = max(1, _micros(s.end_ns - s.start_ns))
        out["localEndpoint"] = dict(self._local_endpoint)
        attributes = dict(s.attributes)
        if s.kind in _REMOTE_KINDS:
            remote = _remote_endpoint(attributes)
            if remote is not None:
                out["remoteEndpoint"] = remote
        if s.events:
            out["annotations"] = [{"timestamp": _micros(e.time_ns), "value": _annotation_value(e)} for e in s.events]
        tags = dict(self._resource_tags)
        for key, value in attributes.items():
            tags[key] = tag_value(value)
        for key, count in (
            ("otel.dropped_attributes_count", s.dropped_attributes),
            ("otel.dropped_events_count", s.dropped_events),
            ("otel.dropped_links_count", s.dropped_links),
        ):
            if count:
                tags[key] = str(count)
        tags.update(self._scope_tags)
        if s.status_code == StatusCode.ERROR:
            tags["otel.status_code"] = "ERROR"
            tags["error"] = s.status_message
        else:
            if s.status_code == StatusCode.OK:
                tags["otel.status_code"] = "OK"
            if tags.get("error") == "false":  # Zipkin would count any `error` tag as a failure
                del tags["error"]
        if tags:
            out["tags"] = tags
        return out

    def encode(self, spans: Sequence[bytes]) -> tuple[bytes, int]:
        """The JSON array of the spans (compact, ASCII) and the number of spans left out as unreadable."""
        converted: list[dict[str, object]] = []
        for span in spans:
            try:
                converted.append(self.convert(span))
            except ValueError:
                continue
        payload = json.dumps(converted, separators=(",", ":")).encode("ascii")
        return payload, len(spans) - len(converted)
