"""Run a real agent process (an SDK agent, an example agent, the scripted agent) for a test.

    with AgentProcess(["-m", "tests.support.scripted_agent", "-s", path, "--name", "a"], path) as agent:
        ...  # the socket listens here

The process is `[sys.executable, *argv]` from the repository root, with the root (for `tests.support`)
and `src` on PYTHONPATH. Its stderr and stdout are collected by a thread, so the pipe never fills.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.process import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
READY = re.compile(r"^agent \S+ listening on ")


@contextmanager
def socket_dir() -> Iterator[str]:
    """A fresh directory under /tmp for Unix sockets: pytest's tmp_path can exceed the ~100-byte
    sun_path limit."""
    path = tempfile.mkdtemp(prefix="agent-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def scripted_argv(socket_path: str, name: str, *extra: str) -> list[str]:
    """The AgentProcess argv of the scripted agent (tests/support/scripted_agent.py)."""
    return ["-m", "tests.support.scripted_agent", "-s", socket_path, "--name", name, *extra]


class AgentProcess:
    def __init__(self, argv: list[str], socket_path: str, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.socket_path = socket_path
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> Self:
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        proc = self.proc
        wait_for(lambda: self.ready() or proc.poll() is not None, timeout, what=f"agent {self.argv} to listen")
        if not self.ready():
            self.kill()
            raise AssertionError(f"agent {self.argv} exited with {proc.returncode}:\n{self.stderr_text()}")
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def ready(self) -> bool:
        """Whether the agent announced `agent NAME listening on PATH`."""
        with self._lock:
            return any(READY.match(line) for line in self._lines)

    def saw(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self._lines)

    def stderr_text(self) -> str:
        """What the agent wrote so far (stderr and stdout, interleaved)."""
        with self._lock:
            return "\n".join(self._lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join()

    def _join(self) -> None:
        # The pipe reaches EOF once the process is gone (unless it left children holding it).
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
