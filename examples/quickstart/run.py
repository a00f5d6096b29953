"""The quick start: the proxy, the demo backend, the auth and ratelimit agents and the built-in trace
viewer, all on loopback, from one command (`./dev run`). Ctrl-C stops everything.

    python examples/quickstart/run.py [--free-ports] [--dir DIR]

It runs examples/quickstart/sentinel.kdl (the proxy starts the trace viewer itself: `backend "embedded"`).
With --free-ports every port is picked at random (tests use it); --dir moves the sockets and the trace
database (default /tmp/sentinel-quickstart). Once everything answers it prints the URLs and the tracing
guide's curl commands, then `quick start ready`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOKEN = "quickstart-token"
_DEFAULT_DIR = "/tmp/sentinel-quickstart"
_PORTS = {"proxy": 8080, "metrics": 9090, "backend": 3000, "otlp": 4317, "ui": 16686}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    what: str,
    ready: Callable[[], bool],
    procs: list[subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
    timeout: float = 30,
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if stopping():
            raise KeyboardInterrupt  # Ctrl-C while starting: stop what started
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"quick start: {proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"quick start: {what} did not come up within {timeout:g}s")
        time.sleep(0.1)


def config_text(directory: str, ports: dict[str, int]) -> str:
    text = (HERE / "sentinel.kdl").read_text()
    for old, new in (
        (_DEFAULT_DIR, directory),
        ('"127.0.0.1:8080"', f'"127.0.0.1:{ports["proxy"]}"'),
        ('"127.0.0.1:9090"', f'"127.0.0.1:{ports["metrics"]}"'),
        ('"127.0.0.1:3000"', f'"127.0.0.1:{ports["backend"]}"'),
        ('"http://127.0.0.1:4317"', f'"http://127.0.0.1:{ports["otlp"]}"'),
        ('"127.0.0.1:16686"', f'"127.0.0.1:{ports["ui"]}"'),
    ):
        text = text.replace(old, new)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead of the usual ones")
    parser.add_argument("--dir", default=_DEFAULT_DIR, help="sockets, config and trace database (%(default)s)")
    args = parser.parse_args(argv)
    ports = {name: free_port() for name in _PORTS} if args.free_ports else dict(_PORTS)
    busy = [f"{name} ({port})" for name, port in ports.items() if answers(port)]
    if busy:
        print(f"quick start: ports already in use: {', '.join(busy)}; stop what uses them or pass --free-ports")
        return 1
    directory = Path(args.dir).resolve()  # the children run from the repository root
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.kdl"
    config.write_text(config_text(str(directory), ports))
    otlp = f"http://127.0.0.1:{ports['otlp']}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
    python = sys.executable
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([python, *argv], env=env, cwd=REPO, start_new_session=True)
        procs.append(proc)
        return proc

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        # The backend and the agents first, so that the proxy connects to the agents at once; their spans
        # wait in their exporters until the proxy has started the trace viewer.
        start(str(REPO / "examples" / "demo_backend" / "app.py"), "--listen", f"127.0.0.1:{ports['backend']}")
        start(
            str(REPO / "examples" / "agents" / "auth.py"),
            "-s",
            str(directory / "auth.sock"),
            "--token",
            f"{TOKEN}:demo-user",
            "--service-name",
            "auth-agent",
        )
        start(
            str(REPO / "examples" / "agents" / "ratelimit.py"),
            "-s",
            str(directory / "ratelimit.sock"),
            "--rate",
            "5",
            "--burst",
            "10",
            "--service-name",
            "ratelimit-agent",
        )
        wait_until(
            "the demo backend and the agents",
            lambda: (
                answers(ports["backend"])
                and (directory / "auth.sock").exists()
                and (directory / "ratelimit.sock").exists()
            ),
            procs,
            lambda: stopping,
        )
        start("-m", "sentinel.cli.main", "-c", str(config))
        wait_until(
            "the proxy and its trace viewer",
            lambda: answers(ports["proxy"]) and answers(ports["ui"]),
            procs,
            lambda: stopping,
        )
        proxy = f"http://127.0.0.1:{ports['proxy']}"
        auth = f"-H 'Authorization: Bearer {TOKEN}'"
        print(
            f"""
Sentinel quick start is running (Ctrl-C stops everything):

  proxy          {proxy}            (routes /api/* to the demo backend through the auth and ratelimit agents)
  trace viewer   http://127.0.0.1:{ports["ui"]}
  metrics        http://127.0.0.1:{ports["metrics"]}/metrics
  demo backend   http://127.0.0.1:{ports["backend"]}            (traced with the OpenTelemetry SDK)

Make some requests (the auth agent wants a bearer token; without it you get its 401):

  curl {auth} {proxy}/api/users
  curl {auth} {proxy}/api/products
  curl {auth} -X POST {proxy}/api/orders -d '{{"item": "widget"}}'
  curl -i {proxy}/api/users

Then open the trace viewer, pick service "sentinel", Find Traces, and open one: the proxy's spans, both
agents' calls with the agents' own spans under them, and the backend's spans, in one trace. The
trace_id of an access-log line opens its trace at http://127.0.0.1:{ports["ui"]}/trace/<trace_id>.

quick start ready
""",
            flush=True,
        )
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"quick start: {proc.args!r} exited with {proc.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass  # Ctrl-C while starting up
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if args.dir == _DEFAULT_DIR:
            shutil.rmtree(directory, ignore_errors=True)
    print("quick start stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
