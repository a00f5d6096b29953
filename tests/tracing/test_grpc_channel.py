"""The exporter's own gRPC channel (`tracing.grpc_channel`) against two real peers: grpcio's server (the
reference implementation, for flow control, deadlines and reconnection) and a scripted HTTP/2 server on a
raw socket for what grpcio cannot be made to do on request (GOAWAY, RST_STREAM, PING, an HTTP error
status, headers split over CONTINUATION frames with padding, a tiny flow-control window).

The exporter's own tests (test_export.py) cover status codes, retries, TLS, gzip and metadata end to end.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import cast

import grpc
import grpc.aio
import hpack
import pytest

from sentinel.tracing import grpc_channel
from sentinel.tracing.grpc_channel import GrpcChannel

METHOD = "/test.Echo/Call"
Handler = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


async def _grpc_server(handler: Handler, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    rpc: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        handler
    )  # no (de)serializers: bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Call": rpc}),))
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


def _channel(port: int) -> GrpcChannel:
    return GrpcChannel("127.0.0.1", port, f"127.0.0.1:{port}", METHOD, [("x-tenant", "t1")], "sentinel-test/1")


def test_calls_on_one_connection_with_messages_larger_than_every_window() -> None:
    peers: list[str] = []
    seen_metadata: list[dict[str, str | bytes]] = []

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        peers.append(context.peer())
        seen_metadata.append(dict(context.invocation_metadata() or ()))
        return request[::-1]

    async def main() -> None:
        server, port = await _grpc_server(echo)
        channel = _channel(port)
        try:
            for size in (0, 10, 70_000, 3_000_000):  # 3 MB: many DATA frames and WINDOW_UPDATEs
                message = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                result = await channel.call(message, timeout=10)
                assert result.code == grpc_channel.OK, result
                assert result.response == message[::-1]
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())
    assert len(set(peers)) == 1, peers  # one connection for all the calls
    assert seen_metadata[0]["x-tenant"] == "t1"
    assert str(seen_metadata[0]["user-agent"]).startswith("sentinel-test/1")


def test_a_deadline_with_grpcio_and_the_channel_goes_on() -> None:
    release = asyncio.Event()

    async def slow_once(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if request == b"slow":
            await release.wait()
        return b"ok"

    async def main() -> None:
        server, port = await _grpc_server(slow_once)
        channel = _channel(port)
        try:
            result = await channel.call(b"slow", timeout=0.3)
            assert result.code == grpc_channel.DEADLINE_EXCEEDED, result
            release.set()
            result = await channel.call(b"fast", timeout=5)
            assert (result.code, result.response) == (grpc_channel.OK, b"ok")
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())


def test_a_server_that_goes_away_and_comes_back() -> None:
    async def ok(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b"ok"

    async def main() -> None:
        server, port = await _grpc_server(ok)
        channel = _channel(port)
        try:
            assert (await channel.call(b"1", timeout=5)).code == grpc_channel.OK
            await server.stop(None)
            down = await channel.call(b"2", timeout=5)
            assert down.code == grpc_channel.UNAVAILABLE, down
            server, _ = await _grpc_server(ok, port)
            assert (await channel.call(b"3", timeout=5)).code == grpc_channel.OK
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())


# --- a scripted HTTP/2 server ----------------------------------------------------------------------------

_FRAME = struct.Struct(">HBBBI")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) >> 8, len(payload) & 0xFF, kind, flags, stream) + payload


class ScriptedServer:
    """Reads the client's frames; `script(server, stream_id, message)` answers each request."""

    def __init__(
        self,
        script: Callable[[ScriptedServer, int, bytes], Awaitable[None]],
        settings: bytes = b"",
        on_headers: Callable[[ScriptedServer, int], None] | None = None,
        reads: bool = True,
    ) -> None:
        """`on_headers(server, stream_id)` runs when a request's HEADERS arrive; with `reads` False the
        server reads nothing after the preface (a collector that stopped reading)."""
        self.script = script
        self.settings = settings
        self.on_headers = on_headers
        self.reads = reads
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0
        self.frames: list[tuple[int, int, int, bytes]] = []  # what the client sent: type, flags, stream, payload
        self.encoder = hpack.Encoder()  # per connection: Huffman and the dynamic table, as real servers use
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self.window_updates = asyncio.Queue[tuple[int, int]]()  # stream, DATA bytes received

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        for writer in self._writers:
            writer.close()  # the reading task sees the end of the stream and returns
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for_frame(self, frame: tuple[int, int, int, bytes]) -> None:
        """Until the client has sent `frame` (five seconds at most)."""
        async with asyncio.timeout(5):
            while frame not in self.frames:
                self._arrived.clear()
                await self._arrived.wait()

    def send(self, *frames: bytes) -> None:
        assert self.writer is not None
        self.writer.write(b"".join(frames))

    def headers(self, fields: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(fields))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        self.writer = writer
        self.encoder = hpack.Encoder()
        await reader.readexactly(24)  # the preface
        writer.write(_frame(0x4, 0, 0, self.settings))
        if not self.reads:
            writer.write(_frame(0x8, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535)))  # the window wide open
            cast(asyncio.ReadTransport, writer.transport).pause_reading()  # the socket's buffers fill up
            await self._stopping.wait()
            writer.close()
            self._tasks.discard(task)
            return
        bodies: dict[int, bytes] = {}
        try:
            while True:
                head = await reader.readexactly(9)
                high, low, kind, flags, stream = _FRAME.unpack(head)
                payload = await reader.readexactly(high << 8 | low)
                self.frames.append((kind, flags, stream, payload))
                self._arrived.set()
                if kind == 0x1 and self.on_headers is not None:
                    self.on_headers(self, stream)
                if kind == 0x0:  # DATA
                    bodies[stream] = bodies.get(stream, b"") + payload
                    self.window_updates.put_nowait((stream, len(payload)))
                    if flags & 0x1:
                        await self.script(self, stream, bodies.pop(stream)[5:])
                elif kind == 0x4 and not flags & 0x1:
                    writer.write(_frame(0x4, 0x1, 0))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def _grpc_message(data: bytes) -> bytes:
    return struct.pack(">BI", 0, len(data)) + data


