"""The agent side of the protocol: an `Agent` with async handlers, served on a Unix socket (SPEC §5).

v2 (default): the handshake, then events multiplexed by correlation id; every call runs as its own task
(bounded by `max_concurrency`) and is answered when it finishes, so answers may go out of order. Cancel
stops a call's task without an answer, Ping is echoed as Pong. v1: one call at a time, answered in order.

A broken frame closes that connection only; a handler that raises fails only its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Literal, cast

from sentinel_agent_sdk import protocol
from sentinel_agent_sdk.decision import Decision, error_response
from sentinel_agent_sdk.events import (
    RequestBody,
    RequestComplete,
    RequestHeaders,
    ResponseBody,
    ResponseHeaders,
)

log = logging.getLogger("sentinel_agent_sdk")

_READ_SIZE = 64 * 1024


class Agent:
    """Subclass and override the handlers for the events the agent cares about; only those (and configure)
    are announced to the proxy, which then sends nothing else."""

    name = "agent"
    version = "0.1.0"

    async def on_configure(self, config: dict[str, Any]) -> bool:
        """The proxy's `config` block for this agent; return False to reject it."""
        return True

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        return Decision.allow()

    async def on_request_body(self, event: RequestBody) -> Decision:
        return Decision.allow()

    async def on_response_headers(self, event: ResponseHeaders) -> Decision:
        return Decision.allow()

    async def on_response_body(self, event: ResponseBody) -> Decision:
        return Decision.allow()

    async def on_request_complete(self, event: RequestComplete) -> None:
        return None


# Handler name → the event number a subclass announces when it overrides that handler.
_HANDLER_EVENTS = {
    "on_request_headers": protocol.EVENT_NUMBERS["request_headers"],
    "on_request_body": protocol.EVENT_NUMBERS["request_body_chunk"],
    "on_response_headers": protocol.EVENT_NUMBERS["response_headers"],
    "on_response_body": protocol.EVENT_NUMBERS["response_body_chunk"],
    "on_request_complete": protocol.EVENT_NUMBERS["request_complete"],
}


def supported_events(agent: Agent) -> list[int]:
    events = {protocol.EVENT_NUMBERS["configure"]}
    for handler, number in _HANDLER_EVENTS.items():
        if getattr(type(agent), handler) is not getattr(Agent, handler):
            events.add(number)
    return sorted(events)


def handshake_response(agent: Agent, max_concurrency: int) -> dict[str, Any]:
    # Every field is sent: the Rust structs behind it have no serde defaults.
    return {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "capabilities": {
            "agent_id": agent.name,
            "name": agent.name,
            "version": agent.version,
            "supported_events": supported_events(agent),
            "features": {
                "streaming_body": False,
                "websocket": False,
                "guardrails": False,
                "config_push": True,
                "metrics_export": False,
                "concurrent_requests": True,
                "cancellation": True,
                "flow_control": False,
                "health_reporting": False,
            },
            "limits": {
                "max_body_size": protocol.MAX_FRAME_V2,
                "max_concurrency": max_concurrency,
                "preferred_chunk_size": 65536,
            },
        },
        "success": True,
        "error": None,
        "encoding": "json",
    }


