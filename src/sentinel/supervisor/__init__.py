"""The supervisor: owns the listening sockets, runs the workers and the once-per-machine jobs (SPEC §1, §11).

- One SO_REUSEPORT socket per listener and worker slot, created here and inherited by the worker of
  that slot, so that a crashed or replaced worker never closes a socket with connections queued on it.
- Workers are restarted when they die; SIGHUP validates the config file and, if it is good, starts a
  new generation of workers on the same sockets before the old one drains; SIGTERM/SIGINT drain all.
- Active health checks run here once and reach every worker over its control socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

from sentinel.config import (
    DEFAULT_SOURCE,
    Config,
    ConfigError,
    default_config_text,
    load_config_text,
    read_config_file,
)
from sentinel.config.model import ListenerConfig
from sentinel.ipc import CONTROL, SPANS, decode_control, encode_control, read_frame
from sentinel.supervisor.health import HealthChecker
from sentinel.tracing.export import SpanExporter
from sentinel.tracing.recorder import unpack_spans
from sentinel.tracing.resource import resource_attributes

_READY_TIMEOUT = 30.0
_EXPORT_SHUTDOWN_MAX = 5.0  # seconds the exporter may take to send what is queued at shutdown
_RESTART_BACKOFF_MAX = 5.0


def log(message: str) -> None:
    print(f"sentinel: {message}", file=sys.stderr, flush=True)


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
        self._restart_delay: dict[int, float] = {}

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
        for listener_id, sock in sockets.items():
            args += ["--listen", f"{listener_id}={sock.fileno()}"]
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            pass_fds=[child.fileno(), *(s.fileno() for s in sockets.values())],
        )
        child.close()
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
        reader_task.cancel()
        handle.writer.close()
        self.retiring.discard(handle)
        if self.workers.get(handle.slot) is handle:
            del self.workers[handle.slot]
            if not self.stopping:
                log(f"worker {handle.slot} (pid {handle.process.pid}) exited with {code}; restarting")
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
        while True:
            frame = await read_frame(reader)
            if frame is None:
                return
            kind, payload = frame
            if kind == SPANS:
                if self.exporter is not None:
                    self.exporter.offer(unpack_spans(payload))
            elif kind == CONTROL:
                message = decode_control(payload)
                if message.get("type") == "ready":
                    handle.ready.set()
                    self._restart_delay.pop(handle.slot, None)
                    self._send_health_state(handle)

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
            log(f"reload failed, keeping the running configuration:\n{exc}")
            return
        previous = (self.config, self.config_text)
        self.config, self.config_text = config, text
        try:
            ok = await self.start_generation()
        except OSError as exc:
            ok = False
            log(f"reload failed: {exc}")
        if not ok:
            self.config, self.config_text = previous
            log("reload failed: the new workers did not start; keeping the running configuration")
            return
        self.health.configure(config)
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
        if self.exporter is not None:
            await self.exporter.start()
        if not await self.start_generation():
            if not self.stopping:
                log("workers failed to start")
                self.stopping = True
                return 1
        else:
            for listener in self.config.listeners:
                bound = self.sockets[(str(listener.address), 0)].getsockname()
                log(f"listener {listener.id} on {bound[0]}:{bound[1]}")
            self.health.configure(self.config)
        self._maybe_done()
        reload_task = loop.create_task(self._reload_loop(reloads))
        await self.done.wait()
        reload_task.cancel()
        self.health.stop()
        if self.exporter is not None:
            # The workers flushed their spans as they drained; send them before exiting, but do not
            # hold a shutdown for long on a collector that is down.
            grace = float(self.config.system.graceful_shutdown_timeout_secs)
            await self.exporter.shutdown(min(grace, _EXPORT_SHUTDOWN_MAX))
        self._close_unused_sockets()
        for sock in self.sockets.values():
            sock.close()
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
        code = uvloop.run(Supervisor(config, text).run())
    except OSError as exc:
        log(f"cannot start: {exc}")
        return 1
    log(f"stopped after {time.monotonic() - started:.1f}s")
    return code
