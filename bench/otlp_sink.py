"""A local OTLP/gRPC collector for benchmarks: accepts every export, counts spans, keeps nothing.

python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _identity(data: bytes) -> bytes:
    return data


async def _export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""  # an empty ExportTraceServiceResponse


async def main(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                _export, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