def _run_scripted(
    script: Callable[[ScriptedServer, int, bytes], Awaitable[None]],
    calls: int = 1,
    settings: bytes = b"",
) -> tuple[list[grpc_channel.CallResult], ScriptedServer]:
    results: list[grpc_channel.CallResult] = []
    server = ScriptedServer(script, settings)

    async def main() -> None:
        port = await server.start()
        channel = _channel(port)
        try:
            for n in range(calls):
                results.append(await channel.call(b"message %d" % n, timeout=5))
        finally:
            await channel.close()
            await server.stop()

    asyncio.run(main())
    return results, server


def test_an_answer_in_continuation_frames_with_padding_and_huffman() -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        block = server.headers([(":status", "200"), ("content-type", "application/grpc"), ("x-long", "v" * 100)])
        padded = bytes([3]) + block[:10] + b"\0\0\0"
        trailers = server.headers([("grpc-status", "0"), ("grpc-message", "fine%20thanks")])
        server.send(
            _frame(0x1, 0x8, stream, padded),  # HEADERS, PADDED, no END_HEADERS
            _frame(0x9, 0x0, stream, block[10:20]),  # CONTINUATION
            _frame(0x9, 0x4, stream, block[20:]),  # CONTINUATION, END_HEADERS
            _frame(0x0, 0x0, stream, _grpc_message(message.upper())),
            _frame(0x1, 0x5, stream, trailers),  # trailers: END_HEADERS | END_STREAM
        )

    results, _ = _run_scripted(script, calls=2)  # the second answer uses the dynamic table of the first
    assert [(r.code, r.response, r.message) for r in results] == [
        (grpc_channel.OK, b"MESSAGE 0", "fine thanks"),
        (grpc_channel.OK, b"MESSAGE 1", "fine thanks"),
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [("503", grpc_channel.UNAVAILABLE), ("401", grpc_channel.UNAUTHENTICATED), ("500", grpc_channel.UNKNOWN)],
)
def test_an_http_error_without_grpc_status(status: str, code: int) -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        server.send(_frame(0x1, 0x5, stream, server.headers([(":status", status)])))

    results, _ = _run_scripted(script)
    assert results[0].code == code, results


def test_goaway_refuses_the_call_and_the_next_one_opens_a_new_connection() -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        if server.connections == 1:
            server.send(_frame(0x7, 0, 0, struct.pack(">II", 0, 0)))  # GOAWAY, last stream 0
            return
        answer = server.headers([(":status", "200"), ("grpc-status", "0")])
        server.send(_frame(0x1, 0x4, stream, answer), _frame(0x0, 0, stream, _grpc_message(b"")))
        server.send(_frame(0x1, 0x5, stream, server.headers([("grpc-status", "0")])))

    results, server = _run_scripted(script, calls=2)
    assert results[0].code == grpc_channel.UNAVAILABLE, results  # retryable: the server never saw it
    assert results[1].code == grpc_channel.OK, results
    assert server.connections == 2


@pytest.mark.parametrize(("error", "code"), [(0x7, grpc_channel.UNAVAILABLE), (0x2, grpc_channel.INTERNAL)])
def test_a_stream_reset_by_the_server(error: int, code: int) -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        server.send(_frame(0x3, 0, stream, struct.pack(">I", error)))

    results, _ = _run_scripted(script)
    assert results[0].code == code, results