class AgentServer:
    def __init__(
        self,
        agent: Agent,
        socket_path: str,
        *,
        protocol: Literal["v2", "v1"] = "v2",
        max_concurrency: int = 100,
    ) -> None:
        if protocol not in ("v2", "v1"):
            raise ValueError(f"protocol must be 'v2' or 'v1', got {protocol!r}")
        self.agent = agent
        self.socket_path = socket_path
        self.protocol = protocol
        self.max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._handlers = _handlers(agent)
        self._closing = False

    async def start(self) -> None:
        _remove_stale_socket(self.socket_path)
        self._server = await asyncio.start_unix_server(self._connection, path=self.socket_path)

    async def serve_forever(self) -> None:
        """Serve until `close()` (starting first if needed)."""
        if self._server is None:
            await self.start()
        await self._closed.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._closing = True
            self._server.close()
            # Connections would keep the proxy's calls pending; end them, their in-flight calls with them.
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._closed.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self.protocol == "v2":
                await self._serve_v2(reader, writer)
            else:
                await self._serve_v1(reader, writer)
        except protocol.ProtocolError as exc:
            log.warning("agent %s: closing a connection: %s", self.agent.name, exc)
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # Cancelled by close(): end quietly (asyncio logs a connection task that ends cancelled).
            if not self._closing:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- v2 ----------------------------------------------------------------------------------------

    async def _serve_v2(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = protocol.FrameDecoder()
        calls: dict[str, asyncio.Task[None]] = {}
        output = protocol.LoopBatch(lambda data: None if writer.is_closing() else writer.write(data))
        handshaken = False
        try:
            while data := await reader.read(_READ_SIZE):
                for kind, payload in decoder.feed(data):
                    if handshaken:
                        self._dispatch_v2(kind, payload, calls, output)
                        continue
                    if kind != protocol.HANDSHAKE_REQUEST:
                        raise protocol.ProtocolError(f"expected a handshake request, got type 0x{kind:02x}")
                    versions = protocol.load_object(payload).get("supported_versions")
                    answer = handshake_response(self.agent, self.max_concurrency)
                    if isinstance(versions, list) and protocol.PROTOCOL_VERSION not in versions:
                        answer.update(success=False, error=f"protocol version 2 not in {versions}")
                    _send(writer, protocol.HANDSHAKE_RESPONSE, answer)
                    if not answer["success"]:
                        raise protocol.ProtocolError(str(answer["error"]))
                    handshaken = True
                await writer.drain()
        finally:
            for task in calls.values():
                task.cancel()

    def _dispatch_v2(
        self, kind: int, payload: bytes, calls: dict[str, asyncio.Task[None]], output: protocol.LoopBatch
    ) -> None:
        if kind == protocol.PING:
            output.send(protocol.encode_frame(protocol.PONG, payload))  # the payload bytes, echoed as they came
            return
        if kind in (protocol.PONG, protocol.HEALTH_STATUS, protocol.FLOW_CONTROL, protocol.METRICS_REPORT):
            return  # nothing this agent needs to act on
        if kind not in _V2_EVENTS and kind not in (protocol.CANCEL, *_V2_UNSUBSCRIBED):
            raise protocol.ProtocolError(f"unexpected message type 0x{kind:02x} from the proxy")
        message = protocol.load_object(payload)
        correlation_id = message.get("correlation_id")
        if not isinstance(correlation_id, str):
            raise protocol.ProtocolError(f"message type 0x{kind:02x} without a string correlation_id")
        if kind == protocol.CANCEL:
            # The proxy gave up on the call (timeout, client gone): stop the work, answer nothing.
            if (running := calls.get(correlation_id)) is not None:
                running.cancel()
            return
        if kind in _V2_UNSUBSCRIBED:
            output.send(protocol.encode_frame(protocol.AGENT_RESPONSE, Decision.allow().encode(correlation_id)))
            return
        # The handler starts at once, here: most finish without waiting for anything (an allow, a lookup),
        # and then no task is made for them. One that waits continues in a task, which Cancel can stop.
        call = self._answer(_V2_EVENTS[kind], message, correlation_id, version=2)
        try:
            waiting = call.send(None)
        except StopIteration as done:
            output.send(done.value)
            return
        task = asyncio.get_running_loop().create_task(_finish(call, waiting, output))
        calls[correlation_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if calls.get(correlation_id) is done:
                del calls[correlation_id]

        task.add_done_callback(forget)

    # -- v1 ----------------------------------------------------------------------------------------

    async def _serve_v1(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = protocol.MessageDecoder()
        while data := await reader.read(_READ_SIZE):
            for raw in decoder.feed(data):
                envelope = protocol.load_object(raw)
                event_type, payload = envelope.get("event_type"), envelope.get("payload")
                if not isinstance(event_type, str) or not isinstance(payload, dict):
                    raise protocol.ProtocolError("v1 message without a string event_type and an object payload")
                correlation_id = _v1_correlation_id(payload)
                if event_type in _V1_EVENTS:
                    # Strictly in order: the proxy sends the next call only after this answer.
                    answer = await self._answer(_V1_EVENTS[event_type], payload, correlation_id, version=1)
                else:  # an event it did not subscribe to
                    answer = protocol.encode_v1(Decision.allow().to_json(correlation_id, version=1))
                writer.write(answer)
                await writer.drain()

    # -- calls -------------------------------------------------------------------------------------

    async def _answer(self, event: str, payload: dict[str, Any], correlation_id: str, *, version: int) -> bytes:
        """Run one handler; its AgentResponse, encoded (an error response if the handler raised or its answer
        is over the size limit). Cancellation propagates: a cancelled call is not answered."""
        try:
            async with self._semaphore:
                decision = await self._handlers[event](payload)
            body = decision.encode(correlation_id, version=version)
            return protocol.encode_v1(body) if version == 1 else protocol.encode_frame(protocol.AGENT_RESPONSE, body)
        except Exception as exc:  # the handler's failure fails this call only
            log.exception("agent %s: %s handler failed for %s", self.agent.name, event, correlation_id)
            return _encode_response(
                error_response(correlation_id, f"{type(exc).__name__}: {exc}", version=version), version
            )


Handler = Callable[[dict[str, Any]], Awaitable[Decision]]


def _handlers(agent: Agent) -> dict[str, Handler]:
    """Event name → the agent's handler, fed the decoded payload and answering a Decision."""

    async def configure(payload: dict[str, Any]) -> Decision:
        config = payload.get("config")
        accepted = await agent.on_configure(config if isinstance(config, dict) else {})
        return Decision.allow() if accepted else Decision.block(500, "Configuration rejected")

    async def request_complete(payload: dict[str, Any]) -> Decision:
        await agent.on_request_complete(RequestComplete.from_json(payload))
        return Decision.allow()  # the proxy ignores the decision of this fire-and-forget event

    async def request_headers(payload: dict[str, Any]) -> Decision:
        return await agent.on_request_headers(RequestHeaders.from_json(payload))

    async def request_body(payload: dict[str, Any]) -> Decision:
        return await agent.on_request_body(RequestBody.from_json(payload))

    async def response_headers(payload: dict[str, Any]) -> Decision:
        return await agent.on_response_headers(ResponseHeaders.from_json(payload))

    async def response_body(payload: dict[str, Any]) -> Decision:
        return await agent.on_response_body(ResponseBody.from_json(payload))

    return {
        "configure": configure,
        "request_headers": request_headers,
        "request_body_chunk": request_body,
        "response_headers": response_headers,
        "response_body_chunk": response_body,
        "request_complete": request_complete,
    }


_V2_EVENTS = dict(protocol.MESSAGE_EVENT_NAMES)
# Events this SDK never announces; a proxy that sends one anyway gets an allow rather than a timeout.
_V2_UNSUBSCRIBED = (protocol.WEBSOCKET_FRAME, protocol.GUARDRAIL_INSPECT)
_V1_EVENTS = {name: name for name in protocol.EVENT_MESSAGE_TYPES}


async def _finish(call: Coroutine[Any, Any, bytes], waiting: Any, output: protocol.LoopBatch) -> None:
    output.send(await _resume(call, waiting))


@types.coroutine
def _resume(call: Coroutine[Any, Any, bytes], waiting: Any) -> Generator[Any, Any, bytes]:
    """Drive a coroutine that was started outside a task from where it stopped (`waiting` is what it
    yielded), passing results and exceptions (cancellation too) through, as `await` would."""
    while True:
        try:
            value = yield waiting
        except BaseException as exc:  # handed to the coroutine, which decides
            try:
                waiting = call.throw(exc)
            except StopIteration as done:
                return cast(bytes, done.value)
        else:
            try:
                waiting = call.send(value)
            except StopIteration as done:
                return cast(bytes, done.value)


def _send(writer: asyncio.StreamWriter, kind: int, payload: Any) -> None:
    # One write per frame, so frames from concurrent calls never interleave.
    if not writer.is_closing():
        writer.write(protocol.encode_frame(kind, payload))


def _encode_response(response: dict[str, Any], version: int) -> bytes:
    if version == 1:
        return protocol.encode_v1(response)
    return protocol.encode_frame(protocol.AGENT_RESPONSE, response)


def _v1_correlation_id(payload: dict[str, Any]) -> str:
    # v1 request-headers events carry it only in their metadata; configure has none.
    value = payload.get("correlation_id")
    if not isinstance(value, str):
        metadata = payload.get("metadata")
        value = metadata.get("correlation_id") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a dead agent would make bind fail; a live one, or any other file, is not ours."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: stale
            return
    raise OSError(errno.EADDRINUSE, "in use by a running agent", path)
