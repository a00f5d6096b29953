"""`backend "embedded"`: the supervisor runs the built-in trace viewer (`sentinel traces`) as a child process
and restarts it if it dies, so that a proxy with no Jaeger or Tempo still has somewhere to send spans.

If something already listens on the viewer's OTLP port (a `sentinel traces` started by hand, or by another
proxy), that one is used and nothing is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from urllib.parse import urlsplit

from sentinel.config.model import OtlpProtocol, TracingConfig

log = logging.getLogger("sentinel.supervisor")

_RESTART_FIRST = 0.5
_RESTART_MAX = 30.0


class EmbeddedViewer:
    def __init__(self, tracing: TracingConfig) -> None:
        backend = tracing.backend
        assert backend.viewer is not None
        self.viewer = backend.viewer
        endpoint = urlsplit(backend.endpoint)
        host = endpoint.hostname or "127.0.0.1"
        port = endpoint.port or (4318 if backend.protocol is OtlpProtocol.HTTP_PROTOBUF else 4317)
        self.otlp = (host, port)
        ui = self.viewer.ui
        shown = f"[{host}]" if ":" in host else host
        ui_host = f"[{ui.host}]" if ":" in ui.host else ui.host
        # The proxy sends to the endpoint's port; the other protocol gets its usual port next to the usual
        # one (other services' SDKs send there), else any free port.
        if backend.protocol is OtlpProtocol.HTTP_PROTOBUF:
            grpc, http = f"{shown}:{4317 if port == 4318 else 0}", f"{shown}:{port}"
        else:
            grpc, http = f"{shown}:{port}", f"{shown}:{4318 if port == 4317 else 0}"
        self.argv = [
            sys.executable,
            "-m",
            "sentinel.cli.main",
            "traces",
            "--grpc",
            grpc,
            "--http",
            http,
            "--ui",
            f"{ui_host}:{ui.port}",
            "--retention-hours",
            str(self.viewer.retention_hours),
            "--max-size-mb",
            str(self.viewer.max_size_mb),
        ]
        if self.viewer.db:
            self.argv += ["--db", self.viewer.db]
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        if await _listening(*self.otlp):
            log.info("trace viewer: using the one already listening on %s:%d", *self.otlp)
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = _RESTART_FIRST
        while not self.stopping:
            self.process = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.DEVNULL)
            code = await self.process.wait()
            if self.stopping:
                return
            log.warning("trace viewer exited with %s; restarting in %gs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX)

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _listening(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
