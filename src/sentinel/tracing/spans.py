"""The SERVER and CLIENT spans of a proxied request (SPEC §6.4), with the stable HTTP semantic conventions.

Built only for sampled requests, at the end of each upstream attempt and of the exchange, straight
into OTLP bytes: attribute by attribute (`otlp.span_parts` ... `otlp.finish_span`), with what is the same
for every request of a route, connection or target encoded once and appended as bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentinel.config.model import RouteConfig
from sentinel.tracing.otlp import (
    AttrValue,
    SpanKind,
    StatusCode,
    encode_attributes,
    encode_span,
    finish_span,
    put_int_attribute,
    put_string_attribute,
    span_parts,
)

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.upstream.target import TargetState

_PROTOCOL_VERSION = {True: "1.0", False: "1.1"}


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


def _target_attrs(target: TargetState) -> bytes:
    """The CLIENT-span attributes that are the same for every attempt on a target, encoded once per target."""
    cached = target.span_attributes
    if cached is None:
        cached = target.span_attributes = encode_attributes(
            [
                ("server.address", target.host),
                ("server.port", target.port),
                ("network.peer.address", target.host),
                ("sentinel.upstream.id", target.upstream_id),
            ]
        )
    return cached


def server_span(ex: Exchange, end_ns: int) -> bytes:
    proto = ex.proto
    ctx = proto.ctx
    route = ex.route
    method = ex.method.decode("latin-1")
    template = route.template if route is not None else None
    parent = ex.parent
    out = span_parts(
        ex.trace_id,
        ex.span_id,
        parent.span_id if parent is not None else b"",
        f"{method} {template}" if template is not None else method,
        SpanKind.SERVER,
        ex.start_ns,
        end_ns,
        (parent.tracestate or "") if parent is not None else "",
    )
    put_string_attribute(out, "http.request.method", method)
    put_string_attribute(out, "url.path", ex.path)
    if ex.query and ctx.tracing is not None and ctx.tracing.record_query:
        put_string_attribute(out, "url.query", ex.query)
    if ex.status:
        put_int_attribute(out, "http.response.status_code", ex.status)
    put_int_attribute(out, "http.request.body.size", ex.request_body_bytes)
    put_int_attribute(out, "http.response.body.size", ex.response_bytes)
    error = ex.error_type()
    if error:
        put_string_attribute(out, "error.type", error)
    put_string_attribute(out, "sentinel.correlation_id", ex.correlation_id)
    h = ex.h
    out.append(proto.span_attributes(ex.http10, h.get(b"host"), h.get(b"user-agent")))
    if route is not None:
        out.append(route.span_attributes)
    failed = ex.status >= 500 or ex.status == 0
    return finish_span(out, StatusCode.ERROR if failed else StatusCode.UNSET, flags=_remote_parent_flags(ex))


def client_span(
    ex: Exchange, target: TargetState, span_id: bytes, start_ns: int, end_ns: int, status: int, error: str
) -> bytes:
    method = ex.method.decode("latin-1")
    out = span_parts(ex.trace_id, span_id, ex.span_id, method, SpanKind.CLIENT, start_ns, end_ns)
    put_string_attribute(out, "http.request.method", method)
    put_string_attribute(out, "url.full", f"http://{target.key}{ex.path}")
    if status:
        put_int_attribute(out, "http.response.status_code", status)
    resend = ex.attempts - 1
    if resend > 0:
        put_int_attribute(out, "http.request.resend_count", resend)
    if error:
        put_string_attribute(out, "error.type", error)
    elif status >= 400:
        put_string_attribute(out, "error.type", str(status))
    out.append(_target_attrs(target))
    return finish_span(
        out,
        StatusCode.ERROR if error or status >= 400 else StatusCode.UNSET,
        # has-is-remote known, parent (our SERVER span) is local
        flags=0x100 | _SAMPLED_FLAGS,
    )


_SAMPLED_FLAGS = 0x01


def _remote_parent_flags(ex: Exchange) -> int:
    # Span.flags: W3C flags in the low byte; 0x100 says whether the parent is remote is known, 0x200 that it is.
    if ex.parent is None:
        return 0x100 | _SAMPLED_FLAGS | (ex.trace_flags & 0x02)
    return 0x300 | _SAMPLED_FLAGS | (ex.trace_flags & 0x02)


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
) -> bytes:
    """One call to an agent (SPEC §6.4): kind CLIENT, child of the SERVER span (`parent_span_id`), named
    `agent {ID} {event}`.

    `span_id` is the id already sent to the agent in `metadata.traceparent`, so the agent's own spans
    are this span's children. `outcome` is ok / timeout / error / circuit_open; anything but ok is an
    error. `audit` carries the agent's tags and rule ids as string-array attributes.
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
    return encode_span(
        trace_id,
        span_id,
        parent_span_id,
        f"agent {agent_id} {event}",
        SpanKind.CLIENT,
        start_ns,
        end_ns,
        attrs,
        status_code=StatusCode.ERROR if outcome != "ok" else StatusCode.UNSET,
        flags=0x100 | _SAMPLED_FLAGS,
    )
