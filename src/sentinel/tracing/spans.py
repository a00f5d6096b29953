"""The SERVER and CLIENT spans of a proxied request (SPEC §6.4), with the stable HTTP semantic conventions.

Built only for sampled requests, at the end of each upstream attempt and of the exchange, straight into
OTLP bytes framed for the recorder (`otlp.framed_span_head`): what is the same for every request of a
method, status, route, connection or target is encoded once and cached, so that a span is a handful of
lookups and one join of its pieces (fields in field-number order, as `otlp.encode_span` writes them).

The join is a bytes `%` with only `%s`: compiled, that is one allocation and a copy per piece, where
`b"".join` takes and releases a buffer per piece (about four times the instructions for a span).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sentinel.config.model import RouteConfig
from sentinel.tracing.otlp import (
    IDS_AND_TIMES_SIZE,
    PARENT_SPAN_ID_HEAD,
    SPAN_ID_HEAD,
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
    span_times,
    span_trace_state,
    string_attribute,
    string_attribute_head,
)

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.upstream.target import TargetState

_PROTOCOL_VERSION = {True: "1.0", False: "1.1"}

# Span.flags: W3C flags in the low byte; 0x100 says whether the parent is remote is known, 0x200 that it is.
_SAMPLED: Final = 0x01
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_RANDOM: Final = 0x02
_PARENT_FIELD_SIZE: Final = 10  # PARENT_SPAN_ID_HEAD and an 8-byte id

# Caches keyed by what a request brings (its method, the upstream's status): llhttp accepts a fixed set of
# methods and statuses have three digits, so they stay small; the bound is there all the same.
_CACHE_MAX: Final = 1024


def _cached(cache: dict[bytes, bytes] | dict[int, bytes], key: bytes | int, value: bytes) -> bytes:
    if len(cache) < _CACHE_MAX:
        cache[key] = value  # type: ignore[index]
    return value


# request method -> the CLIENT span's name and kind fields
_CLIENT_NAMES: dict[bytes, bytes] = {}
# request method -> its `http.request.method` attribute
_METHOD_ATTRIBUTES: dict[bytes, bytes] = {}
# (unrouted requests) method -> the SERVER span's name and kind fields
_UNROUTED_NAMES: dict[bytes, bytes] = {}
# response status -> its `http.response.status_code` attribute
_STATUS_ATTRIBUTES: dict[int, bytes] = {0: b""}
# upstream status << 1 | random trace id flag -> what ends a CLIENT span without a transport error: the
# status attribute, `error.type` for a 4xx or 5xx, the span status and the flags
_CLIENT_ENDS: dict[int, bytes] = {}
_CLIENT_FLAGS: Final = _HAS_IS_REMOTE | _SAMPLED  # the parent, our SERVER span, is local
# The end of a CLIENT span with a transport error, by the random trace id flag.
_CLIENT_ERROR_ENDS: Final = (
    span_status_and_flags(StatusCode.ERROR, _CLIENT_FLAGS),
    span_status_and_flags(StatusCode.ERROR, _CLIENT_FLAGS | _RANDOM),
)
# The SERVER span's status and flags, by failed << 2 | remote parent << 1 | random trace id flag.
_SERVER_ENDS: Final = tuple(
    span_status_and_flags(
        StatusCode.ERROR if i & 4 else StatusCode.UNSET,
        _HAS_IS_REMOTE | _SAMPLED | (_IS_REMOTE if i & 2 else 0) | (_RANDOM if i & 1 else 0),
    )
    for i in range(8)
)


_NO_REQUEST_BODY: Final = int_attribute("http.request.body.size", 0)


def _method_attribute(method: bytes) -> bytes:
    attribute = _METHOD_ATTRIBUTES.get(method)
    if attribute is None:
        attribute = _cached(
            _METHOD_ATTRIBUTES, method, string_attribute("http.request.method", method.decode("latin-1"))
        )
    return attribute


def _status_attribute(status: int) -> bytes:
    attribute = _STATUS_ATTRIBUTES.get(status)
    if attribute is None:
        attribute = _cached(_STATUS_ATTRIBUTES, status, int_attribute("http.response.status_code", status))
    return attribute


def _client_end(status: int, random: int) -> bytes:
    key = status << 1 | random
    end = _CLIENT_ENDS.get(key)
    if end is None:
        if status >= 400:
            end = string_attribute("error.type", str(status)) + _CLIENT_ERROR_ENDS[random]
        else:
            end = span_status_and_flags(StatusCode.UNSET, _CLIENT_FLAGS | (_RANDOM if random else 0))
        end = _cached(_CLIENT_ENDS, key, _status_attribute(status) + end)
    return end


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


def server_span(ex: Exchange, end_ns: int) -> bytes:
    """The request's SERVER span, framed."""
    proto = ex.proto
    route = ex.route
    method = ex.method
    names = route.span_names if route is not None else _UNROUTED_NAMES
    name = names.get(method)
    if name is None:
        # `{METHOD} {http.route}`, or the method alone without a route template
        text = method.decode("latin-1")
        template = route.template if route is not None else None
        name = _cached(
            names, method, span_name_and_kind(f"{text} {template}" if template is not None else text, SpanKind.SERVER)
        )
    parent = ex.parent
    if parent is None:
        parent_fields = b""
    else:
        parent_fields = PARENT_SPAN_ID_HEAD + parent.span_id
        if parent.tracestate:
            parent_fields = span_trace_state(parent.tracestate) + parent_fields
    path = ex.path.encode()  # decoded as latin-1: no lone surrogates
    path_head = string_attribute_head("url.path", len(path))
    query = string_attribute("url.query", ex.query) if ex.query and proto.ctx.record_query else b""
    route_attrs = route.span_attributes if route is not None else b""
    status = ex.status
    request_body = ex.request_body_bytes
    sizes = (
        int_attribute("http.request.body.size", request_body) if request_body else _NO_REQUEST_BODY
    ) + int_attribute("http.response.body.size", ex.response_bytes)
    error = ex.error_type()
    error_attr = string_attribute("error.type", error) if error else b""
    correlation_id = ex.correlation_id.encode()
    correlation_head = string_attribute_head("sentinel.correlation_id", len(correlation_id))
    h = ex.h
    connection_attrs = proto.span_attributes(ex.http10, h.get(b"host"), h.get(b"user-agent"))
    method_attr = _method_attribute(method)
    status_attr = _status_attribute(status)
    end = _SERVER_ENDS[
        (4 if status >= 500 or status == 0 else 0)
        | (0 if parent is None else 2)
        | (1 if ex.trace_flags & _RANDOM else 0)
    ]
    size = (
        IDS_AND_TIMES_SIZE
        + len(parent_fields)
        + len(name)
        + len(method_attr)
        + len(path_head)
        + len(path)
        + len(query)
        + len(status_attr)
        + len(sizes)
        + len(error_attr)
        + len(correlation_head)
        + len(correlation_id)
        + len(connection_attrs)
        + len(route_attrs)
        + len(end)
    )
    return b"%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s" % (
        framed_span_head(size),
        TRACE_ID_HEAD,
        ex.trace_id,
        SPAN_ID_HEAD,
        ex.span_id,
        parent_fields,
        name,
        span_times(ex.start_ns, end_ns),
        method_attr,
        path_head,
        path,
        query,
        status_attr,
        sizes,
        error_attr,
        correlation_head,
        correlation_id,
        connection_attrs,
        route_attrs,
        end,
    )


def client_span(
    ex: Exchange, target: TargetState, span_id: bytes, start_ns: int, end_ns: int, status: int, error: str
) -> bytes:
    """The CLIENT span of one upstream attempt, framed: named by the traceparent it sent (`span_id`),
    child of the SERVER span."""
    method = ex.method
    name = _CLIENT_NAMES.get(method)
    if name is None:
        name = _cached(_CLIENT_NAMES, method, span_name_and_kind(method.decode("latin-1"), SpanKind.CLIENT))
    method_attr = _method_attribute(method)
    url_start, target_attrs = _target_fields(target)
    path = ex.path.encode()
    url_size = len(url_start) + len(path)
    url_head = string_attribute_head("url.full", url_size)
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
    return b"%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s" % (
        framed_span_head(size),
        TRACE_ID_HEAD,
        ex.trace_id,
        SPAN_ID_HEAD,
        span_id,
        PARENT_SPAN_ID_HEAD,
        ex.span_id,
        name,
        span_times(start_ns, end_ns),
        method_attr,
        url_head,
        url_start,
        path,
        target_attrs,
        end,
    )


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
