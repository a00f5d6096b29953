"""One request/response exchange on a client connection: route, answer or proxy, stream both ways.

The exchange is the `ResponseSink` of its upstream connection. Request bodies are streamed to the
upstream as they arrive (buffered only while the upstream connection is being opened), responses are
streamed to the client; each side pauses the other when its write buffer fills.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import httptools

from sentinel.agents.events import (
    body_event,
    request_complete_event,
    request_headers_event,
    request_headers_tail,
    response_headers_event,
)
from sentinel.agents.reply import BLOCK, CHALLENGE, AgentReply
from sentinel.agents.round import AgentBinding, AgentRound
from sentinel.config.model import BuiltinHandler
from sentinel.logging.app import request_ids
from sentinel.proxy.builtins import ERROR_JSON, Scrape
from sentinel.proxy.errors import error_body, reason, status_line
from sentinel.proxy.headers import (
    LAST_CHUNK,
    apply_ops,
    chunk,
    connection_tokens,
    field_lines,
    host_without_port,
)
from sentinel.proxy.router import RequestView
from sentinel.tracing.context import (
    FLAG_RANDOM,
    FLAG_SAMPLED,
    REQUEST_IDS,
    SpanContext,
    extract,
    flags_text,
    new_span_id,
    new_trace_id,
    traceparent_from_hex,
    traceparent_value,
)
from sentinel.tracing.correlation import INCOMING_HEADERS, is_valid_incoming
from sentinel.tracing.propagators import b3_headers, jaeger_header
from sentinel.tracing.spans import write_client_span, write_server_span
from sentinel_agent_sdk.protocol import REQUEST_HEADERS

if TYPE_CHECKING:
    from sentinel.proxy.listener import HttpProtocol, RouteRuntime
    from sentinel.upstream.connection import TargetPool, UpstreamConnection
    from sentinel.upstream.target import TargetState

log: Final = logging.getLogger("sentinel.proxy")

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Module-level functions bound as Final: compiled, a Final name is a C static, where an imported name is
# looked up in the module's dict on every call (~130 instructions).
_time_ns: Final = time.time_ns
_monotonic: Final = time.monotonic
_hexlify: Final = binascii.hexlify
_INCOMING_ID_HEADERS: Final = tuple(h.encode() for h in INCOMING_HEADERS)
_INCOMING_ID_SET: Final = frozenset(_INCOMING_ID_HEADERS)
_BUFFER_HIGH: Final = 256 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_HEADERS: Final[dict[str, str]] = {}
_NO_CACHE: Final = b"cache-control: no-cache, no-store, must-revalidate\r\n"
# Bodies are shown to request_body / response_body agents whole, up to this size; a larger body is
# not inspected (as in the Rust original) and streams through.
AGENT_BODY_LIMIT: Final = 1024 * 1024
_NO_OPS: Final[tuple[tuple[str, bytes, bytes], ...]] = ()
_BLOCKED_REASONS: Final = {BLOCK: "agent_blocked", CHALLENGE: "agent_challenge"}

# Response framing fields, for `_response_framing`.
_CHUNKED_LINE: Final = b"transfer-encoding: chunked\r\n"
_CLOSE: Final = b"connection: close\r\n"
_CHUNKED_CLOSE: Final = _CHUNKED_LINE + _CLOSE
_KEEP_ALIVE: Final = b"connection: keep-alive\r\n"

# How the response body is framed towards the client.
_NO_BODY: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3
# What a held response still waits for (bit set).
_HEADERS_PHASE: Final = 1
_BODY_PHASE: Final = 2


class Exchange:
    """One request and its response.

    Fields have class-level defaults and most keep them for a typical request (no body, no agents, no
    retry, no tracing). Interpreted, the class is not slotted on purpose, so an instance dict holds only
    what a request sets (a dozen stores instead of fifty); compiled (mypyc), it is a C struct whose
    defaults are filled in C.
    """

    # Request, as parsed.
    method: bytes
    http10: bool
    client_keep_alive: bool
    upgrade: bool
    raw_url: bytes
    headers: list[tuple[bytes, bytes]]
    h: dict[bytes, bytes]  # lower-cased name → first value
    host: bytes | None  # the Host field as received (looked up once: routing, the upstream head, the log)
    content_length: int | None = None
    chunked = False
    request_done = False  # the whole request has been read
    expect_continue = False
    url = ""  # the request target as text (Latin-1), as received
    path = ""
    query = ""
    correlation_id = ""
    correlation_incoming = False  # the id came with the request (so may hold a quote or a backslash)
    start_ns: int
    # Request body on its way (buffered while no upstream connection is ready).
    body_buffer: list[bytes]
    body_buffered = 0
    request_body_bytes = 0
    # Progress.
    started = False
    done = False
    response_started = False
    pending_error: tuple[int, str] | None = None
    route: RouteRuntime | None = None
    # Upstream attempts.
    conn: UpstreamConnection | None = None
    connect_task: asyncio.Task[None] | None = None
    tried: list[TargetState]
    attempts = 0
    last_failure = ""
    attempt_start_ns = 0  # set while an attempt is timed (for its CLIENT span or the upstream metrics)
    timer: asyncio.TimerHandle | None = None
    # Response.
    status = 0
    response_bytes = 0
    out: list[bytes]  # what this read from the upstream produced for the client, written by flush()
    mode = _NO_BODY
    # Trace context (SPEC §6.2): empty trace_id when tracing is not configured.
    trace_id = b""
    trace_flags = 0  # FLAG_RANDOM as received, or set for generated ids; sampled bit apart
    parent: SpanContext | None = None
    _trace_hex = b""  # trace_id as hex text, when known (see trace_hex_bytes)
    # The SERVER span id and the current upstream attempt's CLIENT span id (properties below): sliced from
    # the id draw when first asked for, which an unsampled request without b3 or Jaeger headers never does.
    _span_id = b""
    _client_span_id = b""
    _ids_raw = b""  # the id draw this request's ids came from (RequestIds.raw) ...
    _ids_hex = b""  # ... its hex text (RequestIds.hex) ...
    _ids_at = 0  # ... and their record's offset in the draw
    client_span_hex = b""  # the CLIENT span id as hex text
    sampled = False
    # Agents (SPEC §5): the round out now, header ops for both directions, and a response held back
    # while response agents decide (its head, the phases left, the raw body, whether it ended).
    agent_round: AgentRound | None = None
    agent_request_ops = _NO_OPS
    agent_response_ops = _NO_OPS
    inspecting = False
    held_head: list[tuple[bytes, bytes]] | None = None
    held_phases = 0
    held_body: list[bytes]
    held_body_bytes = 0
    held_complete = False

    def __init__(self, proto: HttpProtocol, raw_url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        parser = proto.parser
        self.proto = proto
        self.method = parser.get_method()
        self.client_keep_alive = keep_alive = parser.should_keep_alive()
        self.raw_url = raw_url
        self.headers = headers
        h: dict[bytes, bytes] = {}
        for name, value in headers:
            lower = name.lower()
            if lower not in h:
                h[lower] = value
        self.h = h
        self.host = h.get(b"host")
        # llhttp keeps an HTTP/1.0 connection alive only when a Connection or Proxy-Connection field asks
        # for it, so keep-alive without either means 1.1, and the version string (formatted by httptools
        # on each call) is not needed.
        self.http10 = (
            False
            if keep_alive and b"connection" not in h and b"proxy-connection" not in h
            else parser.get_http_version() == "1.0"
        )
        self.body_buffer = []
        self.tried = []
        self.out = []
        self.start_ns = _time_ns()
        # llhttp reports an upgrade only for CONNECT, or for an Upgrade field with `Connection: upgrade`:
        # without either, the call is skipped.
        if (b"upgrade" in h or self.method == b"CONNECT") and parser.should_upgrade():
            self.upgrade = True
        else:
            self.upgrade = False
            # Framing fields; a request without a body is complete with its head (exchanges start at the
            # head, before httptools reports the message complete).
            length = h.get(b"content-length")
            if length is not None:
                self.content_length = int(length)
            self.chunked = b"transfer-encoding" in h
            self.request_done = not self.chunked and not self.content_length
            if b"expect" in h:
                self.expect_continue = h[b"expect"].lower() == b"100-continue"
        metrics = proto.ctx.metrics
        if metrics is not None:
            metrics.requests_started += 1

    # -- request side -------------------------------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        self.request_body_bytes += len(data)
        if self.request_body_bytes > self.proto.ctx.limits.max_body_size:
            self.fail_request(413, "request body too large")
            return
        conn = self.conn
        if conn is not None and conn.transport is not None:
            if self.chunked:
                conn.transport.writelines(chunk(data))
            else:
                conn.transport.write(data)
            # The upstream's time to answer runs from the end of the request, not from its head.
            conn.last_read = self.proto.loop.time()
            return
        if self.done:
            return  # answered already (an error); the rest of the body is read and dropped
        self.body_buffer.append(data)
        self.body_buffered += len(data)
        if self.inspecting:
            if self.body_buffered <= AGENT_BODY_LIMIT:
                return  # read on: request_body agents see the body whole
            self.inspecting = False  # too large to inspect: it streams through, uninspected
            self.attempt()
        if self.body_buffered > _BUFFER_HIGH:
            self.proto.pause_reading()

    def request_complete(self) -> None:
        self.request_done = True
        if self.inspecting:
            self.inspecting = False
            if not self.done:  # not already answered (a 413 while the body was read)
                self._inspect_request_body()
            return
        conn = self.conn
        if conn is not None:
            conn.last_read = self.proto.loop.time()
            if self.chunked and conn.transport is not None:
                conn.transport.write(LAST_CHUNK)

    def upgrade_data(self, data: bytes) -> None:
        """Bytes the client sent after an Upgrade request head: they belong to the new protocol."""
        self.request_done = True
        if data:
            self.body_buffer.append(data)

    def fail_request(self, status: int, message: str) -> None:
        """The request turned out bad while being read (body too large, malformed body)."""
        self.proto.closing = True
        if self.done:
            return
        if not self.started:
            self.pending_error = (status, message)  # answered when its turn comes
            return
        self._release_upstream(reusable=False)
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.response_started:
            if self.proto.transport is not None:
                self.proto.transport.abort()
            self._finish(keep_alive=False)
            return
        self.send_error(status, message)

    # -- start --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the exchange; called once it is at the head of the connection's pipeline."""
        self.started = True
        proto = self.proto
        ctx = proto.ctx
        if self.pending_error is not None:
            self.correlation_id = ctx.new_id()
            self.send_error(*self.pending_error)
            return
        if self.upgrade and self.method == b"CONNECT":
            # A reverse proxy opens no tunnels to where the client says (nor does nginx); what follows the
            # head would be tunnel bytes, so the connection ends with the answer.
            self.correlation_id = ctx.new_id()
            proto.closing = True
            self.send_error(501, "CONNECT is not supported")
            return
        raw_url = self.raw_url
        # Searched as text: `bytes in bytes` first tries the operand as an integer, raising and clearing a
        # TypeError every time, and `bytes.find` parses its arguments with PyArg_ParseTuple (together
        # about 1 us with cold caches); `str in str` has neither detour.
        url = self.url = raw_url.decode("latin-1")
        if url[:1] == "/" and "#" not in url:
            # Origin form, as nearly every request has it (llhttp has checked its characters).
            self.path, _, self.query = url.partition("?")
        else:
            try:
                parsed = httptools.parse_url(raw_url)
            except httptools.HttpParserInvalidURLError:
                self.correlation_id = ctx.new_id()
                self.proto.closing = True
                self.send_error(400, "invalid request target")
                return
            self.path = parsed.path.decode("latin-1") if parsed.path else "/"
            self.query = parsed.query.decode("latin-1") if parsed.query else ""
        h = self.h
        self.correlation_id = ctx.new_id() if _INCOMING_ID_SET.isdisjoint(h) else self._correlation_id()
        if ctx.trace_ids:
            self._begin_trace()

        if self.content_length is not None and self.content_length > ctx.limits.max_body_size:
            self.proto.closing = True  # the body will not be read
            self.send_error(413, "request body too large")
            return
        host = self.host
        if host is None and not self.http10:
            self.proto.closing = True  # a malformed request: nothing after it is trusted
            self.send_error(400, "missing Host header")
            return
        router = ctx.router
        if router.path_only:
            compiled = router.match_path(self.path)
        else:
            compiled = router.match(
                RequestView(
                    method=self.method.decode("latin-1"),
                    path=self.path,
                    query=self.query,
                    host=host_without_port(host.decode("latin-1")).lower() if host else "",
                    # Decoded only when some route matches on headers.
                    headers={n.decode("latin-1"): v.decode("latin-1") for n, v in h.items()}
                    if router.needs_headers
                    else _NO_HEADERS,
                )
            )
        if compiled is None:
            self.send_error(404, "no route matches this request")
            return
        route = self.route = ctx.routes[id(compiled)]
        if route.trace is not None:
            self.sampled = route.trace.sampled(self.parent, self.trace_id)
        if route.plain:
            self.attempt()  # the common case: no builtin handler, no agents
            return
        handler = route.config.builtin_handler
        if handler is not None:
            scrape = ctx.builtins.scrape
            if handler is BuiltinHandler.METRICS and scrape is not None:
                # The numbers of every worker: the supervisor adds them up, so this one waits for it. The
                # task sits where a connect task would, so a client that goes away cancels it the same way.
                self.connect_task = proto.loop.create_task(self._serve_metrics(scrape))
                return
            answer = ctx.builtins.handle(handler, self.correlation_id)
            self.send_simple(
                answer.status,
                answer.content_type,
                answer.body,
                b"x-request-id: %s\r\ncache-control: no-cache, no-store, must-revalidate\r\n"
                % self.correlation_id.encode(),
            )
            return
        agents = route.agents
        if agents is not None and agents.request_headers:
            tail = request_headers_tail(self, agents.metadata)
            self._run_agents(
                agents.request_headers, functools.partial(request_headers_event, tail), self._request_headers_done
            )
            return
        self._forward()

    # -- agents (SPEC §5) ---------------------------------------------------------------------------

    def _run_agents(
        self,
        bindings: tuple[AgentBinding, ...],
        make_rest: Callable[[bytes], bytes],
        on_done: Callable[[AgentRound], None],
    ) -> None:
        # request_headers calls run concurrently; the other events go to one agent after another.
        concurrent = bindings[0].kind == REQUEST_HEADERS
        agent_round = self.agent_round = AgentRound(self, bindings, make_rest, concurrent, on_done)
        agent_round.start()

    def _decided(self, agent_round: AgentRound) -> bool:
        """Act on a round that answered the request (a decision or a fail-closed failure): True if so."""
        self.agent_round = None
        if self.done:
            return True
        reply = agent_round.answer
        if reply is not None:
            self._send_reply(reply)
            return True
        error = agent_round.error
        if error is not None:
            self.last_failure = "agent_timeout" if error[0] == 504 else "agent_unavailable"
            self.send_error(*error)
            return True
        return False

    def _request_headers_done(self, agent_round: AgentRound) -> None:
        if self._decided(agent_round):
            return
        self.agent_request_ops = agent_round.request_ops
        self.agent_response_ops = agent_round.response_ops
        self._forward()

    def _forward(self) -> None:
        """Send the request upstream, once request_body agents (if any) have seen its body."""
        route = self.route
        assert route is not None
        agents = route.agents
        if agents is not None and agents.request_body and not self.upgrade and (self.chunked or self.content_length):
            if not self.request_done:
                self.inspecting = True  # request_complete() carries on
                if self.expect_continue and self.proto.transport is not None:
                    # The agents need the body now: ask for it, as the upstream would.
                    self.proto.transport.write(_CONTINUE)
                    self.expect_continue = False
                self.proto.resume_reading()
                return
            self._inspect_request_body()
            return
        self.attempt()

    def _inspect_request_body(self) -> None:
        route = self.route
        assert route is not None and route.agents is not None
        data = b"".join(self.body_buffer)
        self.body_buffer = [data] if data else []
        rest = body_event(data, len(data), "bytes_received")
        self._run_agents(route.agents.request_body, lambda _: rest, self._request_body_done)

    def _request_body_done(self, agent_round: AgentRound) -> None:
        if not self._decided(agent_round):
            self.attempt()

    def _send_reply(self, reply: AgentReply) -> None:
        """The client gets exactly the agent's status, headers and body (block, redirect, challenge)."""
        metrics = self.proto.ctx.metrics
        if metrics is not None:
            metrics.block(_BLOCKED_REASONS.get(reply.decision, "agent_redirect"))
        headers = field_lines(reply.headers)
        if not any(name == b"x-correlation-id" for name, _ in reply.headers):
            headers += b"x-correlation-id: %s\r\n" % self.correlation_id.encode()
        self.send_simple(reply.status, None, reply.body, headers)

    # -- response agents: the response is held (head and body) until they decide --------------------

    def _hold_response(self, status: int, headers: list[tuple[bytes, bytes]], out: list[tuple[bytes, bytes]]) -> bool:
        """Hold the response for response_headers / response_body agents; False when none apply."""
        route = self.route
        agents = route.agents if route is not None else None
        if agents is None or status == 101:
            return False
        phases = (_HEADERS_PHASE if agents.response_headers else 0) | (
            _BODY_PHASE if agents.response_body and self.mode != _NO_BODY else 0
        )
        if not phases:
            return False
        self.held_head = out
        self.held_phases = phases
        self.held_body = []
        if phases & _HEADERS_PHASE:
            conn = self.conn
            if conn is not None and conn.transport is not None:
                conn.transport.pause_reading()  # the body waits upstream until the agents decide
            rest = response_headers_event(status, headers)
            self._run_agents(agents.response_headers, lambda _: rest, self._response_headers_done)
        return True

    def _response_headers_done(self, agent_round: AgentRound) -> None:
        self.held_phases &= ~_HEADERS_PHASE
        if self._decided_on_response(agent_round):
            return
        if agent_round.response_ops and self.held_head is not None:
            apply_ops(self.held_head, agent_round.response_ops)
        conn = self.conn
        if conn is not None and conn.transport is not None and self.proto.writable:
            conn.transport.resume_reading()
        self._advance_held()

    def _response_body_done(self, agent_round: AgentRound) -> None:
        self.held_phases &= ~_BODY_PHASE
        if not self._decided_on_response(agent_round):
            self._advance_held()

    def _decided_on_response(self, agent_round: AgentRound) -> bool:
        if agent_round.answer is None and agent_round.error is None:
            return False
        # Nothing was written to the client yet: the agent's answer replaces the upstream's response.
        self.out.clear()
        self.held_head = None
        self.held_phases = 0
        if self.conn is not None:
            self._attempt_ended(self.status, "")
            self._release_upstream(reusable=False)
        self._decided(agent_round)
        return True

    def _held_body(self, data: bytes) -> None:
        self.held_body.append(data)
        self.held_body_bytes += len(data)
        if self.held_body_bytes > AGENT_BODY_LIMIT:
            # Too large to inspect: it streams through, uninspected.
            self.held_phases &= ~_BODY_PHASE
            self.held_body = []
            if self.agent_round is None:
                self._advance_held()

    def _advance_held(self) -> None:
        """Next step for a held response: run response_body agents once the body is in, or let it go."""
        if self.agent_round is not None or self.done:
            return
        if self.held_phases & _BODY_PHASE:
            if self.held_complete:
                route = self.route
                assert route is not None and route.agents is not None
                data = b"".join(self.held_body)
                self.held_body = []
                rest = body_event(data, len(data), "bytes_sent")
                self._run_agents(route.agents.response_body, lambda _: rest, self._response_body_done)
            return
        head = self.held_head
        self.held_head = None
        if head is not None:
            self.out.insert(0, self._response_head(head))
        self.flush()
        if self.held_complete:
            self._response_done()

    async def _serve_metrics(self, scrape: Scrape) -> None:
        try:
            content_type, body = await scrape(self.h.get(b"accept", b"").decode("latin-1"))
        except Exception as exc:
            self.connect_task = None
            if not self.done:
                self.send_error(503, f"metrics unavailable ({exc})")
            return
        self.connect_task = None
        if not self.done:
            self.send_simple(200, content_type.encode(), body, _NO_CACHE)

    def _begin_trace(self) -> None:
        """Continue the caller's trace (a valid traceparent) or start one. Sampling is decided once the
        route is known (or with the rule for unrouted requests, in send_error)."""
        parent = None
        if b"traceparent" in self.h:
            # All values, not just the first: several traceparent headers make the context invalid.
            traceparents: list[bytes] = []
            tracestates: list[bytes] = []
            for name, value in self.headers:
                lower = name.lower()
                if lower == b"traceparent":
                    traceparents.append(value)
                elif lower == b"tracestate":
                    tracestates.append(value)
            parent = extract(traceparents, tracestates)
        if parent is None:
            for extractor in self.proto.ctx.extra_extractors:
                parent = extractor(self.h)
                if parent is not None:
                    break
        self.parent = parent
        ids = REQUEST_IDS
        at = ids.take()
        raw = ids.raw
        text = ids.hex
        if parent is not None:
            self.trace_id = parent.trace_id
            self.trace_flags = parent.flags & FLAG_RANDOM
        else:
            self.trace_id = raw[at : at + 16]
            self._trace_hex = text[2 * at : 2 * at + 32]
            self.trace_flags = FLAG_RANDOM  # all 128 bits of our ids are random
        self.client_span_hex = text[2 * at + 48 : 2 * at + 64]  # the first upstream attempt's
        self._ids_raw = raw
        self._ids_hex = text
        self._ids_at = at

    @property
    def span_id(self) -> bytes:
        """The SERVER span's id (b"" without a trace)."""
        span = self._span_id
        if not span and self._ids_raw:
            at = self._ids_at + 16
            span = self._span_id = self._ids_raw[at : at + 8]
        return span

    @span_id.setter
    def span_id(self, value: bytes) -> None:
        self._span_id = value

    @property
    def client_span_id(self) -> bytes:
        """The CLIENT span's id of the current upstream attempt (b"" without a trace)."""
        span = self._client_span_id
        if not span and self._ids_raw:
            at = self._ids_at + 24
            span = self._client_span_id = self._ids_raw[at : at + 8]
        return span

    @client_span_id.setter
    def client_span_id(self, value: bytes) -> None:
        self._client_span_id = value

    def trace_hex_bytes(self) -> bytes:
        """The trace id as hex text, ASCII-encoded (b"" without one)."""
        text = self._trace_hex
        if not text and self.trace_id:
            text = self._trace_hex = _hexlify(self.trace_id)
        return text

    def span_hex_bytes(self) -> bytes:
        """The SERVER span id as hex text, ASCII-encoded (b"" without one): a slice of the id draw's hex."""
        text = self._ids_hex
        if text:
            at = 2 * self._ids_at + 32
            return text[at : at + 16]
        return _hexlify(self.span_id) if self.span_id else b""

    @property
    def trace_hex(self) -> str:
        """The trace id as hex text ("" without one)."""
        return self.trace_hex_bytes().decode()

    def _correlation_id(self) -> str:
        """The first valid incoming id (SPEC §6.1), or a new one."""
        h = self.h
        for name in _INCOMING_ID_HEADERS:
            value = h.get(name)
            if value is not None and is_valid_incoming(value):
                self.correlation_incoming = True
                return value.decode("ascii")
        return self.proto.ctx.new_id()

    # -- upstream -----------------------------------------------------------------------------------

    def attempt(self) -> None:
        route = self.route
        assert route is not None
        cluster = route.cluster
        assert cluster is not None
        if not self.attempts and route.timeout is not None:
            self._start_timer(route.timeout, "timeout")
        target = cluster.pick(self.proto.client_ip, self.h, self.tried)
        if target is None:
            if self.last_failure:
                self._give_up()
            else:
                self.send_error(503, "no healthy upstream target")
            return
        self.tried.append(target)
        self.attempts += 1
        if self.trace_id and self.attempts > 1:
            self.client_span_id = new_span_id()  # a retry: its own CLIENT span
            self.client_span_hex = _hexlify(self.client_span_id)
        if self.sampled or route.upstream_metrics is not None:
            self.attempt_start_ns = _time_ns()
        pool = cluster.pools[target.key]
        conn = pool.take_idle()
        if conn is not None:
            self.send(conn, target)
        else:
            self.connect_task = self.proto.loop.create_task(self._connect(pool, target))

    async def _connect(self, pool: TargetPool, target: TargetState) -> None:
        route = self.route
        assert route is not None and route.cluster is not None
        try:
            conn = await pool.connect(route.cluster.config.timeouts.connect_secs)
        except TimeoutError:
            self._connect_failed(target, "connect_timeout")
            return
        except OSError:
            self._connect_failed(target, "connect_refused")
            return
        finally:
            self.connect_task = None
        if self.done:
            pool.release(conn)
            return
        self.send(conn, target)

    def _connect_failed(self, target: TargetState, failure: str) -> None:
        target.record_failure(_monotonic())
        self.last_failure = failure
        self._attempt_ended(0, failure)
        if self.done:
            return
        route = self.route
        assert route is not None
        # Nothing was sent: a failed connect may go to another target whatever the method.
        if self.attempts < route.max_attempts:
            self.attempt()
        else:
            self._give_up()

    def send(self, conn: UpstreamConnection, target: TargetState) -> None:
        route = self.route
        assert route is not None
        self.conn = conn
        target.inflight += 1
        conn.start(self, self.method == b"HEAD", route.read_timeout)
        transport = conn.transport
        assert transport is not None
        # Head, buffered body and terminator in one write: one syscall for a typical request.
        pieces = [self._upstream_head(route)]
        if self.body_buffer and not self.upgrade:
            for data in self.body_buffer:
                pieces.extend(chunk(data) if self.chunked else (data,))
            self.body_buffer = []
            self.body_buffered = 0
            self.proto.resume_reading()
        if self.request_done and self.chunked:
            pieces.append(LAST_CHUNK)
        transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if not self.proto.writable:
            transport.pause_reading()  # the client is still behind on an earlier response
        if self.expect_continue and not self.request_done and self.proto.transport is not None:
            self.proto.transport.write(_CONTINUE)
        self.expect_continue = False

    def _traceparent(self) -> bytes:
        """The `traceparent` sent upstream: named after this attempt's CLIENT span, so the upstream's spans
        become its children; the sampled bit is the real decision."""
        flags = self.trace_flags | (FLAG_SAMPLED if self.sampled else 0)
        return traceparent_from_hex(self.trace_hex_bytes(), self.client_span_hex, flags)

    def _trace_fields(self) -> list[tuple[bytes, bytes]]:
        """The trace context sent upstream (`_traceparent`, and what else is configured or received)."""
        out = [(b"traceparent", self._traceparent())]
        parent = self.parent
        if parent is not None and parent.tracestate:
            out.append((b"tracestate", parent.tracestate.encode()))
        ctx = self.proto.ctx
        if ctx.write_b3:
            out.extend(b3_headers(self.trace_id, self.client_span_id, self.span_id, self.sampled))
        if ctx.write_jaeger:
            out.append(jaeger_header(self.trace_id, self.client_span_id, self.span_id, self.sampled))
        return out

    def _upstream_head(self, route: RouteRuntime) -> bytes:
        h = self.h
        proto = self.proto
        ctx = proto.ctx
        connection = h.get(b"connection")
        listed = connection_tokens(connection)
        drop = ctx.upstream_drop | listed if listed else ctx.upstream_drop
        forwarded_for: bytes | None = None
        plain = drop.isdisjoint(h) and b"x-forwarded-for" not in h
        if plain and not route.request_ops and not self.agent_request_ops:
            # The common case: no body (its framing fields would be in `drop`), no upgrade (nor its
            # Connection field), no policy: the received fields go on as they came and ours follow in the
            # same build, in the order of the general case below.
            host = self.host
            if host is not None:
                host_name, host_value = b"x-forwarded-host", host
            else:
                host_name, host_value = b"host", self.tried[-1].key.encode()
            if self.trace_id and ctx.propagate:
                parent = self.parent
                if not (ctx.write_b3 or ctx.write_jaeger or (parent is not None and parent.tracestate)):
                    # Only a traceparent to add (the common traced case): its line is part of this build too.
                    return (
                        b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n"
                        b"%s: %s\r\nx-correlation-id: %s\r\ntraceparent: 00-%s-%s-%s\r\n\r\n"
                    ) % (
                        self.method,
                        self.raw_url,
                        field_lines(self.headers),
                        proto.client_ip_bytes,
                        ctx.scheme,
                        host_name,
                        host_value,
                        self.correlation_id.encode(),
                        self.trace_hex_bytes(),
                        self.client_span_hex,
                        flags_text(self.trace_flags | (FLAG_SAMPLED if self.sampled else 0)),
                    )
                trace_lines = field_lines(self._trace_fields())
            else:
                trace_lines = b""
            return (
                b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n"
                b"%s: %s\r\nx-correlation-id: %s\r\n%s\r\n"
            ) % (
                self.method,
                self.raw_url,
                field_lines(self.headers),
                proto.client_ip_bytes,
                ctx.scheme,
                host_name,
                host_value,
                self.correlation_id.encode(),
                trace_lines,
            )
        if plain:
            out = list(self.headers)
        else:
            out = []
            for name, value in self.headers:
                lower = name.lower()
                if lower in drop:
                    continue
                if lower == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                    continue
                out.append((name, value))
        client_ip = proto.client_ip_bytes
        out.append((b"x-forwarded-for", forwarded_for + b", " + client_ip if forwarded_for else client_ip))
        out.append((b"x-forwarded-proto", ctx.scheme))
        if self.host is not None:
            out.append((b"x-forwarded-host", self.host))
        else:
            target = self.tried[-1]
            out.append((b"host", target.key.encode()))
        out.append((b"x-correlation-id", self.correlation_id.encode()))
        trace_lines = b""
        if self.trace_id and ctx.propagate:
            if route.request_ops or self.agent_request_ops:
                out.extend(self._trace_fields())  # header policies and agents see them
            else:
                trace_lines = field_lines(self._trace_fields())
        if route.request_ops:
            apply_ops(out, route.request_ops)
        if self.agent_request_ops:
            apply_ops(out, self.agent_request_ops)
        if self.upgrade:
            out.append((b"connection", b"upgrade"))
            out.append((b"upgrade", h.get(b"upgrade", b"")))
        elif self.chunked:
            out.append((b"transfer-encoding", b"chunked"))
        elif self.content_length is not None:
            out.append((b"content-length", str(self.content_length).encode()))
        return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (self.method, self.raw_url, field_lines(out), trace_lines)

    # -- ResponseSink -------------------------------------------------------------------------------

    def on_response_head(
        self,
        status: int,
        fields: list[tuple[bytes, bytes]],
        set_aside: list[tuple[bytes, bytes]],
        has_length: bool,
    ) -> None:
        route = self.route
        assert route is not None
        if status == 101 and not self.upgrade:
            self.on_upstream_error("malformed_response", None)  # a protocol switch nobody asked for
            return
        self.status = status
        connection: bytes | None = None
        upgrade = b""
        for name, value in set_aside:  # usually just Connection: keep-alive
            if name == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif name == b"upgrade":
                upgrade = value
        if connection is not None:
            listed = connection_tokens(connection)
            if listed:
                fields = [(n, v) for n, v in fields if n.lower() not in listed]
        if status == 101:
            self.mode = _UNTIL_CLOSE
        elif self.method == b"HEAD" or status in (204, 304):
            self.mode = _NO_BODY
        elif has_length:
            self.mode = _LENGTH
        elif not self.http10:
            self.mode = _CHUNKED
        else:
            self.mode = _UNTIL_CLOSE
        self.response_started = True
        # The end-to-end fields as received, then ours (header policies and agents may change them).
        proto = self.proto
        if status != 101 and route.agents is None and not route.response_ops and not self.agent_response_ops:
            # The common case, in one build: the same fields in the same order as below.
            if self.trace_id and proto.ctx.traceresponse:
                head = b"%s%sx-correlation-id: %s\r\ntraceresponse: %s\r\n%s\r\n" % (
                    status_line(status),
                    field_lines(fields),
                    self.correlation_id.encode(),
                    self.traceresponse(),
                    self._response_framing(),
                )
            else:
                head = b"%s%sx-correlation-id: %s\r\n%s\r\n" % (
                    status_line(status),
                    field_lines(fields),
                    self.correlation_id.encode(),
                    self._response_framing(),
                )
            self.out.append(head)  # written by flush(), see below
            return
        out = [*fields, (b"x-correlation-id", self.correlation_id.encode())]
        if self.trace_id and proto.ctx.traceresponse:
            out.append((b"traceresponse", self.traceresponse()))
        if route.response_ops:
            apply_ops(out, route.response_ops)
        if self.agent_response_ops:
            apply_ops(out, self.agent_response_ops)
        if status == 101:
            out.append((b"connection", b"upgrade"))
            out.append((b"upgrade", upgrade))
        elif self.mode == _CHUNKED:
            out.append((b"transfer-encoding", b"chunked"))
        if not self._client_keep_alive() or self.mode == _UNTIL_CLOSE:
            out.append((b"connection", b"close"))
        elif self.http10:
            out.append((b"connection", b"keep-alive"))
        if status == 101:
            if proto.transport is not None:
                proto.transport.write(self._response_head(out))
            self._start_tunnel()
            return
        if route.agents is not None and self._hold_response(status, fields + set_aside, out):
            return
        # Held until the end of this read from the upstream (flush), so that head and body leave in one
        # write when they arrived together: one syscall instead of two or three.
        self.out.append(self._response_head(out))

    def _response_framing(self) -> bytes:
        """The framing and connection fields of a response head (not for a 101)."""
        if not self._client_keep_alive() or self.mode == _UNTIL_CLOSE:
            return _CHUNKED_CLOSE if self.mode == _CHUNKED else _CLOSE
        if self.http10:
            return _KEEP_ALIVE  # never chunked: a 1.0 response without a length is close-delimited
        return _CHUNKED_LINE if self.mode == _CHUNKED else b""

    def _response_head(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return b"%s%s\r\n" % (status_line(self.status), field_lines(headers))

    def on_response_body(self, data: bytes) -> None:
        self.response_bytes += len(data)
        if self.status == 101:
            if self.proto.transport is not None:
                self.proto.transport.write(data)  # tunnelled bytes
            return
        if self.held_phases & _BODY_PHASE:
            self._held_body(data)
        if self.mode == _CHUNKED:
            self.out.extend(chunk(data))
        else:
            self.out.append(data)

    def flush(self) -> None:
        """Write what this read from the upstream produced for the client."""
        out = self.out
        if out and self.held_head is None:
            transport = self.proto.transport
            if transport is not None:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_response_complete(self) -> None:
        conn, self.conn = self.conn, None
        end_ns = _time_ns() if self.attempt_start_ns else 0  # the attempt ends now, not after the write
        if self.status != 101:
            if self.mode == _CHUNKED:
                self.out.append(LAST_CHUNK)
            self.flush()  # the client's bytes first: what follows is bookkeeping, off the client's latency
        self._attempt_ended(self.status, "", end_ns)
        target = self.tried[-1]
        target.inflight -= 1
        if self.status >= 500:
            target.record_failure(_monotonic())
        else:
            target.record_success()
        if self.status == 101:
            # The tunnel ended (the upstream closed): end the client side too.
            transport = self.proto.transport
            if transport is not None:
                transport.close()
            self._finish(keep_alive=False)
            return
        if conn is not None:
            if self.held_head is not None and conn.transport is not None:
                conn.transport.resume_reading()  # paused while response agents decide
            if self.request_done:
                conn.pool.release(conn)
            else:
                conn.close()  # the request body was not all sent: the connection's state is unknown
        if self.held_head is not None:
            self.held_complete = True  # the client's side ends once response agents have decided
            self._advance_held()
            return
        self._response_done()

    def _response_done(self) -> None:
        self._finish(keep_alive=self._client_keep_alive() and self.mode != _UNTIL_CLOSE)

    def on_upstream_error(self, failure: str, exc: BaseException | None) -> None:
        conn, self.conn = self.conn, None
        self._attempt_ended(self.status if self.response_started else 0, failure)
        target = self.tried[-1]
        target.inflight -= 1
        if conn is not None:
            conn.abort()
        if self.done:
            return
        if self.held_head is not None:
            # Held for response agents: nothing reached the client yet, so it can still get a clean 502.
            if self.agent_round is not None:
                self.agent_round.cancel()
                self.agent_round = None
            self.held_head = None
            self.held_phases = 0
            self.out.clear()
            self.response_started = False
            self.last_failure = failure
            self._give_up()
            return
        if self.response_started:
            # Half a response is worse than none: cut the client off so it sees the failure.
            target.record_failure(_monotonic())
            if self.proto.transport is not None:
                self.proto.transport.abort()
            self._finish(keep_alive=False)
            return
        stale = conn is not None and conn.reused and not conn.received_any and failure in ("closed", "reset")
        if not stale:
            target.record_failure(_monotonic())
        self.last_failure = failure
        route = self.route
        assert route is not None
        body_sent = self.request_body_bytes > 0 or self.content_length not in (None, 0)
        if stale and self.method in IDEMPOTENT and not body_sent and self.attempts <= route.max_attempts:
            # A pooled connection the peer had closed: retry once on a fresh one, nothing was processed.
            self.tried.pop()
            self.attempt()
            return
        if self.method in IDEMPOTENT and not body_sent and self.attempts < route.max_attempts:
            self.attempt()
            return
        self._give_up()

    def on_upstream_writable(self, writable: bool) -> None:
        route = self.route
        if writable:
            self.proto.resume_reading()
            if self.timer is not None and route is not None and route.config.timeout_secs is None:
                self.timer.cancel()
                self.timer = None
        else:
            self.proto.pause_reading()
            # The upstream stopped reading our request body: give it write-secs to resume.
            if route is not None and route.cluster is not None and route.config.timeout_secs is None:
                self._start_timer(route.cluster.config.timeouts.write_secs, "timeout")

    def client_writable(self, writable: bool) -> None:
        conn = self.conn
        if conn is None or conn.transport is None:
            return
        if writable:
            conn.transport.resume_reading()
        else:
            conn.transport.pause_reading()

    def client_gone(self) -> None:
        """The client connection closed: drop whatever is in flight."""
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.agent_round is not None:
            self.agent_round.cancel()
            self.agent_round = None
        if self.conn is not None:
            self.tried[-1].inflight -= 1
            self.conn.abort()
            self.conn = None
        if not self.done:
            self.done = True
            if not self.response_started:
                self.status = 499  # nginx's "client closed request": no response was sent
            self._observe()

    # -- answers ------------------------------------------------------------------------------------

    def _give_up(self) -> None:
        failure = self.last_failure
        route = self.route
        if not self.trace_id:
            # Ids are made per request only when tracing or the access log uses them; a log line about a
            # request always carries one (and the error body below shows the same).
            self.trace_id, self.span_id = new_trace_id(), new_span_id()
        log.warning(
            "upstream %s failed (%s) after %d attempt(s) on route %s",
            route.config.upstream if route is not None else "-",
            failure,
            self.attempts,
            route.config.id if route is not None else "-",
            extra=request_ids(self.trace_id, self.span_id),
        )
        if failure in ("timeout", "connect_timeout"):
            self.send_error(504, "upstream timed out")
        else:
            self.send_error(502, f"upstream failed ({failure})")

    def _client_keep_alive(self) -> bool:
        return self.client_keep_alive and not self.proto.closing and self.request_done and not self.upgrade

    def send_error(self, status: int, message: str) -> None:
        ctx = self.proto.ctx
        if not self.correlation_id:
            self.correlation_id = ctx.new_id()
        if self.route is None and self.trace_id and ctx.unrouted_trace is not None:
            self.sampled = ctx.unrouted_trace.sampled(self.parent, self.trace_id)
        trace_id = self.trace_hex or os.urandom(16).hex()
        body = error_body(status, message, trace_id, self.correlation_id)
        self.send_simple(status, ERROR_JSON, body, b"x-correlation-id: %s\r\n" % self.correlation_id.encode())

    def traceresponse(self) -> bytes:
        """W3C `traceresponse`: this request's trace and SERVER span, and the sampling decision."""
        flags = self.trace_flags | (FLAG_SAMPLED if self.sampled else 0)
        return traceparent_value(self.trace_id, self.span_id, flags)

    def send_simple(self, status: int, content_type: bytes | None, body: bytes, extra: bytes) -> None:
        self.status = status
        if self.trace_id and self.proto.ctx.traceresponse:
            extra += b"traceresponse: " + self.traceresponse() + b"\r\n"
        self.response_started = True
        keep_alive = self._client_keep_alive()
        transport = self.proto.transport
        if transport is not None:
            self.response_bytes = len(body)
            transport.write(
                b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\n%s%s\r\n%s"
                % (
                    status,
                    reason(status).encode(),
                    b"content-type: %s\r\n" % content_type if content_type is not None else b"",
                    len(body),
                    extra,
                    b"" if keep_alive else b"connection: close\r\n",
                    b"" if self.method == b"HEAD" else body,
                )
            )
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.agent_round is not None:
            self.agent_round.cancel()
            self.agent_round = None
        if self.sampled or self.proto.ctx.observed:
            self._observe()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.proto.exchange_finished(self, keep_alive)

    def _observe(self) -> None:
        """The request is over (answered, or its client went away): its span, metrics and access-log line."""
        self._attempt_ended(0, "aborted")  # an attempt still open here was cut short
        ctx = self.proto.ctx
        end_ns = _time_ns()
        if self.sampled:
            recorder = ctx.recorder
            if recorder is not None:
                write_server_span(recorder.buffer, self, end_ns)
                recorder.written()
        metrics = ctx.metrics
        if metrics is not None:
            if self.trace_id:
                if self.sampled:
                    metrics.traces_sampled += 1
                else:
                    metrics.traces_unsampled += 1
            route = self.route
            (route.metrics if route is not None and route.metrics is not None else metrics.unrouted).observe(
                self.method,
                self.status,
                end_ns - self.start_ns,
                self.trace_hex if self.sampled else None,
                end_ns,
            )
        access_log = ctx.access_log
        if access_log is not None:
            access_log.log(self, end_ns)
        route = self.route
        if route is not None and route.agents is not None and route.agents.log:
            self._notify_log_agents(route.agents.log, (end_ns - self.start_ns) / 1e6)

    def _notify_log_agents(self, bindings: tuple[AgentBinding, ...], duration_ms: float) -> None:
        """`log` events: sent after the response, never waited for."""
        rest = request_complete_event(self, duration_ms)
        for binding in bindings:
            sent = binding.client.notify(binding.kind, binding.event_type, self.correlation_id, rest)
            metrics = binding.metrics
            if metrics is not None:
                if sent:
                    metrics.decided("sent")
                else:
                    metrics.failed("unavailable")

    def _attempt_ended(self, status: int, error: str, end_ns: int = 0) -> None:
        """An upstream attempt ended (at `end_ns`, or now): close its CLIENT span (sampled requests) and
        count it."""
        start = self.attempt_start_ns
        if not start:
            return
        self.attempt_start_ns = 0
        end = end_ns or _time_ns()
        if self.sampled:
            recorder = self.proto.ctx.recorder
            if recorder is not None:
                write_client_span(recorder.buffer, self, self.tried[-1], self.client_span_id, start, end, status, error)
                recorder.written()
        route = self.route
        if route is not None and route.upstream_metrics is not None:
            route.upstream_metrics.observe(status, error, end - start)

    # -- whole-request and write timeouts (timers only exist when they can fire) --------------------

    def error_type(self) -> str:
        """`error.type` of the SERVER span: what failed, for answers that are errors."""
        if self.status >= 500 and self.last_failure:
            return self.last_failure
        if self.status >= 500:
            return str(self.status)
        return "" if self.status else "incomplete"

    def _start_timer(self, delay: float, failure: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.proto.loop.call_later(delay, self._timer_fired, failure)

    def _timer_fired(self, failure: str) -> None:
        self.timer = None
        if self.done:
            return
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        self.last_failure = failure
        self.attempts = 1 << 30  # no retry once the time is up
        if self.conn is not None:
            self.on_upstream_error(failure, None)
        else:
            self._give_up()

    def _start_tunnel(self) -> None:
        conn = self.conn
        proto = self.proto
        if conn is None or conn.transport is None or proto.transport is None:
            return
        proto.tunnel = conn.transport
        if self.timer is not None:  # request timeouts do not apply to a long-lived tunnel
            self.timer.cancel()
            self.timer = None
        proto.resume_reading()
        if self.body_buffer:
            conn.transport.writelines(self.body_buffer)
            self.body_buffer = []

    def _release_upstream(self, reusable: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.tried[-1].inflight -= 1
        if reusable:
            conn.pool.release(conn)
        else:
            conn.abort()
