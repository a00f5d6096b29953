"""The application log of SPEC §7: JSON or pretty, stdout or a file, trace ids on lines about a request,
reopened on SIGUSR1; and the access-log writer that never makes the event loop wait."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.process import sentinel, wait_for


def dead_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def logging_block(inner: str) -> str:
    return f"observability {{\n    logging {{\n{inner}    }}\n}}\n"


def test_json_lines_about_a_failed_request_carry_its_trace_id(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    config = proxy_config(
        dead_target(), extra=logging_block(f'        format "json"\n        access-log {{ file "{access}"; }}\n')
    )
    with sentinel(tmp_path, config) as proc:
        assert request(proc.port, path="/down").status == 502

        def warnings() -> list[dict[str, str]]:
            with proc._lock:
                out = list(proc.stdout_lines)
            return [e for e in map(json.loads, out) if e["level"] == "warn" and e["logger"] == "sentinel.proxy"]

        wait_for(lambda: bool(warnings()), what="the upstream failure in the application log")
        wait_for(lambda: '"/down"' in (access.read_text() if access.exists() else ""), what="the access-log line")
        with proc._lock:
            stdout = list(proc.stdout_lines)
    (warning,) = warnings()
    assert "upstream backend failed (connect_refused)" in warning["message"]
    assert list(warning)[:4] == ["timestamp", "level", "message", "logger"]
    (line,) = [json.loads(ln) for ln in access.read_text().splitlines() if '"/down"' in ln]
    assert warning["trace_id"] == line["trace_id"]
    assert warning["span_id"] == line["span_id"]
    for raw in stdout:  # every application-log line is JSON with the four keys
        entry = json.loads(raw)
        assert {"timestamp", "level", "message", "logger"} <= set(entry)


def test_pretty_file_log_is_reopened_on_sigusr1(tmp_path: Path) -> None:
    app = tmp_path / "logs" / "sentinel.log"  # the directory is created
    config = proxy_config(dead_target(), extra=logging_block(f'        format "pretty"\n        file "{app}"\n'))
    with sentinel(tmp_path, config) as proc:
        assert request(proc.port, path="/one").status == 502
        wait_for(lambda: app.exists() and "upstream backend failed" in app.read_text(), what="the first warning")
        first = app.read_text()
        os.rename(app, app.with_suffix(".old"))
        proc.signal(signal.SIGUSR1)
        wait_for(app.exists, what="the supervisor to reopen its log")
        # The worker reopens when its own copy of the signal arrives: fail requests until its warning
        # lands in the new file.

        def worker_writes_new_file() -> bool:
            assert request(proc.port, path="/two").status == 502
            return "upstream backend failed" in app.read_text()

        wait_for(worker_writes_new_file, interval=0.05, what="the worker to write to the new file")
    assert "listener http on 127.0.0.1:" in first
    line = next(ln for ln in first.splitlines() if "upstream backend failed" in ln)
    assert " WARN sentinel.proxy: upstream backend failed (connect_refused)" in line
    assert "trace_id=" in line


def test_level_filters_lines(tmp_path: Path) -> None:
    config = proxy_config(dead_target(), extra=logging_block('        level "error"\n'))
    with sentinel(tmp_path, config) as proc:
        assert request(proc.port, path="/x").status == 502
        assert request(proc.port, path="/health").status == 200
    assert not proc.saw("upstream backend failed")
    assert proc.saw("listener http on")  # on stderr, which does not depend on the level
