"""The client side of the data plane: one asyncio protocol per client connection (SPEC §3).

httptools parses the request; when its head is complete an `Exchange` is queued. Exchanges on one
connection run one at a time, in order (pipelining); while one runs, a following request's body is
buffered and reading is paused, so memory stays bounded. Everything is callback-driven: a task is
created only to open a new upstream connection.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import httptools

from sentinel.config.model import Config, LimitsConfig, ListenerConfig, ListenerProtocol, Propagator, RouteConfig
from sentinel.logging.access import AccessLog, route_fields
from sentinel.metrics.recording import RouteMetrics, UpstreamMetrics, WorkerMetrics
from sentinel.proxy.builtins import ERROR_JSON, Builtins
from sentinel.proxy.by_method import ByMethod
from sentinel.proxy.errors import error_body, reason
from sentinel.proxy.exchange import Exchange
from sentinel.proxy.headers import HOP_BY_HOP, REPLACED_UPSTREAM, compile_ops, host_port, host_without_port
from sentinel.proxy.router import Router
from sentinel.tracing.context import SpanContext
from sentinel.tracing.correlation import generator
from sentinel.tracing.policy import TracePolicy
from sentinel.tracing.propagators import B3_HEADERS, JAEGER_HEADERS, parse_b3, parse_jaeger
from sentinel.tracing.recorder import SpanRecorder
from sentinel.tracing.spans import SpanStart, connection_attributes, route_attributes

if TYPE_CHECKING:
    from sentinel.agents.manager import AgentManager, RouteAgents
    from sentinel.upstream.cluster import Cluster


class RequestTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""

    def __init__(self, status: int, message: str, blocked: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.blocked = blocked  # sentinel_blocked_requests_total{reason}


@dataclass(slots=True)
class RouteRuntime:
    """Per-route data computed once per config, not per request."""

    config: RouteConfig
    template: str | None
    cluster: Cluster | None
    request_ops: tuple[tuple[str, bytes, bytes], ...]
    response_ops: tuple[tuple[str, bytes, bytes], ...]
    max_attempts: int
    trace: TracePolicy | None  # None when tracing is not configured
    span_attributes: bytes  # the SERVER-span attributes constant for this route, pre-encoded
    # request method -> the SERVER span's name and kind fields, and its method attribute with
    # `span_attributes`, encoded on first use (tracing/spans.py)
    span_names: ByMethod[SpanStart] = field(default_factory=ByMethod)
    metrics: RouteMetrics | None = None  # None when metrics are off
    upstream_metrics: UpstreamMetrics | None = None
    log_fields: bytes = b""  # this route's fields of an access-log line, pre-formatted
    agents: RouteAgents | None = None  # None: the route calls no agents
    plain: bool = False  # proxied, no agents: the request goes straight to an upstream attempt
    timeout: float | None = None  # the route's whole-request timeout
    read_timeout: float = 0.0  # its upstream's read timeout


class ConnectionBudget:
    """Open client connections of one worker, across its listeners, against its share of
    `system.max-connections`. Over the limit a new connection is closed at once (as nginx does when
    `worker_connections` is exhausted), which keeps memory bounded under a connection flood."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class ListenerContext:
    """Everything a connection needs, built once per config and listener."""

    __slots__ = (
        "access_log",
        "budget",
        "builtins",
        "config",
        "extra_extractors",
        "keepalive_timeout",
        "limits",
        "listener",
        "loop",
        "metrics",
        "new_id",
        "observed",
        "open_connections",
        "propagate",
        "record_query",
        "recorder",
        "request_timeout",
        "router",
        "routes",
        "scheme",
        "server_port",
        "timer_step",
        "trace_ids",
        "traceresponse",
        "tracing",
        "unrouted_trace",
        "upstream_drop",
        "write_b3",
        "write_jaeger",
    )

    def __init__(
        self,
        config: Config,
        listener: ListenerConfig,
        builtins: Builtins,
        clusters: dict[str, Cluster],
        loop: asyncio.AbstractEventLoop,
        budget: ConnectionBudget | None = None,
        recorder: SpanRecorder | None = None,
        metrics: WorkerMetrics | None = None,
        access_log: AccessLog | None = None,
        agents: AgentManager | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.metrics = metrics
        self.access_log = access_log
        # Whether every finished request has something to report (metrics, access log, log agents); a
        # sampled one also has its spans.
        self.observed = metrics is not None or access_log is not None or agents is not None
        self.budget = budget or ConnectionBudget(config.system.max_connections)
        self.listener = listener
        self.router = Router(config, listener)
        self.builtins = builtins
        self.limits: LimitsConfig = config.limits
        self.loop = loop
        self.new_id = generator(config.system.trace_id_format)
        self.scheme = b"https" if listener.protocol is ListenerProtocol.HTTPS else b"http"
        self.server_port = listener.address.port
        self.request_timeout = listener.request_timeout_secs
        self.keepalive_timeout = listener.keepalive_timeout_secs
        # A connection's timer is never set further out than the shortest timeout, so that the next deadline
        # (keep-alive, then request head, then keep-alive...) is nearly always later than the pending timer
        # and moving it costs an assignment: no timer is created or cancelled per request.
        self.timer_step = min((t for t in (self.request_timeout, self.keepalive_timeout) if t > 0), default=0.0)
        self.open_connections: set[HttpProtocol] = set()
        tracing = config.observability.tracing
        self.tracing = tracing
        self.record_query = tracing is not None and tracing.record_query  # url.query on SERVER spans
        # Trace ids are made (or taken from the caller) when tracing is on, and also for an access log that
        # records them. Only tracing sends them upstream: without it, traceparent and tracestate pass through
        # untouched (SPEC §6.2), and the log's id is the caller's, or one of its own.
        self.trace_ids = tracing is not None or (access_log is not None and access_log.with_trace)
        self.propagate = tracing is not None
        self.traceresponse = tracing is not None and tracing.traceresponse
        propagation = tracing.propagation if tracing is not None else ()
        # Other formats are read only when traceparent is absent or invalid, in the configured order.
        self.extra_extractors: tuple[Callable[[Mapping[bytes, bytes]], SpanContext | None], ...] = tuple(
            parse_b3 if p is Propagator.B3 else parse_jaeger for p in propagation if p is not Propagator.TRACECONTEXT
        )
        self.write_b3 = Propagator.B3 in propagation
        self.write_jaeger = Propagator.JAEGER in propagation
        # Request fields not forwarded as received: hop-by-hop ones, those the proxy sets itself, and (when
        # it propagates its own context) the incoming trace headers, replaced by ours.
        self.upstream_drop = HOP_BY_HOP | REPLACED_UPSTREAM
        if self.propagate:
            self.upstream_drop |= (
                {b"traceparent", b"tracestate"}
                | (B3_HEADERS if self.write_b3 else frozenset())
                | (JAEGER_HEADERS if self.write_jaeger else frozenset())
            )
        # Requests that match no route are traced with the global rule.
        self.unrouted_trace = TracePolicy(tracing, None) if tracing is not None else None
        self.routes: dict[int, RouteRuntime] = {}
        for compiled in self.router.routes:
            r = compiled.config
            cluster = clusters.get(r.upstream) if r.upstream else None
            route_agents = agents.for_route(r) if agents is not None else None
            self.routes[id(compiled)] = RouteRuntime(
                config=r,
                template=compiled.template,
                cluster=cluster,
                request_ops=compile_ops(r.policies.request_headers),
                response_ops=compile_ops(r.policies.response_headers),
                max_attempts=r.retry.max_attempts,
                trace=TracePolicy(tracing, r) if tracing is not None else None,
                span_attributes=route_attributes(r, compiled.template) if tracing is not None else b"",
                metrics=metrics.route(r.id) if metrics is not None else None,
                upstream_metrics=metrics.upstream(r.upstream) if metrics is not None and r.upstream else None,
                log_fields=route_fields(r) if access_log is not None else b"",
                agents=route_agents,
                plain=route_agents is None and r.builtin_handler is None and cluster is not None,
                timeout=r.timeout_secs,
                read_timeout=cluster.config.timeouts.read_secs if cluster is not None else 0.0,
            )


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.client_port = 0
        self.client_ip_bytes = b""  # for X-Forwarded-For
        # Pieces of the access log's JSON line for the User-Agent and Host last seen on this connection: the
        # client address and user agent (up to the referer's key) and the host. NUL is never a field's value
        # (llhttp refuses it), so the first request makes both.
        self.log_ua_raw: bytes | None = b"\0"
        self.log_client = b""
        self.log_host_raw: bytes | None = b"\0"
        self.log_host = b""
        self.log_no_referer = b""  # log_client, null and log_host: the line's piece when there is no Referer
        self.pipeline: collections.deque[Exchange] = collections.deque()
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.closing = False
        self.counted = False  # holds a place in the worker's connection budget
        self.writable = True
        self.tunnel: asyncio.Transport | None = None  # upstream transport once upgraded
        self._read_paused = False
        self._pending_reject: tuple[int, str, str] | None = None
        self._span_attributes: bytes | None = None
        self._span_attributes_key: tuple[bool, bytes | None, bytes | None] = (False, None, None)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._max_header_size = ctx.limits.max_header_size
        self._max_header_count = ctx.limits.max_header_count

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=256 * 1024)
        budget = self.ctx.budget
        if budget.open >= budget.limit:
            self.transport.abort()
            return
        budget.open += 1
        self.counted = True
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip, self.client_port = peer[0], peer[1]
        self.client_ip_bytes = self.client_ip.encode()
        self.ctx.open_connections.add(self)
        self._arm_timer(self.ctx.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.counted = False
            self.ctx.budget.open -= 1
        self.transport = None
        self.closing = True
        self.ctx.open_connections.discard(self)
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for exchange in self.pipeline:
            exchange.client_gone()
        self.pipeline.clear()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    def pause_writing(self) -> None:
        self.writable = False
        if self.pipeline:
            self.pipeline[0].client_writable(False)
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.writable = True
        if self.pipeline:
            self.pipeline[0].client_writable(True)
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            exchange = self.parsing
            if exchange is not None:
                exchange.upgrade_data(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RequestTooLarge):
                self.reject(cause.status, cause.message, cause.blocked)
            else:
                raise
        except httptools.HttpParserError as exc:
            self.reject(400, f"malformed request: {exc}", "malformed_request")

    def eof_received(self) -> bool | None:
        # A client that half-closes after sending its request still gets its response; an idle
        # connection or a tunnel ends with it.
        if (not self.pipeline or self.tunnel is not None) and self.transport is not None:
            self.transport.close()
        return True

    def span_attributes(self, http10: bool, host: bytes | None, user_agent: bytes | None) -> bytes:
        """SERVER-span attributes constant for this connection, encoded on the first sampled request and
        again only when the HTTP version, Host or User-Agent changes."""
        cached = self._span_attributes
        key = self._span_attributes_key
        if cached is None or key[0] != http10 or key[1] != host or key[2] != user_agent:
            ctx = self.ctx
            # server.address and server.port: the server the client addressed (the Host field), as the HTTP
            # semantic conventions ask; the listener's when the field has no port, or there is no field.
            address, port = ctx.listener.address.host, ctx.server_port
            if host:
                text = host.decode("latin-1")
                address, port = host_without_port(text), host_port(text) or port
            cached = connection_attributes(
                ctx.scheme.decode(), port, self.client_ip, self.client_port, http10, address, user_agent
            )
            self._span_attributes = cached
            self._span_attributes_key = (http10, host, user_agent)
        return cached

    def drain(self, grace: float) -> None:
        """Stop keeping this connection alive. An idle one gets `grace` seconds to send the request it
        may already have on the way (a connection accepted a moment ago has not been read yet);
        closing it at once would fail that request."""
        self.closing = True
        if not self.pipeline and self.transport is not None:
            self._arm_timer(grace)

    # -- timers -------------------------------------------------------------------------------------

    # One lazily re-armed timer per connection: moving the deadline is an assignment, and the handle is
    # only replaced when the new deadline is earlier than the pending one (creating and cancelling a
    # timer handle for every request showed up in profiles).

    def _arm_timer(self, delay: float) -> None:
        if delay <= 0:
            self._deadline = 0.0
            return
        now = self.loop.time()
        deadline = now + delay
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self._timer_at(now, deadline), self._timed_out)

    def _timer_at(self, now: float, deadline: float) -> float:
        step = self.ctx.timer_step
        return min(deadline, now + step) if step > 0 else deadline  # both timeouts off: the deadline itself

    def _timed_out(self) -> None:
        self._timer = None
        if self._deadline == 0.0 or self.transport is None or self.pipeline:
            return
        now = self.loop.time()
        if now < self._deadline:
            self._timer = self.loop.call_at(self._timer_at(now, self._deadline), self._timed_out)
            return
        if self._url or self._headers:
            self.reject(408, "request head not received in time", "request_timeout")
        else:
            self.transport.close()  # an idle keep-alive connection, or one that never spoke

    # -- httptools callbacks ------------------------------------------------------------------------

    # No on_message_begin: on_url is the first callback of every request (one Python call less each).

    def on_url(self, url: bytes) -> None:
        if self._url:
            self._url += url  # the target came in pieces
            if len(self._url) > self._max_header_size:
                raise RequestTooLarge(414, "request target too long", "uri_too_long")
            return
        self._url = url
        if not self.pipeline:
            self._arm_timer(self.ctx.request_timeout)
        if len(url) > self._max_header_size:
            raise RequestTooLarge(414, "request target too long", "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_bytes += len(name) + len(value)
        if len(self._headers) > self._max_header_count:
            raise RequestTooLarge(431, "too many request headers", "header_count_exceeded")
        if self._header_bytes > self._max_header_size:
            raise RequestTooLarge(431, "request headers too large", "header_too_large")

    def on_headers_complete(self) -> None:
        pipeline = self.pipeline
        if not pipeline:
            self._deadline = 0.0  # the request timer stops with the head
        exchange = Exchange(self, self._url, self._headers)
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self.parsing = exchange
        pipeline.append(exchange)
        if len(pipeline) == 1:
            exchange.start()
        else:
            self.pause_reading()  # one queued request at a time is enough

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.request_complete()

    # -- flow control -------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    # -- answering ----------------------------------------------------------------------------------

    def exchange_finished(self, exchange: Exchange, keep_alive: bool) -> None:
        """Called by the exchange at the head of the pipeline once its response is fully written."""
        pipeline = self.pipeline
        if pipeline and pipeline[0] is exchange:
            pipeline.popleft()
        transport = self.transport
        if transport is None:
            return
        if not keep_alive:
            self.closing = True
            transport.close()
            return
        if pipeline:
            pipeline[0].start()
        elif self._pending_reject is not None:
            self.reject(*self._pending_reject)
            return
        elif self.closing:
            transport.close()
            return
        else:
            self._arm_timer(self.ctx.keepalive_timeout)  # idle until the next request
        if self._read_paused and len(pipeline) <= 1 and self._pending_reject is None:
            self.resume_reading()

    def reject(self, status: int, message: str, blocked: str) -> None:
        """Answer a request the proxy cannot parse or accept, and close: the connection's state is unknown.
        `blocked` is its reason label in sentinel_blocked_requests_total."""
        if self.transport is None:
            return
        parsing = self.parsing
        if parsing is not None and not parsing.request_done and not parsing.done:
            # The error is in the body of a request already under way: that request fails.
            self.pause_reading()
            parsing.fail_request(status, message)
            return
        if self.pipeline:
            # Earlier requests are still being answered: answer them first, in order, then this.
            self._pending_reject = (status, message, blocked)
            self.pause_reading()
            return
        self._pending_reject = None
        self.closing = True
        metrics = self.ctx.metrics
        if metrics is not None:
            metrics.block(blocked)
        cid = self.ctx.new_id()
        body = error_body(status, message, os.urandom(16).hex(), cid)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nx-correlation-id: %s\r\n"
            b"connection: close\r\n\r\n%s"
            % (status, reason(status).encode(), ERROR_JSON, len(body), cid.encode(), body)
        )
        self.transport.close()
