"""The `sentinel` command as a user runs it: a real subprocess, exit codes and messages (SPEC §1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel import __version__
from sentinel.compiled import status as compiled_status
from tests.conftest import EXAMPLES

SEEDS = [EXAMPLES / "jaeger" / "sentinel.kdl", EXAMPLES / "tempo" / "sentinel.kdl"]


def sentinel(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SENTINEL_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("seed", SEEDS, ids=["jaeger", "tempo"])
@pytest.mark.parametrize("form", [["test", "-c"], ["-t", "-c"], ["test", "--config"], ["-t", "--config"]])
def test_seed_configs_test_successful(seed: Path, form: list[str]) -> None:
    result = sentinel(*form, str(seed))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sentinel: configuration file {seed} test is successful\n"


def test_config_from_environment() -> None:
    result = sentinel("test", env={"SENTINEL_CONFIG": str(SEEDS[0])})
    assert result.returncode == 0
    assert str(SEEDS[0]) in result.stdout


def test_embedded_default_config_tests_successful() -> None:
    result = sentinel("test")
    assert result.returncode == 0
    assert result.stdout == "sentinel: configuration file <default> test is successful\n"


def test_bad_config_exits_1_with_every_error_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kdl"
    bad.write_text(
        'listeners {\n    listener "http" { address "0.0.0.0:8080"; }\n}\n'
        'system {\n    trace-id-format "snowflake"\n    worker-threads -2\n}\n'
    )
    result = sentinel("test", "-c", str(bad))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"sentinel: {bad}:5:5: system > trace-id-format:")
    assert lines[1].startswith(f"sentinel: {bad}:6:5: system > worker-threads:")
    assert lines[-1] == f"sentinel: configuration file {bad} test failed"
    assert result.stdout == ""


def test_missing_config_path_is_an_error_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.kdl"
    for args in (["test", "-c", str(missing)], ["-c", str(missing)], ["run", "-c", str(missing)]):
        result = sentinel(*args)
        assert result.returncode == 1, args
        assert f"{missing}: configuration file not found" in result.stderr
        assert not missing.exists()


def test_version() -> None:
    result = sentinel("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sentinel {__version__} (request path {compiled_status()})"


def test_validate_skip_network() -> None:
    result = sentinel("validate", "-c", str(SEEDS[1]), "--skip-network")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"ok      config: {SEEDS[1]} is valid",
        "ok      live checks: skipped (--skip-network)",
    ]


def test_validate_live_checks_report_each_peer(tmp_path: Path) -> None:
    with socket.socket() as up, socket.socket() as down:
        up.bind(("127.0.0.1", 0))
        up.listen()
        down.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        up_port, down_port = up.getsockname()[1], down.getsockname()[1]
        agent_socket = tmp_path / "a.sock"
        config = tmp_path / "c.kdl"
        config.write_text(
            'listeners {\n    listener "http" { address "127.0.0.1:0"; }\n}\n'
            'routes {\n    route "r" { upstream "u"; agents "a"; }\n}\n'
            f'upstreams {{\n    upstream "u" {{\n        target "127.0.0.1:{up_port}"\n'
            f'        target "127.0.0.1:{down_port}"\n    }}\n}}\n'
            f'agents {{\n    agent "a" {{ unix-socket path="{agent_socket}"; }}\n}}\n'
        )
        result = sentinel("validate", "-c", str(config), "--timeout", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[0] == f"ok      config: {config} is valid"
    assert f'ok      upstream "u" target 127.0.0.1:{up_port}: reachable' in out
    assert any(line.startswith(f'warning upstream "u" target 127.0.0.1:{down_port}: unreachable') for line in out)
    assert any(line.startswith(f'warning agent "a" {agent_socket}: socket does not exist') for line in out)


def test_validate_invalid_config_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kdl"
    bad.write_text("listeners {\n}\n")
    result = sentinel("validate", "-c", str(bad), "--skip-network")
    assert result.returncode == 1
    assert result.stdout.startswith(f"error   config: {bad}:1:")


def test_unknown_command_is_a_usage_error() -> None:
    result = sentinel("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_run_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "run.kdl"
    config.write_text(
        'listeners {\n    listener "http" { address "127.0.0.1:0"; }\n}\n'
        'routes {\n    route "health" { matches { path "/health"; }; builtin-handler "health"; }\n}\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli.main", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the listener is bound, or EOF if it died
        assert line.startswith("sentinel: listener http on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'"status":"healthy"' in response
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
