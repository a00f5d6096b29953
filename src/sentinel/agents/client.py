"""A worker's client for one agent: its connection, kept up in the background, the concurrency limit,
per-call timeouts and the circuit breaker (SPEC §5)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sentinel import __version__
from sentinel.agents.connection import (
    CANCEL_CLIENT_GONE,
    CANCEL_TIMEOUT,
    AgentConnection,
    V1Connection,
    V2Connection,
)
from sentinel.agents.reply import AgentReply, read_reply
from sentinel.config.model import AgentConfig, AgentProtocolVersion
from sentinel_agent_sdk.protocol import ProtocolError

log = logging.getLogger("sentinel.agents")

OK, TIMEOUT, ERROR, CIRCUIT_OPEN = "ok", "timeout", "error", "circuit_open"
CONNECT_TIMEOUT = 5.0
PING_INTERVAL = 5.0
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 5.0


class AgentCall:
    """One event sent to one agent. `rest` is the event JSON after its `correlation_id`."""

    __slots__ = (
        "call_id",
        "cancel_reason",
        "deadline",
        "event_type",
        "index",
        "kind",
        "on_done",
        "outcome",
        "reason",
        "reply",
        "rest",
        "sent",
        "span_id",
        "start_ns",
    )

    def __init__(
        self, kind: int, event_type: str, call_id: str, rest: bytes, on_done: Callable[[AgentCall], None] | None
    ) -> None:
        self.kind = kind
        self.event_type = event_type
        self.call_id = call_id
        self.rest = rest
        self.on_done = on_done
        self.deadline = 0.0  # loop time
        self.index = 0  # the caller's: which agent of its round this is
        self.span_id = b""  # the agent-call span, named in the event's traceparent (empty: not traced)
        self.sent = False
        self.start_ns = 0
        self.outcome = ""  # ok / timeout / error / circuit_open, once finished
        self.reason = ""  # for errors: unavailable / connection / protocol / ...
        self.reply: AgentReply | None = None
        self.cancel_reason = CANCEL_CLIENT_GONE


class CircuitBreaker:
    """`failure_threshold` consecutive failures open it for `open_secs`; then one probe call decides."""

    __slots__ = ("failures", "open_secs", "open_until", "probing", "threshold")

    def __init__(self, threshold: int, open_secs: float) -> None:
        self.threshold = threshold
        self.open_secs = open_secs
        self.failures = 0
        self.open_until = 0.0  # 0: closed
        self.probing = False

    def allow(self, now: float) -> bool:
        if not self.open_until:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True  # half-open: this call is the probe
        return True

    def record(self, success: bool, now: float) -> bool:
        """Returns True when this result opened the breaker."""
        self.probing = False
        if success:
            self.failures = 0
            self.open_until = 0.0
            return False
        self.failures += 1
        if self.failures >= self.threshold:
            opened = not self.open_until or now >= self.open_until
            self.open_until = now + self.open_secs
            return opened
        return False


class AgentClient:
    """Everything a worker knows about one agent. Calls are callback-driven: `call()` returns at once
    and the call's `on_done` runs when it is answered, fails, or times out."""

    def __init__(self, config: AgentConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.id = config.id
        self.config = config
        self.loop = loop
        self.conn: AgentConnection | None = None
        self.connecting = True  # calls wait for the first connection attempt instead of failing
        self.waiting: collections.deque[AgentCall] = collections.deque()
        self.active = 0  # calls sent and not finished: max-concurrent-calls bounds this
        self.max_active = config.max_concurrent_calls
        self.breaker = CircuitBreaker(config.circuit_breaker.failure_threshold, config.circuit_breaker.timeout_secs)
        self.task: asyncio.Task[None] | None = None
        # Calls waiting for their timeout, one FIFO per timeout value (so deadlines come in order), each
        # with one timer for its head: a call costs an append, not a timer of its own.
        self.deadlines: dict[float, collections.deque[AgentCall]] = {}
        self.deadline_timers: dict[float, asyncio.TimerHandle] = {}
        self.factory = V1Connection if config.protocol_version is AgentProtocolVersion.V1 else V2Connection

    def start(self) -> None:
        self.task = self.loop.create_task(self._maintain())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        for timer in self.deadline_timers.values():
            timer.cancel()
        self.deadline_timers.clear()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- calls --------------------------------------------------------------------------------------

    def call(self, call: AgentCall, timeout: float) -> None:
        call.start_ns = time.time_ns()
        now = self.loop.time()
        if self.breaker.open_until and not self.breaker.allow(now):
            self._finish(call, CIRCUIT_OPEN, CIRCUIT_OPEN, None)
            return
        if self.conn is None and not self.connecting:
            self._finish(call, ERROR, "unavailable", None)
            return
        self._watch(call, now + timeout, timeout)
        if self.conn is not None and self.active < self.max_active:
            self._send(self.conn, call)
        else:
            self.waiting.append(call)

    def notify(self, kind: int, event_type: str, call_id: str, rest: bytes) -> bool:
        """Fire and forget (`log` events). False when the agent cannot be reached now."""
        conn = self.conn
        if conn is None or not self.breaker.allow(self.loop.time()):
            return False
        sent = conn.notify(kind, event_type, call_id, rest)
        self.breaker.probing = False  # a notification proves nothing either way
        return sent

    def cancel(self, call: AgentCall) -> None:
        """The request went away: forget the call (and tell the agent), without calling back."""
        if call.outcome:
            return
        call.outcome = "cancelled"
        call.rest = b""
        call.on_done = None  # the call may sit in a deadline queue: it must not keep the request alive
        if call.sent:
            self.active -= 1
            if self.conn is not None:
                self.conn.cancel(call)
            self._pump()
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(call)
        self.breaker.probing = False

    def _send(self, conn: AgentConnection, call: AgentCall) -> None:
        call.sent = True
        self.active += 1
        conn.send(call)

    def _pump(self) -> None:
        conn = self.conn
        waiting = self.waiting
        while conn is not None and waiting and self.active < self.max_active:
            self._send(conn, waiting.popleft())

    # -- results (from the connection, the timer, or at once) ---------------------------------------

    def answered(self, call: AgentCall, message: dict[str, Any]) -> None:
        try:
            reply = read_reply(message)
        except ProtocolError as exc:
            log.warning("agent %s gave an unusable answer: %s", self.id, exc)
            self._finish(call, ERROR, "bad_response", None)
            return
        self._finish(call, OK, "", reply)

    def replied(self, call: AgentCall, reply: AgentReply) -> None:
        self._finish(call, OK, "", reply)

    def failed(self, call: AgentCall, reason: str) -> None:
        self._finish(call, ERROR, reason, None)

    def _watch(self, call: AgentCall, deadline: float, timeout: float) -> None:
        call.deadline = deadline
        queue = self.deadlines.get(timeout)
        if queue is None:
            queue = self.deadlines[timeout] = collections.deque()
        queue.append(call)
        if timeout not in self.deadline_timers:
            self.deadline_timers[timeout] = self.loop.call_at(call.deadline, self._expire, timeout)

    def _expire(self, timeout: float) -> None:
        """Time out the calls whose deadline has passed; finished ones just leave the queue."""
        self.deadline_timers.pop(timeout, None)
        queue = self.deadlines[timeout]
        now = self.loop.time()
        while queue:
            head = queue[0]
            if head.outcome:
                queue.popleft()
            elif head.deadline <= now:
                queue.popleft()
                self._timed_out(head)
            else:
                break
        # A call made while timing these out (a pipelined request starting) may have armed a timer already.
        if queue and timeout not in self.deadline_timers:
            self.deadline_timers[timeout] = self.loop.call_at(queue[0].deadline, self._expire, timeout)

    def _timed_out(self, call: AgentCall) -> None:
        if call.sent:
            if self.conn is not None:
                call.cancel_reason = CANCEL_TIMEOUT
                self.conn.cancel(call)
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(call)
        self._finish(call, TIMEOUT, TIMEOUT, None)

    def _finish(self, call: AgentCall, outcome: str, reason: str, reply: AgentReply | None) -> None:
        if call.outcome:
            return
        call.outcome = outcome
        call.reason = reason
        call.reply = reply
        call.rest = b""  # the call may wait in a deadline queue a while: keep it small
        if call.sent:
            self.active -= 1
        if outcome != CIRCUIT_OPEN and self.breaker.record(outcome == OK, self.loop.time()):
            log.warning(
                "agent %s: circuit breaker open for %gs after %d consecutive failures (last: %s)",
                self.id,
                self.breaker.open_secs,
                self.breaker.failures,
                reason,
            )
        if self.waiting:
            self._pump()
        on_done, call.on_done = call.on_done, None  # the round refers to the call: no cycle left behind
        if on_done is not None:
            on_done(call)

    # -- the connection -----------------------------------------------------------------------------

    def connection_ended(self, conn: AgentConnection) -> None:
        """The connection closed: calls wait for the reconnect (within their timeout) instead of going to it."""
        if self.conn is conn:
            self.conn = None
            self.connecting = self.task is not None

    def log_protocol_error(self, error: str) -> None:
        log.warning("agent %s broke the protocol (%s): closing the connection", self.id, error)

    async def _maintain(self) -> None:
        """Connect, and reconnect with backoff whenever the connection ends. A missing socket is not
        fatal: requests meanwhile get the agent's failure mode."""
        backoff = _BACKOFF_FIRST
        reported = False
        path = self.config.socket_path
        while True:
            self.connecting = True
            try:
                conn = await self._open()
            except (OSError, ConnectionError, ProtocolError, TimeoutError) as exc:
                self.connecting = False
                waiting, self.waiting = self.waiting, collections.deque()
                for call in waiting:
                    self._finish(call, ERROR, "unavailable", None)
                if not reported:
                    log.warning("agent %s unavailable at %s (%s); retrying in the background", self.id, path, exc)
                    reported = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self.conn = conn
            self.connecting = False
            backoff = _BACKOFF_FIRST
            reported = False
            log.info("agent %s connected on %s (protocol %s)", self.id, path, self.config.protocol_version.value)
            self._pump()
            while not conn.closed.done():
                try:
                    await asyncio.wait_for(asyncio.shield(conn.closed), PING_INTERVAL)
                except TimeoutError:
                    conn.ping()
            self.conn = None
            log.warning("agent %s connection lost (%s); reconnecting", self.id, conn.closed.result())

    async def _open(self) -> AgentConnection:
        factory = self.factory
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, conn = await self.loop.create_unix_connection(lambda: factory(self), self.config.socket_path)
            try:
                await conn.open(self.config.config, __version__)
            except BaseException:
                conn.close()
                raise
        return conn
