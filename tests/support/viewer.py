"""Run `sentinel traces` (the built-in trace viewer) on free ports for a test."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.process import wait_for

_FREE_PORTS = ("--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ui", "127.0.0.1:0")
_LINE = re.compile(r"sentinel traces: (otlp grpc|otlp http|ui) on (\S+):(\d+)")


class ViewerProcess:
    """A running `sentinel traces`; `ports` maps "otlp grpc", "otlp http" and "ui" to what it bound."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli.main", "traces", "--db", str(db), *_FREE_PORTS],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ports: dict[str, int] = {}
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: len(self.ports) == 3 or self.proc.poll() is not None, 30, what="`sentinel traces` to listen")
        assert len(self.ports) == 3, f"sentinel traces did not start:\n{self.log()}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LINE.search(line)
            if match:
                self.ports[match.group(1)] = int(match.group(3))

    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ui']}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return http("GET", self.ports["ui"], path)

    def api(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def span_count(self, trace_id: str) -> int:
        status, _, body = self.get(f"/api/traces/{trace_id}")
        return len(json.loads(body)["data"][0]["spans"]) if status == 200 else 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@contextmanager
def viewer_process(db: Path) -> Iterator[ViewerProcess]:
    """A viewer for the duration of a test; it must exit 0 on SIGTERM."""
    viewer = ViewerProcess(db)
    try:
        yield viewer
    finally:
        code = viewer.stop()
    assert code == 0, f"sentinel traces exited with {code}:\n{viewer.log()}"


def http(
    method: str, port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request; the status, lower-case headers and body, whatever the status."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
