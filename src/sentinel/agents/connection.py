"""One connection from a worker to an agent, v2 (multiplexed) or v1 (one call at a time).

Both are asyncio protocols driven by callbacks: a call is a frame written and a dict entry, its
answer is matched in `data_received`; no task or future per call.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any, cast

from sentinel.agents.reply import ALLOWED
from sentinel.logging.access import json_string
from sentinel_agent_sdk.decision import ALLOW_HEAD, ALLOW_TAIL
from sentinel_agent_sdk.protocol import (
    AGENT_RESPONSE,
    CANCEL,
    CONFIGURE,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    PING,
    PONG,
    FrameDecoder,
    LoopBatch,
    MessageDecoder,
    ProtocolError,
    encode_frame,
    encode_v1,
    handshake_request,
    load_object,
)

if TYPE_CHECKING:
    from sentinel.agents.client import AgentCall, AgentClient


def event_payload(call_id: str, rest: bytes) -> bytes:
    """The event JSON with the call's `correlation_id` put first; `rest` is the event's other members
    and its closing brace, built once per request and shared by the agents of a route."""
    return b'{"correlation_id":' + json_string(call_id).encode() + b"," + rest


class AgentConnection(asyncio.Protocol, abc.ABC):
    """What the client needs from a connection, whichever protocol version."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.failure = "connection"  # why in-flight calls failed when the connection ends

    # -- set-up (awaited once, before the connection carries calls) --------------------------------

    @abc.abstractmethod
    async def open(self, config: dict[str, Any] | None, proxy_version: str) -> dict[str, Any]:
        """Handshake (v2) and Configure; returns what the agent said about itself."""

    @abc.abstractmethod
    def send(self, call: AgentCall) -> None:
        """Send a call; its answer goes to the client's `answered`/`replied`, a failure to `failed`."""

    @abc.abstractmethod
    def cancel(self, call: AgentCall) -> None:
        """Forget a call (timed out, or its request went away); its late answer is dropped."""

    @abc.abstractmethod
    def notify(self, kind: int, event_type: str, call_id: str, rest: bytes) -> bool:
        """A fire-and-forget event (`log`): its answer is read and dropped. False if it was not sent."""

    def ping(self) -> None:
        """Liveness probe; v2 only."""

    # -- asyncio ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(self.failure)
        # First, so that the calls failed below do not pull queued ones into this dead connection.
        self.client.connection_ended(self)
        self.fail_all()

    @abc.abstractmethod
    def fail_all(self) -> None:
        """The connection ended: every call still out fails with `self.failure`."""

    def protocol_error(self, error: str) -> None:
        """The agent broke the wire format: nothing more on this connection can be trusted."""
        self.client.log_protocol_error(error)
        self.failure = "protocol"
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class V2Connection(AgentConnection):
    """Protocol v2: binary frames, JSON payloads, answers matched by correlation id, any order."""

    def __init__(self, client: AgentClient) -> None:
        super().__init__(client)
        self.decoder = FrameDecoder()
        self.pending: dict[str, AgentCall] = {}
        self.abandoned: dict[str, float] = {}  # ids of calls given up on (timeout, cancel) → when
        # Calls made while handling one batch of client reads go out together: one write instead of one
        # per request (under load that halves the syscalls of an agent call).
        self.out = LoopBatch(self._transport_write)
        self.control: dict[int, asyncio.Future[dict[str, Any]]] = {}  # handshake / configure answers
        self.configure_id = ""
        self.next_id = 0
        self.pings_unanswered = 0

    async def open(self, config: dict[str, Any] | None, proxy_version: str) -> dict[str, Any]:
        answer = await self._exchange(HANDSHAKE_REQUEST, HANDSHAKE_RESPONSE, handshake_request(proxy_version))
        if answer.get("success") is False:
            raise ProtocolError(f"handshake refused: {answer.get('error') or 'no reason given'}")
        if answer.get("protocol_version") != 2:
            raise ProtocolError(f"agent speaks protocol version {answer.get('protocol_version')!r}, not 2")
        if config is not None:
            self.configure_id = f"configure-{time.time_ns()}"
            reply = await self._exchange(
                CONFIGURE, AGENT_RESPONSE, {"correlation_id": self.configure_id, "config": config}
            )
            _check_configured(reply)
        capabilities = answer.get("capabilities")
        return capabilities if isinstance(capabilities, dict) else {}

    async def _exchange(self, kind: int, answer_kind: int, message: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.control[answer_kind] = future
        assert self.transport is not None
        self.transport.write(encode_frame(kind, message))
        done, _ = await asyncio.wait((future, self.closed), return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            raise ConnectionError("the agent closed the connection during set-up")
        return future.result()

    def send(self, call: AgentCall) -> None:
        call_id = call.call_id
        if call_id in self.pending or call_id in self.abandoned:
            # One event per id may be in flight (two requests can carry the same incoming correlation
            # id), and an id whose late answer may still come must not be reused: a new one.
            self.next_id += 1
            call_id = call.call_id = f"{call_id}~{self.next_id}"
        self.pending[call_id] = call
        self._write(encode_frame(call.kind, event_payload(call_id, call.rest)))

    def _write(self, frame: bytes) -> None:
        self.out.send(frame)

    def _transport_write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def cancel(self, call: AgentCall) -> None:
        if self.pending.pop(call.call_id, None) is not None:
            self.abandoned[call.call_id] = asyncio.get_running_loop().time()
            self._write(
                encode_frame(
                    CANCEL, {"correlation_id": call.call_id, "reason": call.cancel_reason, "timestamp_ms": _now_ms()}
                )
            )

    def notify(self, kind: int, event_type: str, call_id: str, rest: bytes) -> bool:
        self._write(encode_frame(kind, event_payload(call_id, rest)))
        return True

    def ping(self) -> None:
        if self.pings_unanswered >= 2:
            # Two intervals without a Pong: the agent is hung. Close, so calls fail fast and it reconnects.
            self.failure = "ping_timeout"
            if self.transport is not None:
                self.transport.abort()
            return
        self.pings_unanswered += 1
        if self.abandoned:
            # Late answers that never came: after a minute their ids are free again.
            cutoff = asyncio.get_running_loop().time() - _ABANDONED_SECS
            self.abandoned = {k: t for k, t in self.abandoned.items() if t > cutoff}
        self._write(encode_frame(PING, {"sequence": self.next_id, "timestamp_ms": _now_ms()}))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
            for kind, payload in frames:
                if kind == AGENT_RESPONSE:
                    if payload.startswith(ALLOW_HEAD) and payload.endswith(ALLOW_TAIL):
                        call_id = payload[len(ALLOW_HEAD) : -len(ALLOW_TAIL)]
                        if call_id.find(b"\\") < 0 and call_id.startswith(b'"') and call_id.endswith(b'"'):
                            # A plain allow, laid out as the SDK and the Rust agents write it: no parsing.
                            call = self.pending.pop(call_id[1:-1].decode(), None)
                            if call is not None:
                                self.client.replied(call, ALLOWED)
                                continue
                    self._answer(load_object(payload))  # anything else, and the Configure answer
                elif kind == PONG:
                    self.pings_unanswered = 0
                elif kind == HANDSHAKE_RESPONSE:
                    future = self.control.pop(HANDSHAKE_RESPONSE, None)
                    if future is None or future.done():
                        raise ProtocolError("unexpected handshake response")
                    future.set_result(load_object(payload))
                # Health, metrics and flow-control reports are not used: ignoring them is allowed.
        except ProtocolError as exc:
            self.protocol_error(str(exc))

    def _answer(self, message: dict[str, Any]) -> None:
        audit = message.get("audit")
        custom = audit.get("custom") if isinstance(audit, dict) else None
        call_id = custom.get("correlation_id") if isinstance(custom, dict) else None
        if not isinstance(call_id, str):
            raise ProtocolError("answer without audit.custom.correlation_id")
        call = self.pending.pop(call_id, None)
        if call is not None:
            self.client.answered(call, message)
            return
        if call_id == self.configure_id:
            future = self.control.pop(AGENT_RESPONSE, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        # A call that timed out or was cancelled (its id may be used again now), or a log event's answer.
        self.abandoned.pop(call_id, None)

    def fail_all(self) -> None:
        pending, self.pending = self.pending, {}
        for call in pending.values():
            self.client.failed(call, self.failure)
        for future in self.control.values():
            if not future.done():
                future.set_exception(ConnectionError("the agent closed the connection during set-up"))
        self.control.clear()


_V1_EVENT_TYPES = {
    0x10: "request_headers",
    0x11: "request_body_chunk",
    0x12: "response_headers",
    0x13: "response_body_chunk",
    0x14: "request_complete",
}


class V1Connection(AgentConnection):
    """Protocol v1: length-prefixed JSON envelopes, strictly one call at a time, answered in order.

    A call that timed out stays at the head of the line until its late answer arrives (and is dropped):
    only then can the next call be sent.
    """

    def __init__(self, client: AgentClient) -> None:
        super().__init__(client)
        self.decoder = MessageDecoder()
        self.line: collections.deque[AgentCall | None] = collections.deque()  # None: answer to drop
        self.waiting: collections.deque[AgentCall | None] = collections.deque()
        self.configured: asyncio.Future[dict[str, Any]] | None = None

    async def open(self, config: dict[str, Any] | None, proxy_version: str) -> dict[str, Any]:
        if config is not None:
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.configured = future
            assert self.transport is not None
            self.transport.write(
                encode_v1(
                    {"version": 1, "event_type": "configure", "payload": {"agent_id": self.client.id, "config": config}}
                )
            )
            done, _ = await asyncio.wait((future, self.closed), return_when=asyncio.FIRST_COMPLETED)
            if future not in done:
                raise ConnectionError("the agent closed the connection during set-up")
            _check_configured(future.result())
            self.configured = None
        return {}

    def send(self, call: AgentCall) -> None:
        self.waiting.append(call)
        self._next()

    def notify(self, kind: int, event_type: str, call_id: str, rest: bytes) -> bool:
        from sentinel.agents.client import AgentCall  # noqa: PLC0415 (import cycle)

        if len(self.waiting) >= _V1_LOG_BACKLOG:
            return False  # one call at a time: log events must not hold up requests behind them
        call = AgentCall(kind, event_type, call_id, rest, None)
        self.waiting.append(call)
        self._next()
        return True

    def cancel(self, call: AgentCall) -> None:
        try:
            self.waiting.remove(call)
        except ValueError:
            if call.cancel_reason == CANCEL_TIMEOUT:
                # Sent and unanswered in time: the line is stuck behind it, and v1 has no other way to
                # recover than a new connection (the calls behind it fail now instead of timing out).
                self.failure = "timeout"
                if self.transport is not None:
                    self.transport.abort()
                return
            # The client went away: its answer will come and must be dropped, in its place in the line.
            self.line = collections.deque(None if c is call else c for c in self.line)

    def _next(self) -> None:
        transport = self.transport
        if self.line or not self.waiting or transport is None:
            return
        call = self.waiting.popleft()
        self.line.append(call)
        if call is not None:
            envelope = b'{"version":1,"event_type":"%s","payload":%s}' % (
                call.event_type.encode(),
                event_payload(call.call_id, call.rest),
            )
            transport.write(encode_v1(envelope))

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self.decoder.feed(data):
                message = load_object(payload)
                if message.get("version") != 1:
                    raise ProtocolError(f"answer with version {message.get('version')!r}, expected 1")
                if self.configured is not None:
                    if not self.configured.done():
                        self.configured.set_result(message)
                    continue
                if not self.line:
                    raise ProtocolError("an answer nobody asked for")
                call = self.line.popleft()
                if call is not None and call.on_done is not None:
                    self.client.answered(call, message)
                self._next()
        except ProtocolError as exc:
            self.protocol_error(str(exc))

    def fail_all(self) -> None:
        calls = [c for c in (*self.line, *self.waiting) if c is not None and c.on_done is not None]
        self.line.clear()
        self.waiting.clear()
        for call in calls:
            self.client.failed(call, self.failure)
        if self.configured is not None and not self.configured.done():
            self.configured.set_exception(ConnectionError("the agent closed the connection during set-up"))


# Cancel reasons sent to the agent.
CANCEL_CLIENT_GONE = 1
CANCEL_TIMEOUT = 2
_ABANDONED_SECS = 60.0
_V1_LOG_BACKLOG = 100


def _check_configured(reply: dict[str, Any]) -> None:
    decision = reply.get("decision")
    if isinstance(decision, dict) and "block" in decision:
        block = decision["block"] if isinstance(decision["block"], dict) else {}
        raise ProtocolError(f"configuration rejected: {block.get('body') or block.get('status')}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