def test_pings_are_answered_and_a_tiny_window_is_respected() -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        server.send(_frame(0x6, 0, 0, b"12345678"))  # PING
        trailers = server.headers([(":status", "200"), ("grpc-status", "0")])
        server.send(_frame(0x1, 0x5, stream, trailers))  # trailers only: no message, which is an error

    async def open_window(server: ScriptedServer) -> None:
        while True:
            stream, n = await server.window_updates.get()
            server.send(_frame(0x8, 0, 0, struct.pack(">I", n)), _frame(0x8, 0, stream, struct.pack(">I", n)))

    async def script_with_window(server: ScriptedServer, stream: int, message: bytes) -> None:
        assert message == b"message %d" % (stream // 2)
        await script(server, stream, message)

    # SETTINGS_INITIAL_WINDOW_SIZE 4: the first request may go before the client has read the server's
    # SETTINGS (the default window applies until then, RFC 9113 §6.9.2); the second, 14 bytes, goes four
    # bytes at a time, each chunk after a WINDOW_UPDATE.
    server_settings = struct.pack(">HI", 0x4, 4)
    results: list[grpc_channel.CallResult] = []
    server = ScriptedServer(script_with_window, server_settings)

    async def main() -> None:
        port = await server.start()
        opener = asyncio.get_running_loop().create_task(open_window(server))
        channel = _channel(port)
        try:
            for n in range(2):
                results.append(await channel.call(b"message %d" % n, timeout=5))
        finally:
            opener.cancel()
            await channel.close()
            await server.stop()

    asyncio.run(main())
    data_frames = [f for f in server.frames if f[0] == 0x0 and f[2] == 3]
    assert len(data_frames) == 4, data_frames
    assert all(len(f[3]) <= 4 for f in data_frames), data_frames
    assert (0x6, 0x1, 0, b"12345678") in server.frames  # the PING's ACK
    # An OK status without a message is not an answer.
    assert [r.code for r in results] == [grpc_channel.INTERNAL] * 2, results


def _answer_ok(server: ScriptedServer, stream: int, message: bytes = b"") -> None:
    server.send(
        _frame(0x1, 0x4, stream, server.headers([(":status", "200"), ("content-type", "application/grpc")])),
        _frame(0x0, 0x0, stream, _grpc_message(message)),
        _frame(0x1, 0x5, stream, server.headers([("grpc-status", "0")])),
    )


def test_a_deadline_resets_the_stream_and_the_next_call_is_answered() -> None:
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        if stream != 1:  # the first call is never answered
            _answer_ok(server, stream, b"late but fine")

    server = ScriptedServer(script)

    async def main() -> None:
        port = await server.start()
        channel = _channel(port)
        try:
            result = await channel.call(b"first", timeout=0.3)
            assert result.code == grpc_channel.DEADLINE_EXCEEDED, result
            await server.wait_for_frame((0x3, 0, 1, struct.pack(">I", 0x8)))  # RST_STREAM(CANCEL)
            result = await channel.call(b"second", timeout=5)
            assert (result.code, result.response) == (grpc_channel.OK, b"late but fine")
            assert server.connections == 1
        finally:
            await channel.close()
            await server.stop()

    asyncio.run(main())


def test_an_answer_ends_a_request_that_waits_for_window() -> None:
    # The server answers a request's HEADERS at once (as a collector without the method, or a proxy
    # refusing the call, does) and never opens the window for its body: the call ends with the answer,
    # not at its deadline, and the rest of the request is cancelled.
    def refuse_second(server: ScriptedServer, stream: int) -> None:
        if stream == 3:
            answer = [(":status", "200"), ("grpc-status", "12"), ("grpc-message", "no such method")]
            server.send(_frame(0x1, 0x5, stream, server.headers(answer)))

    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        _answer_ok(server, stream)

    server = ScriptedServer(script, struct.pack(">HI", 0x4, 4), on_headers=refuse_second)

    async def main() -> None:
        port = await server.start()
        channel = _channel(port)
        try:
            assert (await channel.call(b"small", timeout=5)).code == grpc_channel.OK  # SETTINGS now read
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await channel.call(b"x" * 100_000, timeout=30)
            assert (result.code, result.message) == (grpc_channel.UNIMPLEMENTED, "no such method")
            assert loop.time() - started < 10  # answered, not timed out
            await server.wait_for_frame((0x3, 0, 3, struct.pack(">I", 0x8)))  # RST_STREAM(CANCEL)
        finally:
            await channel.close()
            await server.stop()

    asyncio.run(main())


def test_a_collector_that_stops_reading_times_calls_out_one_after_another() -> None:
    # Windows wide open but nothing read: the request fills the socket and the transport's buffer, and
    # the call waits for the buffer to drain until its deadline. A second call on the same connection
    # must time out the same way (a deadline must not break what later calls wait on).
    async def script(server: ScriptedServer, stream: int, message: bytes) -> None:
        raise AssertionError("nothing is read")

    server = ScriptedServer(script, struct.pack(">HI", 0x4, 2**31 - 1), reads=False)

    async def main() -> None:
        port = await server.start()
        channel = _channel(port)
        try:
            for size in (32 << 20, 10):
                result = await channel.call(b"x" * size, timeout=0.5)
                assert result.code == grpc_channel.DEADLINE_EXCEEDED, result
        finally:
            await channel.close()
            await server.stop()

    asyncio.run(main())
