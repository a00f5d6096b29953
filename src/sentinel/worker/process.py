"""Worker process entry point and lifecycle.

Started by the supervisor as `python -m sentinel.worker`, with the config text on stdin (so that a
reload can never race a file being edited), the listening sockets and the control socket inherited
as file descriptors. It serves until SIGTERM, then drains: stops accepting, lets in-flight requests
finish up to the grace period, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

import uvloop

from sentinel.agents.manager import AgentManager
from sentinel.config import ConfigError, load_config_text
from sentinel.config.model import BuiltinHandler, Config, ListenerConfig, ListenerProtocol
from sentinel.ipc import CONTROL, decode_control, encode_control, read_frame
from sentinel.ipc.batch import FLUSH_INTERVAL, FrameBatcher
from sentinel.logging import app as app_log
from sentinel.logging.access import AccessLog
from sentinel.metrics.recording import Snapshot, WorkerMetrics
from sentinel.proxy.builtins import Builtins, InstanceInfo
from sentinel.proxy.listener import ConnectionBudget, HttpProtocol, ListenerContext
from sentinel.tracing.recorder import SpanRecorder
from sentinel.upstream.cluster import Cluster

_SWEEP_INTERVAL = 1.0
_IDLE_GRACE = 1.0  # seconds an idle connection may still send one request while draining
_SCRAPE_TIMEOUT = 5.0

log = logging.getLogger("sentinel.worker")


def metrics_wanted(config: Config) -> bool:
    """Record metrics when an endpoint or a route can serve them."""
    metrics = config.observability.metrics
    if metrics is not None and metrics.enabled:
        return True
    return any(r.builtin_handler is BuiltinHandler.METRICS for r in config.routes)


def tls_context(listener: ListenerConfig) -> ssl.SSLContext | None:
    if listener.protocol is not ListenerProtocol.HTTPS or listener.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(listener.tls.cert_file, listener.tls.key_file)
    if listener.tls.ca_file:
        context.load_verify_locations(listener.tls.ca_file)
    return context


class Worker:
    def __init__(
        self,
        config: Config,
        sockets: dict[str, socket.socket],
        control: socket.socket,
        index: int,
        access: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.control = control
        self.access = access  # where the access-log lines go (the supervisor's writer thread reads it)
        self.index = index
        self.contexts: list[ListenerContext] = []
        self.clusters: dict[str, Cluster] = {}
        self.servers: list[asyncio.Server] = []
        self.stopping = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.recorder: SpanRecorder | None = None
        self.metrics: WorkerMetrics | None = WorkerMetrics() if metrics_wanted(config) else None
        self.access_log: AccessLog | None = None
        self.agents: AgentManager | None = None
        self.log_handler: app_log.LineHandler | None = None
        self._scrapes: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_scrape = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.clusters = {uid: Cluster(u, loop) for uid, u in self.config.upstreams.items()}
        info = InstanceInfo()
        builtins = Builtins(self.config, info, self.target_health, self.scrape if self.metrics is not None else None)
        workers = self.config.system.worker_threads or os.cpu_count() or 1
        budget = ConnectionBudget(max(1, -(-self.config.system.max_connections // workers)))
        reader, self.writer = await asyncio.open_unix_connection(sock=self.control)
        writer = self.writer
        tracing = self.config.observability.tracing
        recorder = None
        if tracing is not None and tracing.enabled:
            recorder = SpanRecorder(writer.writelines, writer.transport.get_write_buffer_size)
        self.recorder = recorder
        access = self.config.observability.logging.access_log
        access_writer: asyncio.StreamWriter | None = None
        if access is not None and access.enabled:
            if self.access is None:  # the supervisor could not open the file; it said so in its log
                log.warning("access log configured but not open in the supervisor: no access-log lines")
            else:
                _, access_writer = await asyncio.open_unix_connection(sock=self.access)
                self.access_log = AccessLog(
                    access, access_writer.writelines, access_writer.transport.get_write_buffer_size
                )
        if self.config.agents:
            self.agents = AgentManager(self.config, loop, self.metrics)
            self.agents.start()
        for listener in self.config.listeners:
            ctx = ListenerContext(
                self.config,
                listener,
                builtins,
                self.clusters,
                loop,
                budget,
                recorder,
                self.metrics,
                self.access_log,
                self.agents,
            )
            # The port actually bound: a listener configured with port 0 gets one from the kernel.
            ctx.server_port = self.sockets[listener.id].getsockname()[1]
            self.contexts.append(ctx)
            server = await loop.create_server(
                functools.partial(HttpProtocol, ctx),
                sock=self.sockets[listener.id],
                ssl=tls_context(listener),
                backlog=1024,
            )
            self.servers.append(server)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        control_task = loop.create_task(self._read_control(reader))
        sweep_task = loop.create_task(self._sweep())
        batches: list[FrameBatcher] = []
        if recorder is not None:
            batches.append(recorder)
        if self.access_log is not None:
            batches.append(self.access_log.batch)
        flush_task = loop.create_task(self._flush(batches))
        writer.write(encode_control({"type": "ready", "worker": self.index}))
        await self.stopping.wait()
        sweep_task.cancel()
        control_task.cancel()
        await self._drain()
        flush_task.cancel()
        # What the drained requests left: their spans, log lines, and the final counts.
        for batch in batches:
            batch.flush()
        if self.metrics is not None:
            writer.write(encode_control({"type": "metrics", "id": 0, "final": True, "snapshot": self.snapshot()}))
        await writer.drain()
        if access_writer is not None:
            await access_writer.drain()
        return 0

    def snapshot(self) -> Snapshot:
        assert self.metrics is not None
        recorder, access_log = self.recorder, self.access_log
        targets = [
            [uid, t.key, t.health_label(time.monotonic()) != "unhealthy"]
            for uid, cluster in self.clusters.items()
            for t in cluster.targets
        ]
        return self.metrics.snapshot(
            {
                "spans_dropped": recorder.dropped if recorder is not None else 0,
                "access_log_dropped": access_log.batch.dropped if access_log is not None else 0,
                "open_connections": sum(len(ctx.open_connections) for ctx in self.contexts),
                "targets": targets,
            }
        )

    async def scrape(self, accept: str) -> tuple[str, bytes]:
        """The aggregated exposition, for a `metrics` builtin route: the supervisor has every worker's numbers."""
        assert self.writer is not None
        self._next_scrape += 1
        scrape_id = self._next_scrape
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._scrapes[scrape_id] = future
        try:
            self.writer.write(encode_control({"type": "scrape", "id": scrape_id, "accept": accept}))
            async with asyncio.timeout(_SCRAPE_TIMEOUT):
                answer = await future
        finally:
            self._scrapes.pop(scrape_id, None)
        return str(answer["content_type"]), str(answer["body"]).encode()

    @staticmethod
    async def _flush(batches: list[FrameBatcher]) -> None:
        """Send what waits in the batches every FLUSH_INTERVAL (full ones have gone already)."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            for batch in batches:
                batch.flush()

    def _reopen_logs(self) -> None:
        if self.log_handler is not None:
            try:
                self.log_handler.reopen()
            except OSError as exc:
                log.error("cannot reopen the application log: %s", exc)

    def target_health(self, upstream_id: str, target: str) -> str:
        cluster = self.clusters.get(upstream_id)
        if cluster is None:
            return "unknown"
        for t in cluster.targets:
            if t.key == target:
                return t.health_label(time.monotonic())
        return "unknown"

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        while True:
            frame = await read_frame(reader)
            if frame is None:
                # The supervisor is gone: nobody will restart or stop us, so stop now.
                self.stopping.set()
                return
            kind, payload = frame
            if kind != CONTROL:
                continue
            message = decode_control(payload)
            what = message.get("type")
            if what == "health":
                cluster = self.clusters.get(message["upstream"])
                if cluster is not None:
                    cluster.set_health(message["target"], bool(message["healthy"]))
            elif what == "metrics" and self.metrics is not None and self.writer is not None:
                snapshot = self.snapshot()
                self.writer.write(encode_control({"type": "metrics", "id": message["id"], "snapshot": snapshot}))
            elif what == "scraped":
                future = self._scrapes.get(message["id"])
                if future is not None and not future.done():
                    future.set_result(message)

    async def _sweep(self) -> None:
        parent = os.getppid()
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            for cluster in self.clusters.values():
                cluster.sweep()
            if os.getppid() != parent:
                # Orphaned (the supervisor was killed): nobody will stop or restart us, so stop now.
                self.stopping.set()

    async def _drain(self) -> None:
        """Stop accepting, close idle connections, give in-flight requests the grace period."""
        for server in self.servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + self.config.system.graceful_shutdown_timeout_secs
        for ctx in self.contexts:
            for proto in list(ctx.open_connections):
                proto.drain(_IDLE_GRACE)
        loop = asyncio.get_running_loop()
        while any(ctx.open_connections for ctx in self.contexts) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for ctx in self.contexts:
            for proto in list(ctx.open_connections):
                if proto.transport is not None:
                    proto.transport.abort()
        for cluster in self.clusters.values():
            cluster.close()
        if self.agents is not None:
            await self.agents.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentinel-worker")
    parser.add_argument("--source", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--access-fd", type=int, default=None)
    parser.add_argument("--listen", action="append", default=[], metavar="LISTENER_ID=FD")
    args = parser.parse_args(argv)
    text = sys.stdin.read()
    try:
        config = load_config_text(text, args.source)
    except ConfigError as exc:
        print(f"sentinel worker: {exc}", file=sys.stderr)
        return 1
    sockets: dict[str, socket.socket] = {}
    for item in args.listen:
        listener_id, _, fd = item.rpartition("=")
        sockets[listener_id] = socket.socket(fileno=int(fd))
    control = socket.socket(fileno=args.control_fd)
    access = socket.socket(fileno=args.access_fd) if args.access_fd is not None else None
    worker = Worker(config, sockets, control, args.index, access)
    try:
        worker.log_handler = app_log.configure(config.observability.logging)
    except OSError as exc:
        print(f"sentinel worker: cannot open the application log: {exc}", file=sys.stderr)
        return 1
    profile_to = os.environ.get("SENTINEL_PROFILE")
    if not profile_to:
        return uvloop.run(worker.run())
    # Developer aid (docs/performance.md): a deterministic profile of this worker, written at exit.
    import cProfile  # noqa: PLC0415

    profiler = cProfile.Profile()
    code = profiler.runcall(uvloop.run, worker.run())
    profiler.dump_stats(f"{profile_to}.{os.getpid()}")
    return int(code)
