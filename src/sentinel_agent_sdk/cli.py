"""Run an agent as a process: flags, logging, tracing, signals (the Rust SDK's runner, in Python).

    run_agent(MyAgent())                                # flags: -s/--socket, --protocol, --json-logs, ...
    run_agent(lambda args: MyAgent(args.level), parser=parser)   # an agent built from its own flags

Once the socket listens, `agent NAME listening on PATH` goes to stderr (what supervisors and tests wait
for). SIGTERM or SIGINT stops serving, removes the socket, flushes the spans and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sentinel_agent_sdk import tracing  # OpenTelemetry itself is imported only once export is configured
from sentinel_agent_sdk.server import Agent, AgentServer

DEFAULT_SOCKET = "/tmp/sentinel-agent.sock"

AgentFactory = Callable[[argparse.Namespace], Agent]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The SDK's flags; an agent adds its own to the same parser."""
    parser.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help="Unix socket to listen on (%(default)s)")
    parser.add_argument("--protocol", choices=("v2", "v1"), default="v2", help="agent protocol (%(default)s)")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines instead of text")
    parser.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        help="OTLP/gRPC endpoint for the agent's spans (default $OTEL_EXPORTER_OTLP_ENDPOINT; none: no export)",
    )
    parser.add_argument("--service-name", default=None, help="service.name of the spans (default: the agent's name)")
    parser.add_argument("--max-concurrency", type=int, default=100, help="calls handled at once (%(default)s)")


def run_agent(
    agent: Agent | AgentFactory, argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    """Parse the flags (the SDK's added to `parser`), build the agent if given a factory, serve; the exit status."""
    if parser is None:
        parser = argparse.ArgumentParser(prog=agent.name if isinstance(agent, Agent) else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return serve(agent if isinstance(agent, Agent) else agent(args), args)


def serve(agent: Agent, args: argparse.Namespace) -> int:
    """Serve `agent` as the parsed SDK flags say, until SIGTERM/SIGINT."""
    _configure_logging(args.json_logs)
    if args.otlp_endpoint:
        tracing.configure_tracing(args.service_name or agent.name, args.otlp_endpoint)
    try:
        return _run(_serve(agent, args))
    finally:
        tracing.shutdown_tracing()


def _run(main: Coroutine[Any, Any, int]) -> int:
    """uvloop when it is installed (it is, with Sentinel): it roughly halves the per-call overhead."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(agent: Agent, args: argparse.Namespace) -> int:
    server = AgentServer(agent, args.socket, protocol=args.protocol, max_concurrency=args.max_concurrency)
    try:
        await server.start()
    except OSError as exc:
        print(f"agent {agent.name}: cannot listen on {args.socket}: {exc}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"agent {agent.name} listening on {args.socket}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()  # also removes the socket file
    return 0


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _configure_logging(json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(_JsonFormatter() if json_logs else text)
    logging.basicConfig(level=os.environ.get("AGENT_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True)
