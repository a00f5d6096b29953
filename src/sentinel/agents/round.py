"""The agents of a route for one event of one request: calls, merge, spans and metrics (SPEC §5, §6.4).

Request-headers calls run concurrently; the other events call the agents one after another, so a
later agent does not see what an earlier one blocked. Either way decisions are read in route order
and the first that is not allow (or a failure under fail-closed) decides.
"""

from __future__ import annotations

import time
from binascii import hexlify
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sentinel.agents.client import CIRCUIT_OPEN, OK, TIMEOUT, AgentCall, AgentClient
from sentinel.agents.reply import ALLOW, AgentReply, HeaderOps
from sentinel.metrics.recording import AgentMetrics
from sentinel.tracing.context import FLAG_SAMPLED, new_span_id
from sentinel.tracing.spans import agent_call_span

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange


@dataclass(frozen=True, slots=True)
class AgentBinding:
    """One agent as a route calls it for one event: resolved at config load."""

    client: AgentClient
    agent_id: str
    event: str  # the configured event name: request_headers, request_body, ..., log
    kind: int  # v2 message type
    event_type: str  # v1 event_type / protocol event name
    timeout: float
    fail_closed: bool
    failure_mode: str  # "open" / "closed", for the span
    metrics: AgentMetrics | None


class AgentRound:
    __slots__ = (
        "answer",
        "bindings",
        "calls",
        "concurrent",
        "error",
        "ex",
        "make_rest",
        "next",
        "on_done",
        "outstanding",
        "request_ops",
        "response_ops",
    )

    def __init__(
        self,
        ex: Exchange,
        bindings: tuple[AgentBinding, ...],
        make_rest: Callable[[bytes], bytes],
        concurrent: bool,
        on_done: Callable[[AgentRound], None],
    ) -> None:
        self.ex = ex
        self.bindings = bindings
        self.make_rest = make_rest  # traceparent → the event's members
        self.concurrent = concurrent
        self.on_done = on_done
        self.calls: list[AgentCall] = []
        self.outstanding = 0
        self.next = 0
        self.answer: AgentReply | None = None  # a decision that is not allow: the client gets it
        self.error: tuple[int, str] | None = None  # a failure under fail-closed
        self.request_ops: HeaderOps = ()  # of the allowing agents, in route order
        self.response_ops: HeaderOps = ()

    def start(self) -> None:
        if self.concurrent:
            self.outstanding = len(self.bindings)
            for _ in self.bindings:
                self._start_next()
        else:
            self.outstanding = 1
            self._start_next()

    def cancel(self) -> None:
        """The request went away: drop the calls still out."""
        self.on_done = _ignore
        for binding, call in zip(self.bindings, self.calls, strict=False):
            if not call.outcome:
                binding.client.cancel(call)

    def _start_next(self) -> None:
        index = self.next
        self.next += 1
        binding = self.bindings[index]
        ex = self.ex
        traceparent = b""
        span_id = b""
        if ex.trace_id:
            # Named after this call's span, so the agent's own spans nest under it.
            span_id = new_span_id()
            flags = ex.trace_flags | (FLAG_SAMPLED if ex.sampled else 0)
            traceparent = b"00-%s-%s-%02x" % (hexlify(ex.trace_id), hexlify(span_id), flags)
        call = AgentCall(binding.kind, binding.event_type, ex.correlation_id, self.make_rest(traceparent), self._done)
        call.index = index
        call.span_id = span_id
        self.calls.append(call)
        binding.client.call(call, binding.timeout)

    def _done(self, call: AgentCall) -> None:
        binding = self.bindings[call.index]
        self._observe(binding, call, call.span_id)
        self.outstanding -= 1
        if not self.concurrent:
            decided = self._read(binding, call)
            if not decided and self.next < len(self.bindings):
                self.outstanding = 1
                self._start_next()
                return
            self._complete()
            return
        if self.outstanding == 0:
            for b, c in zip(self.bindings, self.calls, strict=True):
                if self._read(b, c):
                    break
            self._complete()

    def _complete(self) -> None:
        ex = self.ex
        if ex.agent_round is self:
            ex.agent_round = None
        self.on_done(self)

    def _read(self, binding: AgentBinding, call: AgentCall) -> bool:
        """Fold one result into the round; True when it decides the request."""
        reply = call.reply
        if call.outcome == OK and reply is not None:
            if reply.decision != ALLOW:
                self.answer = reply
                return True
            if reply.request_ops:
                self.request_ops += reply.request_ops
            if reply.response_ops:
                self.response_ops += reply.response_ops
            return False
        if not binding.fail_closed:
            return False  # fail-open: carry on without this agent
        if call.outcome == TIMEOUT:
            self.error = (504, f"agent {binding.agent_id} timed out")
        else:
            self.error = (503, f"agent {binding.agent_id} unavailable")
        return True

    def _observe(self, binding: AgentBinding, call: AgentCall, span_id: bytes) -> None:
        end_ns = time.time_ns()
        reply = call.reply
        decision = reply.decision if reply is not None else ""
        metrics = binding.metrics
        if metrics is not None:
            if call.outcome != CIRCUIT_OPEN:
                metrics.latency.observe(end_ns - call.start_ns)
            if call.outcome == OK:
                metrics.decided(decision)
            elif call.outcome == TIMEOUT:
                metrics.timeouts += 1
            else:
                metrics.failed(call.reason)
        ex = self.ex
        if ex.sampled:
            recorder = ex.proto.ctx.recorder
            if recorder is not None:
                audit: dict[str, list[str]] | None = None
                if reply is not None and (reply.tags or reply.rule_ids):
                    audit = {"tags": reply.tags, "rule_ids": reply.rule_ids}
                recorder.record(
                    agent_call_span(
                        ex.trace_id,
                        ex.span_id,
                        span_id,
                        binding.agent_id,
                        binding.event,
                        call.start_ns,
                        end_ns,
                        decision=decision or "none",
                        outcome=call.outcome,
                        failure_mode=binding.failure_mode,
                        audit=audit,
                        trace_flags=ex.trace_flags,
                    )
                )


def _ignore(_: AgentRound) -> None:
    pass
