"""The supervisor: owns the listening sockets, runs the workers and the once-per-machine jobs (SPEC §1, §11).

- One SO_REUSEPORT socket per listener and worker slot, created here and inherited by the worker of
  that slot, so that a crashed or replaced worker never closes a socket with connections queued on it.
- Workers are restarted when they die; SIGHUP validates the config file and, if it is good, starts a
  new generation of workers on the same sockets before the old one drains; SIGTERM/SIGINT drain all.
- Active health checks run here once and reach every worker over its control socket.
- The span exporter, the access-log writer and the metrics endpoint run here, once for all workers:
  workers send spans and metric snapshots over their control sockets, and log lines over a socket of
  their own that the writer's thread reads.
- SIGUSR1 reopens the log files (here and in every worker) after log rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

from sentinel import __version__
from sentinel.compiled import status as compiled_status
from sentinel.config import (
    DEFAULT_SOURCE,
    Config,
    ConfigError,
    default_config_text,
    load_config_text,
    read_config_file,
)
from sentinel.config.model import AccessLogConfig, ListenerConfig, MetricsConfig
from sentinel.ipc import CONTROL, SPANS, FrameSplitter, decode_control, encode_control
from sentinel.logging import app as app_log
from sentinel.logging.writer import AccessLogWriter
from sentinel.metrics.aggregate import Aggregator
from sentinel.metrics.exposition import ExporterFigures, SentinelCollector, render
from sentinel.metrics.recording import Snapshot
from sentinel.metrics.server import MetricsServer
from sentinel.supervisor import heap
from sentinel.supervisor.health import HealthChecker
from sentinel.supervisor.viewer import EmbeddedViewer
from sentinel.tracing.export import SpanExporter
from sentinel.tracing.resource import resource_attributes

_READY_TIMEOUT = 30.0
_EXPORT_SHUTDOWN_MAX = 5.0  # seconds the exporter may take to send what is queued at shutdown
_RESTART_BACKOFF_MAX = 5.0
_SCRAPE_WAIT = 2.0  # how long a scrape waits for a worker's snapshot before using its previous one
_READER_DRAIN = 5.0  # how long an exited worker's last frames may take to arrive
_READ_CHUNK = 256 * 1024  # the most one read of a worker's control socket takes

_log = logging.getLogger("sentinel.supervisor")


def log(message: str, level: int = logging.INFO) -> None:
    _log.log(level, message)


def announce(message: str) -> None:
    """A line on stderr that scripts wait for (a bound address), and the same in the application log."""
    print(f"sentinel: {message}", file=sys.stderr, flush=True)
    _log.info(message)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def access_log_config(config: Config) -> AccessLogConfig | None:
    access = config.observability.logging.access_log
    return access if access is not None and access.enabled else None


def metrics_config(config: Config) -> MetricsConfig | None:
    metrics = config.observability.metrics
    return metrics if metrics is not None and metrics.enabled else None


def bind_listener(listener: ListenerConfig, port: int | None = None) -> socket.socket:
    host = listener.address.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, listener.address.port if port is None else port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def make_exporter(config: Config) -> SpanExporter | None:
    """The span export pipeline, owned by the supervisor so that it runs once for all workers."""
    tracing = config.observability.tracing
    if tracing is None or not tracing.enabled:
        return None
    return SpanExporter(tracing, resource_attributes(tracing.service_name))


def worker_count(config: Config) -> int:
    return config.system.worker_threads or os.cpu_count() or 1


@dataclass(eq=False)  # identity semantics: handles live in sets
class WorkerHandle:
    slot: int
    generation: int
    process: asyncio.subprocess.Process
    control: socket.socket
    writer: asyncio.StreamWriter | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    retiring: bool = False
    snapshot: Snapshot | None = None  # the latest metric snapshot received
    final: bool = False  # `snapshot` is the one sent on exit
    pending: dict[int, asyncio.Future[Snapshot]] = field(default_factory=dict)


class Supervisor:
    def __init__(self, config: Config, config_text: str) -> None:
        self.config = config
        self.config_text = config_text
        self.generation = 0
        # (listener address, slot) -> socket; sockets outlive workers and generations.
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self.workers: dict[int, WorkerHandle] = {}  # slot -> current worker
        self.retiring: set[WorkerHandle] = set()
        self.starting: set[WorkerHandle] = set()
        self.stopping = False
        self.done = asyncio.Event()
        self.health = HealthChecker(self.broadcast_health)
        self.exporter: SpanExporter | None = make_exporter(config)
        tracing = config.observability.tracing
        self.viewer: EmbeddedViewer | None = (
            EmbeddedViewer(tracing)
            if tracing is not None and tracing.enabled and tracing.backend.viewer is not None
            else None
        )
        self._restart_delay: dict[int, float] = {}
        self.aggregator = Aggregator()
        self.metrics_server: MetricsServer | None = None
        access = access_log_config(config)
        self.access_writer: AccessLogWriter | None = AccessLogWriter(access.file) if access is not None else None
        self._finishing_writers: list[AccessLogWriter] = []  # replaced by a reload, still fed by old workers
        self.log_handler: app_log.LineHandler | None = None
        self._scrape_ids = 0

    # -- sockets ------------------------------------------------------------------------------------

    def _sockets_for(self, config: Config) -> dict[int, dict[str, socket.socket]]:
        """Per slot, listener id -> socket; reuses the sockets of addresses already bound."""
        slots: dict[int, dict[str, socket.socket]] = {}
        for slot in range(worker_count(config)):
            slots[slot] = {}
            for listener in config.listeners:
                key = (str(listener.address), slot)
                sock = self.sockets.get(key)
                if sock is None:
                    # Port 0: every slot must share the port the first slot was given.
                    first = self.sockets.get((str(listener.address), 0))
                    port = first.getsockname()[1] if first is not None and listener.address.port == 0 else None
                    sock = bind_listener(listener, port)
                    self.sockets[key] = sock
                slots[slot][listener.id] = sock
        return slots

    def _close_unused_sockets(self) -> None:
        used = {(str(lst.address), slot) for lst in self.config.listeners for slot in range(worker_count(self.config))}
        for key in [k for k in self.sockets if k not in used]:
            self.sockets.pop(key).close()

    # -- workers ------------------------------------------------------------------------------------

    async def spawn(self, slot: int, sockets: dict[str, socket.socket], generation: int) -> WorkerHandle:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child.set_inheritable(True)
        args = [sys.executable, "-m", "sentinel.worker", "--source", self.config.source, "--index", str(slot)]
        args += ["--control-fd", str(child.fileno())]
        passed = [child]
        # The access log has a socket of its own, read by the writer's thread, not by this event loop.
        access_writer = self.access_writer
        access_parent: socket.socket | None = None
        if access_writer is not None:
            access_parent, access_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            access_child.set_inheritable(True)
            args += ["--access-fd", str(access_child.fileno())]
            passed.append(access_child)
        for listener_id, sock in sockets.items():
            args += ["--listen", f"{listener_id}={sock.fileno()}"]
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=[*(s.fileno() for s in passed), *(s.fileno() for s in sockets.values())],
            )
        except BaseException:
            parent.close()
            if access_parent is not None:
                access_parent.close()
            raise
        finally:
            for sock in passed:
                sock.close()
        if access_parent is not None:
            assert access_writer is not None
            access_writer.attach(access_parent)
        assert process.stdin is not None
        process.stdin.write(self.config_text.encode())
        process.stdin.close()
        handle = WorkerHandle(slot, generation, process, parent)
        asyncio.get_running_loop().create_task(self._watch(handle))
        return handle

    async def _watch(self, handle: WorkerHandle) -> None:
        reader, handle.writer = await asyncio.open_unix_connection(sock=handle.control)
        reader_task = asyncio.get_running_loop().create_task(self._read_worker(handle, reader))
        code = await handle.process.wait()
        # The worker's last spans, log lines and final counts may still be in the socket: read to its end.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader_task), _READER_DRAIN)
        reader_task.cancel()
        handle.writer.close()
        if handle.snapshot is not None:
            # Its counts stay in the totals (all of them after a clean exit; up to its last snapshot after a crash).
            self.aggregator.retire(handle.snapshot)
            handle.snapshot = None
        self.retiring.discard(handle)
        if self.workers.get(handle.slot) is handle:
            del self.workers[handle.slot]
            if not self.stopping:
                log(f"worker {handle.slot} (pid {handle.process.pid}) exited with {code}; restarting", logging.WARNING)
                await self._restart(handle.slot)
        self._maybe_done()

    async def _restart(self, slot: int) -> None:
        delay = self._restart_delay.get(slot, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if self.stopping or slot in self.workers:
            return
        self._restart_delay[slot] = min(max(delay * 2, 0.1), _RESTART_BACKOFF_MAX)
        generation = self.generation
        sockets = self._sockets_for(self.config)[slot]
        handle = await self.spawn(slot, sockets, generation)
        if self.stopping or slot in self.workers or generation != self.generation:
            # A reload (or shutdown) filled or replaced this slot while we were spawning.
            self.retire(handle)
            return
        self.workers[slot] = handle

    async def _read_worker(self, handle: WorkerHandle, reader: asyncio.StreamReader) -> None:
        # Whole reads cut into frames: with the access log or tracing on, a worker sends hundreds of frames
        # a second, and reading each as two `readexactly` calls cost two resumptions of this task per frame.
        frames = FrameSplitter()
        while True:
            data = await reader.read(_READ_CHUNK)
            if not data:
                return  # end of stream (a frame cut short by it is dropped, as read_frame does)
            for kind, payload in frames.feed(data):
                self._frame_received(handle, kind, payload)

    def _frame_received(self, handle: WorkerHandle, kind: int, payload: bytes) -> None:
        if kind == SPANS:
            if self.exporter is not None:
                try:
                    self.exporter.offer_framed(payload)
                except ValueError as e:  # a worker bug; the frame is lost, not the supervisor
                    log(f"worker {handle.slot} sent a malformed SPANS frame: {e}", logging.ERROR)
        elif kind == CONTROL:
            message = decode_control(payload)
            kind_name = message.get("type")
            if kind_name == "ready":
                handle.ready.set()
                self._restart_delay.pop(handle.slot, None)
                self._send_health_state(handle)
            elif kind_name == "metrics":
                self._snapshot_received(handle, message)
            elif kind_name == "scrape":
                asyncio.get_running_loop().create_task(self._answer_scrape(handle, message))

    # -- metrics ------------------------------------------------------------------------------------

    def _snapshot_received(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        snapshot = message["snapshot"]
        if not handle.final:
            handle.snapshot = snapshot
            handle.final = bool(message.get("final"))
        future = handle.pending.pop(int(message.get("id", 0)), None)
        if future is not None and not future.done():
            future.set_result(snapshot)

    async def scrape(self, accept: str) -> tuple[str, bytes]:
        """Ask every live worker for its numbers (each answers between two of its callbacks), add them up
        with those of the workers that exited, and render them."""
        loop = asyncio.get_running_loop()
        handles = [h for h in [*self.workers.values(), *self.retiring] if h.ready.is_set()]
        waits: list[asyncio.Future[Snapshot]] = []
        for handle in handles:
            if handle.final or handle.writer is None or handle.writer.is_closing():
                continue
            self._scrape_ids += 1
            future: asyncio.Future[Snapshot] = loop.create_future()
            handle.pending[self._scrape_ids] = future
            handle.writer.write(encode_control({"type": "metrics", "id": self._scrape_ids}))
            waits.append(future)
        if waits:
            await asyncio.wait(waits, timeout=_SCRAPE_WAIT)
        for handle in handles:
            for future in handle.pending.values():
                future.cancel()
            handle.pending.clear()
        live = [h.snapshot for h in handles if h.snapshot is not None]
        totals, gauges = self.aggregator.combine(live)
        return render(SentinelCollector(totals, gauges, ExporterFigures.of(self.exporter)), accept)

    async def _answer_scrape(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        """A worker serves a `metrics` builtin route: it gets the same exposition as the endpoint."""
        content_type, body = await self.scrape(str(message.get("accept", "")))
        if handle.writer is not None and not handle.writer.is_closing():
            answer = {"type": "scraped", "id": message["id"], "content_type": content_type, "body": body.decode()}
            handle.writer.write(encode_control(answer))

    async def _start_metrics_server(self) -> None:
        metrics = metrics_config(self.config)
        if metrics is None:
            return
        server = MetricsServer(metrics.address.host, metrics.address.port, metrics.path, self.scrape)
        try:
            host, port = await server.start()
        except OSError as exc:
            log(f"cannot serve metrics on {metrics.address}: {exc}", logging.ERROR)
            return
        self.metrics_server = server
        announce(f"metrics on {host_port(host, port)}{metrics.path}")

    async def _reload_metrics_server(self, old: Config) -> None:
        if metrics_config(old) == metrics_config(self.config) and self.metrics_server is not None:
            return
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        await self._start_metrics_server()

    def _reload_logs(self, old: Config) -> None:
        if old.observability.logging != self.config.observability.logging:
            try:
                self.log_handler = app_log.configure(self.config.observability.logging)
            except OSError as exc:
                log(f"cannot open the application log: {exc}", logging.ERROR)

    def _finish_writer(self, writer: AccessLogWriter | None) -> None:
        # Writers whose old workers have all exited are done: only the others are kept for shutdown.
        self._finishing_writers = [w for w in self._finishing_writers if w.running]
        if writer is not None:
            writer.finish()
            self._finishing_writers.append(writer)

    def _open_access_writer(self, old: Config) -> bool:
        """A writer for the new config's access log, if it differs from `old`'s; says whether it was swapped
        (a file that cannot be opened keeps the running writer)."""
        access = access_log_config(self.config)
        if access_log_config(old) == access:
            return False
        try:
            self.access_writer = AccessLogWriter(access.file) if access is not None else None
        except OSError as exc:
            log(f"cannot open the access log: {exc}", logging.ERROR)
            return False
        return True

    def reopen_logs(self) -> None:
        """SIGUSR1: reopen the log files here and in every worker (after log rotation)."""
        if self.access_writer is not None:
            self.access_writer.reopen()
        if self.log_handler is not None:
            try:
                self.log_handler.reopen()
            except OSError as exc:
                log(f"cannot reopen the application log: {exc}", logging.ERROR)
        for handle in [*self.workers.values(), *self.retiring]:
            if handle.process.returncode is None:
                handle.process.send_signal(signal.SIGUSR1)

    def _send_health_state(self, handle: WorkerHandle) -> None:
        if handle.writer is None:
            return
        for (upstream_id, target), healthy in self.health.state().items():
            handle.writer.write(
                encode_control({"type": "health", "upstream": upstream_id, "target": target, "healthy": healthy})
            )

    def broadcast_health(self, upstream_id: str, target: str, healthy: bool) -> None:
        log(f'upstream "{upstream_id}" target {target} is now {"healthy" if healthy else "unhealthy"}')
        frame = encode_control({"type": "health", "upstream": upstream_id, "target": target, "healthy": healthy})
        for handle in [*self.workers.values(), *self.retiring]:
            if handle.writer is not None and handle.ready.is_set():
                handle.writer.write(frame)

    async def start_generation(self) -> bool:
        """Start a full set of workers for the current config; True once all are ready."""
        self.generation += 1
        slots = self._sockets_for(self.config)
        handles = [await self.spawn(slot, socks, self.generation) for slot, socks in slots.items()]
        self.starting.update(handles)
        ready_all: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(h.ready.wait() for h in handles)))
        exits: list[asyncio.Future[Any]] = [asyncio.ensure_future(h.process.wait()) for h in handles]
        try:
            await asyncio.wait([ready_all, *exits], timeout=_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in [ready_all, *exits]:
                future.cancel()
            self.starting.difference_update(handles)
        if self.stopping:
            self.retiring.update(h for h in handles if h.process.returncode is None)
            return False
        if not all(h.ready.is_set() for h in handles):
            for h in handles:
                if h.process.returncode is None:
                    h.process.kill()
            return False
        old = list(self.workers.values())
        self.workers = {h.slot: h for h in handles}
        for h in old:
            self.retire(h)
        return True

    def retire(self, handle: WorkerHandle) -> None:
        handle.retiring = True
        self.retiring.add(handle)
        if handle.process.returncode is None:
            handle.process.send_signal(signal.SIGTERM)

    # -- signals ------------------------------------------------------------------------------------

    async def reload(self) -> None:
        source = self.config.source
        try:
            text = default_config_text() if source == DEFAULT_SOURCE else read_config_file(source)
            config = load_config_text(text, source)
        except ConfigError as exc:
            log(f"reload failed, keeping the running configuration:\n{exc}", logging.ERROR)
            return
        previous = (self.config, self.config_text)
        self.config, self.config_text = config, text
        # The new workers are given their access sockets as they start, so the writer comes first.
        previous_writer = self.access_writer
        swapped = self._open_access_writer(previous[0])
        try:
            ok = await self.start_generation()
        except OSError as exc:
            ok = False
            log(f"reload failed: {exc}", logging.ERROR)
        if not ok:
            self.config, self.config_text = previous
            if swapped:
                self._finish_writer(self.access_writer)
                self.access_writer = previous_writer
            log("reload failed: the new workers did not start; keeping the running configuration", logging.ERROR)
            return
        if swapped:
            # The old workers' lines still go where they went when those workers started (as nginx's
            # old workers keep their log files); the old writer closes once the last of them exits.
            self._finish_writer(previous_writer)
        self.health.configure(config)
        self._reload_logs(previous[0])
        await self._reload_metrics_server(previous[0])
        await self._reload_exporter(previous[0], config)
        log(f"reloaded {source} (generation {self.generation})")

    async def _reload_exporter(self, old_config: Config, config: Config) -> None:
        """Flush on reload; build a new pipeline only if the tracing settings changed."""
        old = self.exporter
        if old_config.observability.tracing == config.observability.tracing:
            if old is not None:
                await old.flush(5.0)
            return
        new = make_exporter(config)
        if new is not None:
            await new.start()
        self.exporter = new
        if old is not None:
            # The retiring workers' last spans may still arrive for the old settings; they go to the new
            # pipeline (or are dropped if tracing was switched off), and the old one sends what it holds.
            await old.shutdown(5.0)

    def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        log("shutting down: draining workers")
        for handle in [*self.workers.values(), *self.retiring, *self.starting]:
            if handle.process.returncode is None:
                handle.process.send_signal(signal.SIGTERM)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.stopping and not self.workers and not self.retiring and not self.starting:
            self.done.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown)
        reloads: asyncio.Queue[None] = asyncio.Queue()
        loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        if self.viewer is not None:
            await self.viewer.start()
        if self.exporter is not None:
            await self.exporter.start()
        state = compiled_status()
        log(f"sentinel {__version__}: request path {state}", logging.INFO if state == "compiled" else logging.WARNING)
        if not await self.start_generation():
            if not self.stopping:
                log("workers failed to start")
                self.stopping = True
                return 1
        else:
            await self._start_metrics_server()
            for listener in self.config.listeners:
                bound = self.sockets[(str(listener.address), 0)].getsockname()
                announce(f"listener {listener.id} on {host_port(bound[0], bound[1])}")
            self.health.configure(self.config)
        self._maybe_done()
        reload_task = loop.create_task(self._reload_loop(reloads))
        await self.done.wait()
        reload_task.cancel()
        self.health.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.exporter is not None:
            # The workers flushed their spans as they drained; send them before exiting, but do not
            # hold a shutdown for long on a collector that is down.
            grace = float(self.config.system.graceful_shutdown_timeout_secs)
            await self.exporter.shutdown(min(grace, _EXPORT_SHUTDOWN_MAX))
        if self.viewer is not None:
            await self.viewer.stop()
        self._close_unused_sockets()
        for sock in self.sockets.values():
            sock.close()
        for writer in [*self._finishing_writers, self.access_writer]:
            if writer is not None:
                writer.close()
        return 0

    async def _reload_loop(self, reloads: asyncio.Queue[None]) -> None:
        while True:
            await reloads.get()
            if not self.stopping:
                await self.reload()
                self._close_unused_sockets_later()

    def _close_unused_sockets_later(self) -> None:
        # Sockets of removed listeners close once the old generation has drained.
        async def wait_and_close() -> None:
            while any(h.process.returncode is None for h in self.retiring):
                await asyncio.sleep(0.1)
            self._close_unused_sockets()

        asyncio.get_running_loop().create_task(wait_and_close())


def run_supervisor(config: Config, text: str) -> int:
    """Run until SIGTERM/SIGINT; `text` is the config's source text, handed to every worker."""
    started = time.monotonic()
    try:
        handler = app_log.configure(config.observability.logging)
    except OSError as exc:
        print(f"sentinel: cannot open the application log: {exc}", file=sys.stderr)
        return 1
    refused = heap.keep_large_blocks_in_heap()
    if refused:
        log(f"malloc settings not applied ({', '.join(refused)}): the allocator's defaults stay", logging.DEBUG)
    try:
        supervisor = Supervisor(config, text)
        supervisor.log_handler = handler
        code = uvloop.run(supervisor.run())
    except OSError as exc:
        print(f"sentinel: cannot start: {exc}", file=sys.stderr)
        log(f"cannot start: {exc}", logging.ERROR)
        return 1
    log(f"stopped after {time.monotonic() - started:.1f}s")
    return code
