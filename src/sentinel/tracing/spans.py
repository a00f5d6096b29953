"""The SERVER and CLIENT spans of a proxied request (SPEC §6.4), with the stable HTTP semantic conventions.

Built only for sampled requests, at the end of each upstream attempt and of the exchange, straight into
OTLP bytes framed for the recorder (`otlp.framed_span_head`): what is the same for every request of a
method, status, route, connection or target is encoded once and cached, so that a span is a handful of
lookups and writes of its pieces (fields in field-number order, as `otlp.encode_span` writes them).

The pieces are written one by one into the recorder's batch (`ipc.batch`, a `librt.strings.BytesWriter`):
compiled, a write is a C call and a copy, and the span needs no bytes object, list entry or join of its
own. The frame head goes first, so the span's size is added up from its pieces beforehand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from librt.strings import BytesWriter, write_i64_le

from sentinel.config.model import RouteConfig
from sentinel.proxy.by_method import ByMethod
from sentinel.tracing.otlp import (
    IDS_AND_TIMES_SIZE,
    PARENT_SPAN_ID_HEAD,
    SPAN_END_TAG,
    SPAN_ID_HEAD,
    SPAN_START_TAG,
    STRING_HEAD_SLOTS,
    TRACE_ID_HEAD,
    AttrValue,
    SpanKind,
    StatusCode,
    encode_attributes,
    encode_span,
    framed_span_head,
    int_attribute,
    span_name_and_kind,
    span_status_and_flags,
    span_trace_state,
    string_attribute,
    string_attribute_head,
    string_attribute_heads,
)

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.proxy.listener import RouteRuntime
    from sentinel.upstream.target import TargetState

_PROTOCOL_VERSION: Final = {True: "1.0", False: "1.1"}

# Span.flags: W3C flags in the low byte; 0x100 says whether the parent is remote is known, 0x200 that it is.
_SAMPLED: Final = 0x01
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_RANDOM: Final = 0x02
_PARENT_FIELD_SIZE: Final = 10  # PARENT_SPAN_ID_HEAD and an 8-byte id

# Caches keyed by what a request brings. Its method: llhttp accepts a fixed set, so the dicts stay small;
# the bound is there all the same. The upstream's status (three digits, or 0 for none) and small body sizes
# index lists instead: a dict would box the int and hash it, ~400 instructions a lookup.
_CACHE_MAX: Final = 1024
_STATUSES: Final = 1000


class SpanStart:
    """What starts a span for one request method: its name and kind fields, and the attributes that
    depend only on the method (and, for a SERVER span, its route)."""

    __slots__ = ("attributes", "name")

    def __init__(self, name: bytes, attributes: bytes) -> None:
        self.name = name
        self.attributes = attributes


# request method -> the CLIENT span's name and kind fields, and its `http.request.method` attribute
_CLIENT_STARTS: Final = ByMethod[SpanStart](_CACHE_MAX)
# (unrouted requests) method -> the SERVER span's name and kind fields, and its method attribute (routed
# requests: the route's `span_names`, whose second piece also holds the route's attributes)
_UNROUTED_NAMES: Final = ByMethod[SpanStart](_CACHE_MAX)
_CLIENT_FLAGS: Final = _HAS_IS_REMOTE | _SAMPLED  # the parent, our SERVER span, is local
# The end of a CLIENT span with a transport error, by the random trace id flag.
_CLIENT_ERROR_ENDS: Final = (
    span_status_and_flags(StatusCode.ERROR, _CLIENT_FLAGS),
    span_status_and_flags(StatusCode.ERROR, _CLIENT_FLAGS | _RANDOM),
)
# [upstream status << 1 | random trace id flag] -> what ends a CLIENT span without a transport error: the
# status attribute, `error.type` for a 4xx or 5xx, the span status and the flags
_CLIENT_ENDS: Final[list[bytes | None]] = [None] * (_STATUSES << 1)
# The SERVER span's status and flags, by failed << 2 | remote parent << 1 | random trace id flag.
_SERVER_ENDS: Final = tuple(
    span_status_and_flags(
        StatusCode.ERROR if i & 4 else StatusCode.UNSET,
        _HAS_IS_REMOTE | _SAMPLED | (_IS_REMOTE if i & 2 else 0) | (_RANDOM if i & 1 else 0),
    )
    for i in range(8)
)
# [status << 3 | the index into _SERVER_ENDS] -> the status attribute and that end, together
_SERVER_STATUS_ENDS: Final[list[bytes | None]] = [None] * (_STATUSES << 3)
# The heads of string attributes whose values vary, by the value's length (otlp.string_attribute_heads).
_PATH_HEADS: Final = string_attribute_heads("url.path")
_URL_HEADS: Final = string_attribute_heads("url.full")
_CORRELATION_HEADS: Final = string_attribute_heads("sentinel.correlation_id")


_NO_REQUEST_BODY: Final = int_attribute("http.request.body.size", 0)
# [response body size] -> the two body-size attributes of a request without a body, for small responses
_NO_BODY_SIZES: Final[list[bytes | None]] = [None] * 4096


def _status_attribute(status: int) -> bytes:
    """`http.response.status_code` (nothing for 0: no response)."""
    return int_attribute("http.response.status_code", status) if status else b""


def _client_end(status: int, random: int) -> bytes:
    key = status << 1 | random
    end = _CLIENT_ENDS[key] if 0 <= status < _STATUSES else None
    if end is None:
        if status >= 400:
            end = string_attribute("error.type", str(status)) + _CLIENT_ERROR_ENDS[random]
        else:
            end = span_status_and_flags(StatusCode.UNSET, _CLIENT_FLAGS | (_RANDOM if random else 0))
        end = _status_attribute(status) + end
        if 0 <= status < _STATUSES:
            _CLIENT_ENDS[key] = end
    return end


def _server_end(status: int, end: int) -> bytes:
    key = status << 3 | end
    piece = _SERVER_STATUS_ENDS[key] if 0 <= status < _STATUSES else None
    if piece is None:
        piece = _status_attribute(status) + _SERVER_ENDS[end]
        if 0 <= status < _STATUSES:
            _SERVER_STATUS_ENDS[key] = piece
    return piece


def _body_sizes(request: int, response: int) -> bytes:
    if not request and response < len(_NO_BODY_SIZES):
        sizes = _NO_BODY_SIZES[response]
        if sizes is None:
            sizes = _NO_BODY_SIZES[response] = _NO_REQUEST_BODY + int_attribute("http.response.body.size", response)
        return sizes
    return int_attribute("http.request.body.size", request) + int_attribute("http.response.body.size", response)


def _head(heads: list[bytes | None], key: str, size: int) -> bytes:
    """The head of the string attribute `key` with a value of `size` bytes, from its cache `heads`."""
    head = heads[size] if size < STRING_HEAD_SLOTS else None
    return head if head is not None else string_attribute_head(key, size)


def _server_start(route: RouteRuntime | None, method: bytes) -> SpanStart:
    """The SERVER span's name and kind fields for this route and method, and the attributes that only
    depend on them (`http.request.method` and the route's own)."""
    names = route.span_names if route is not None else _UNROUTED_NAMES
    pieces = names.get(method)
    if pieces is None:
        # `{METHOD} {http.route}`, or the method alone without a route template
        text = method.decode("latin-1")
        template = route.template if route is not None else None
        name = span_name_and_kind(f"{text} {template}" if template is not None else text, SpanKind.SERVER)
        attributes = string_attribute("http.request.method", text)
        if route is not None:
            attributes += route.span_attributes
        pieces = names.put(method, SpanStart(name, attributes))
    return pieces


def _client_start(method: bytes) -> SpanStart:
    """The CLIENT span's name and kind fields for this method, and its `http.request.method` attribute."""
    pieces = _CLIENT_STARTS.get(method)
    if pieces is None:
        text = method.decode("latin-1")
        pieces = _CLIENT_STARTS.put(
            method, SpanStart(span_name_and_kind(text, SpanKind.CLIENT), string_attribute("http.request.method", text))
        )
    return pieces


def route_attributes(route: RouteConfig, template: str | None) -> bytes:
    """The SERVER-span attributes that are the same for every request of a route, encoded once at
    config load and appended to each span (protobuf concatenates repeated fields)."""
    attrs: list[tuple[str, AttrValue]] = []
    if template is not None:
        attrs.append(("http.route", template))
    attrs.append(("sentinel.route.id", route.id))
    if route.upstream:
        attrs.append(("sentinel.upstream.id", route.upstream))
    return encode_attributes(attrs)


def connection_attributes(
    scheme: str,
    server_port: int,
    client_ip: str,
    client_port: int,
    http10: bool,
    server_address: str,
    user_agent: bytes | None,
) -> bytes:
    """The SERVER-span attributes that are the same for every request on one client connection (or
    nearly: the Host and User-Agent a client sends rarely change between its requests, and when they
    do, the connection's cache is remade)."""
    attrs: list[tuple[str, AttrValue]] = [
        ("url.scheme", scheme),
        ("server.address", server_address),
        ("server.port", server_port),
        ("client.address", client_ip),
        ("network.peer.address", client_ip),
        ("network.peer.port", client_port),
        ("network.protocol.version", _PROTOCOL_VERSION[http10]),
    ]
    if user_agent is not None:
        attrs.append(("user_agent.original", user_agent.decode("latin-1")))
    return encode_attributes(attrs)


def _target_fields(target: TargetState) -> tuple[bytes, bytes]:
    """What the CLIENT spans of a target share: the start of `url.full` and the attributes that name the
    target. Encoded once per target."""
    cached = target.span_fields
    if cached is None:
        cached = target.span_fields = (
            f"http://{target.key}".encode(),
            encode_attributes(
                [
                    ("server.address", target.host),
                    ("server.port", target.port),
                    ("network.peer.address", target.host),
                    ("sentinel.upstream.id", target.upstream_id),
                ]
            ),
        )
    return cached


def write_server_span(out: BytesWriter, ex: Exchange, end_ns: int) -> None:
    """Write the request's SERVER span, framed, into `out` (the recorder's batch)."""
    proto = ex.proto
    opening = _server_start(ex.route, ex.method)
    name = opening.name
    method_attrs = opening.attributes
    parent = ex.parent
    if parent is None:
        parent_fields = b""
    else:
        parent_fields = PARENT_SPAN_ID_HEAD + parent.span_id
        if parent.tracestate:
            parent_fields = span_trace_state(parent.tracestate) + parent_fields
    path = ex.path.encode()  # decoded as latin-1: no lone surrogates
    path_head = _head(_PATH_HEADS, "url.path", len(path))
    query = string_attribute("url.query", ex.query) if ex.query and proto.ctx.record_query else b""
    status = ex.status
    sizes = _body_sizes(ex.request_body_bytes, ex.response_bytes)
    error = ex.error_type()
    error_attr = string_attribute("error.type", error) if error else b""
    correlation_id = ex.correlation_id.encode()
    correlation_head = _head(_CORRELATION_HEADS, "sentinel.correlation_id", len(correlation_id))
    h = ex.h
    connection_attrs = proto.span_attributes(ex.http10, ex.host, h.get(b"user-agent"))
    failed = 4 if status >= 500 or status == 0 else 0
    end = _server_end(status, failed | (0 if parent is None else 2) | (1 if ex.trace_flags & _RANDOM else 0))
    size = (
        IDS_AND_TIMES_SIZE
        + len(parent_fields)
        + len(name)
        + len(method_attrs)
        + len(path_head)
        + len(path)
        + len(query)
        + len(sizes)
        + len(error_attr)
        + len(correlation_head)
        + len(correlation_id)
        + len(connection_attrs)
        + len(end)
    )
    out.write(framed_span_head(size))
    out.write(TRACE_ID_HEAD)
    out.write(ex.trace_id)
    out.write(SPAN_ID_HEAD)
    out.write(ex.span_id)
    if parent_fields:
        out.write(parent_fields)
    out.write(name)
    _write_times(out, ex.start_ns, end_ns)
    out.write(method_attrs)
    out.write(path_head)
    out.write(path)
    if query:
        out.write(query)
    out.write(sizes)
    if error_attr:
        out.write(error_attr)
    out.write(correlation_head)
    out.write(correlation_id)
    out.write(connection_attrs)
    out.write(end)


def write_client_span(
    out: BytesWriter,
    ex: Exchange,
    target: TargetState,
    span_id: bytes,
    start_ns: int,
    end_ns: int,
    status: int,
    error: str,
) -> None:
    """Write the CLIENT span of one upstream attempt, framed, into `out` (the recorder's batch): named by
    the traceparent it sent (`span_id`), child of the SERVER span."""
    opening = _client_start(ex.method)
    name = opening.name
    method_attr = opening.attributes
    url_start, target_attrs = _target_fields(target)
    path = ex.path.encode()
    url_size = len(url_start) + len(path)
    url_head = _head(_URL_HEADS, "url.full", url_size)
    # The span's W3C flags are those of the traceparent it sent: sampled, and random as the trace's id is.
    random = 1 if ex.trace_flags & _RANDOM else 0
    if error:
        end = _status_attribute(status) + string_attribute("error.type", error) + _CLIENT_ERROR_ENDS[random]
    else:
        end = _client_end(status, random)
    resend = ex.attempts - 1
    if resend > 0:
        end = int_attribute("http.request.resend_count", resend) + end
    size = (
        IDS_AND_TIMES_SIZE
        + _PARENT_FIELD_SIZE
        + len(name)
        + len(method_attr)
        + len(url_head)
        + url_size
        + len(target_attrs)
        + len(end)
    )
    out.write(framed_span_head(size))
    out.write(TRACE_ID_HEAD)
    out.write(ex.trace_id)
    out.write(SPAN_ID_HEAD)
    out.write(span_id)
    out.write(PARENT_SPAN_ID_HEAD)
    out.write(ex.span_id)
    out.write(name)
    _write_times(out, start_ns, end_ns)
    out.write(method_attr)
    out.write(url_head)
    out.write(url_start)
    out.write(path)
    out.write(target_attrs)
    out.write(end)


def _write_times(out: BytesWriter, start_ns: int, end_ns: int) -> None:
    # The start and end time fields, as `otlp.span_times` makes them: compiled, `write_i64_le` is a store
    # into the buffer, where struct.pack costs ~1,500 instructions for the pair.
    out.append(SPAN_START_TAG)
    write_i64_le(out, start_ns)
    out.append(SPAN_END_TAG)
    write_i64_le(out, end_ns)


def agent_call_span(
    trace_id: bytes,
    parent_span_id: bytes,
    span_id: bytes,
    agent_id: str,
    event: str,
    start_ns: int,
    end_ns: int,
    *,
    decision: str,
    outcome: str,
    failure_mode: str,
    audit: dict[str, list[str]] | None = None,
    trace_flags: int = 0,
) -> bytes:
    """One call to an agent (SPEC §6.4): kind CLIENT, child of the SERVER span (`parent_span_id`), named
    `agent {ID} {event}`.

    `span_id` is the id already sent to the agent in `metadata.traceparent`, so the agent's own spans
    are this span's children. `outcome` is ok / timeout / error / circuit_open; anything but ok is an
    error. `audit` carries the agent's tags and rule ids as string-array attributes; `trace_flags` are the
    request's (their random-trace-id bit is kept). Framed, as the recorder takes spans.
    """
    attrs: list[tuple[str, AttrValue]] = [
        ("sentinel.agent.id", agent_id),
        ("sentinel.agent.event", event),
        ("sentinel.agent.decision", decision),
        ("sentinel.agent.outcome", outcome),
        ("sentinel.agent.failure_mode", failure_mode),
    ]
    if outcome != "ok":
        attrs.append(("error.type", outcome))
    for key, values in (audit or {}).items():
        if values:
            attrs.append((f"sentinel.agent.{key}", list(values)))
    body = encode_span(
        trace_id,
        span_id,
        parent_span_id,
        f"agent {agent_id} {event}",
        SpanKind.CLIENT,
        start_ns,
        end_ns,
        attrs,
        status_code=StatusCode.ERROR if outcome != "ok" else StatusCode.UNSET,
        flags=_HAS_IS_REMOTE | _SAMPLED | (trace_flags & _RANDOM),
    )
    return framed_span_head(len(body)) + body
