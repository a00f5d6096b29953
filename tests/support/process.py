"""Run a real `sentinel` process for a test and find out which ports it bound."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_LISTENER_LINE = re.compile(r"sentinel: listener (\S+) on (\[[^\]]+\]|[^\s:]+):(\d+)")
_METRICS_LINE = re.compile(r"sentinel: metrics on (\[[^\]]+\]|[^\s:]+):(\d+)")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> None:
    """Poll `condition` until it holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


class SentinelProcess:
    """A running `sentinel -c FILE`; its stderr is collected line by line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        full_env = {k: v for k, v in os.environ.items() if k != "SENTINEL_CONFIG"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli.main", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self.metrics_port = 0  # the metrics endpoint's port, once announced
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stdout_lines: list[str] = []
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            match = _LISTENER_LINE.search(line)
            if match:
                self.ports[match.group(1)] = int(match.group(3))
            match = _METRICS_LINE.search(line)
            if match:
                self.metrics_port = int(match.group(2))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.stdout_lines.append(line.rstrip("\n"))

    def log(self) -> str:
        """Everything it wrote: stderr, then stdout (the application log and, by default, the access log)."""
        with self._lock:
            return "\n".join([*self.lines, *self.stdout_lines])

    def saw(self, text: str) -> bool:
        """Whether `text` appeared on stderr or stdout (the application log goes to stdout by default)."""
        with self._lock:
            return any(text in line for line in self.lines) or any(text in line for line in self.stdout_lines)

    def wait_ready(self, listeners: int = 1, timeout: float = 30.0) -> None:
        """Wait until every listener is bound and a request to it is answered."""
        wait_for(lambda: len(self.ports) >= listeners or self.proc.poll() is not None, timeout, what="listeners")
        if self.proc.poll() is not None:
            raise AssertionError(f"sentinel exited with {self.proc.returncode}:\n{self.log()}")
        port = next(iter(self.ports.values()))

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                    return s.recv(16).startswith(b"HTTP/1.1")
            except OSError:
                return False

        wait_for(answers, timeout, what="the first answer")

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        workers = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        leftover = [pid for pid in workers if _alive(pid)]
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftover, f"workers {leftover} outlived their supervisor:\n{self.log()}"
        return self.proc.returncode

    def kill(self) -> None:
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def sentinel(
    tmp_path: Path, config_text: str, env: dict[str, str] | None = None, listeners: int = 1
) -> Iterator[SentinelProcess]:
    path = tmp_path / "sentinel.kdl"
    path.write_text(config_text)
    proc = SentinelProcess(path, env)
    try:
        proc.wait_ready(listeners)
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.stop()
