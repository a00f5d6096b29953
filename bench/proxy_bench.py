"""Data-plane benchmark: wrk against the upstream directly, nginx as a proxy, and Sentinel, in one run.

    ./dev bench [--duration SECS] [--connections N]

Everything runs on this machine on 127.0.0.1: a fixed upstream (nginx answering a small body from
memory), nginx as a reverse proxy (1 worker, keep-alive to the upstream) and Sentinel (1 worker, then
`worker-threads 0`). Each is measured with many connections (throughput) and with one (latency).
Ratios are computed from numbers taken in the same run, so the machine's speed cancels out. For each
proxy the CPU its processes used per request (user + system, from /proc) is printed too: a cost figure
that drift in the machine's speed disturbs less than req/s.

Targets are measured in interleaved rounds (medians reported; every other round in reverse order),
because this machine's speed drifts: the same nginx measured 17k and 35k req/s a minute apart. The
costs of tracing and of the access log (--tracing, --observability) are then also measured A-B-A:
sentinel-1 runs before and after each feature run, and the feature is compared with the mean of its
two neighbours (--cycles N times, medians reported). With --pin, wrk runs on CPU 0 and the
servers under test (upstream, nginx, Sentinel with 1 worker) on CPU 1: each proxy then shares one core
with the upstream, which compares CPU cost per request; unpinned (the default) is the deployment-like
setup where the proxy competes with wrk and the upstream for two cores.

With --halt-poll NS, the guest kernel's cpuidle-haltpoll driver polls for up to NS nanoseconds before
halting an idle vCPU (restored afterwards; root, and a VM guest with that driver). On a VM whose
vCPUs halt at once (guest_halt_poll_ns=0), every wake-up of an idle vCPU is an exit to the
hypervisor costing tens of microseconds, and at one connection a request meets two to four of them:
the 1-connection latencies then measure the hypervisor as much as the proxies (docs/performance.md).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

NGINX_UPSTREAM = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ return 200 "hello from the upstream\\n"; }}
    }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

SENTINEL = """
system {{
    worker-threads {workers}
}}
listeners {{
    listener "http" {{
        address "127.0.0.1:{port}"
    }}
}}
routes {{
    route "api" {{
        matches {{ path-prefix "/"; }}
        upstream "backend"
{route_extra}    }}
}}
upstreams {{
    upstream "backend" {{
        target "127.0.0.1:{upstream}"
        connection-pool {{ max-idle 128; }}
    }}
}}
{extra}
"""


# The variants whose cost is reported against sentinel-1 (the same proxy with the feature off).
FEATURE_VARIANTS = ("sentinel-1-trace-0", "sentinel-1-trace-0.1", "sentinel-1-trace-1.0", "sentinel-1-logs-metrics")

# Tracing on, exporting to a local OTLP/gRPC sink; "0" is a configured tracer with every request unsampled.
TRACING = """
observability {{
    tracing {{
        backend "otlp" {{ endpoint "http://127.0.0.1:{sink}"; }}
        sampling-rate {rate}
    }}
}}
"""


# The access log (JSON, to a file) and the metrics endpoint, both on (SPEC §7, §8).
LOGS_AND_METRICS = """
observability {{
    logging {{
        access-log {{ file "{log}"; }}
    }}
    metrics {{ address "127.0.0.1:0"; }}
}}
"""


# One allow-everything agent (bench/allow_agent.py, the SDK) on the route (SPEC §5).
ONE_AGENT = """
agents {{
    agent "allow" {{
        unix-socket path="{socket}"
        events "request_headers"
    }}
}}
"""


@dataclass
class Result:
    name: str
    connections: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    # CPU time of the proxy's processes (supervisor and workers, user + system) per request, from
    # /proc: a cost figure that the machine's drift in req/s disturbs much less. 0: not measured.
    cpu_us: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def wait_socket(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {path} after {timeout}s")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


PIN_CLIENT: list[str] = []
PIN_SERVER: list[str] = []


def wrk(name: str, port: int, connections: int, duration: float, path: str = "/api/bench") -> Result:
    out = subprocess.run(
        [
            *PIN_CLIENT,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(_field(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_field(r"\s50%\s+(\S+)", out))
    p99 = _ms(_field(r"\s99%\s+(\S+)", out))
    errors = 0
    for socket_errors in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    requests = int(_field(r"(\d+) requests in", out))
    return Result(name, connections, rps, p50, p99, errors, requests)


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of a process and its children (the supervisor and its workers)."""
    total = 0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    for each in [str(pid), *children]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def measured(name: str, port: int, connections: int, duration: float, proc: subprocess.Popen[bytes] | None) -> Result:
    """wrk against one target, with the CPU its processes used per request when they are ours."""
    before = cpu_ticks(proc.pid) if proc is not None else 0
    result = wrk(name, port, connections, duration)
    if proc is not None and result.requests:
        result.cpu_us = (cpu_ticks(proc.pid) - before) * 1e6 / os.sysconf("SC_CLK_TCK") / result.requests
    return result


def soak(port: int, requests: int, connections: int) -> int:
    """Send at least `requests` requests (in 10 s wrk runs); returns how many were sent."""
    sent = 0
    while sent < requests:
        out = subprocess.run(
            [*PIN_CLIENT, "wrk", "-t1", f"-c{connections}", "-d10s", f"http://127.0.0.1:{port}/api/soak"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sent += int(_field(r"(\d+) requests in", out))
    return sent


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"unexpected wrk output (no {pattern!r}):\n{text}")
    return match.group(1)


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], stdout: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a server; its stdout goes to the file `stdout`, or nowhere."""
        with open(stdout, "wb") if stdout is not None else contextlib.nullcontext(subprocess.DEVNULL) as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def rss_of_children(pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    total = 0
    for child in out:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total = max(total, int(line.split()[1]) * 1024)
        except OSError:
            pass
    return total


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")


def read_halt_poll() -> int | None:
    try:
        return int(HALT_POLL.read_text())
    except OSError:
        return None


def set_halt_poll(ns: int) -> None:
    """Set guest_halt_poll_ns for this run; the value it had is written back at exit (atexit: also after
    an exception, Ctrl-C or SIGTERM, which main turns into SystemExit)."""
    try:
        driver = CPUIDLE_DRIVER.read_text().strip()
    except OSError:
        driver = ""
    before = read_halt_poll()
    if driver != "haltpoll" or before is None:
        raise SystemExit(f"--halt-poll: the cpuidle driver is {driver or 'unknown'!r}, not 'haltpoll' (a VM guest)")
    try:
        HALT_POLL.write_text(str(ns))
    except OSError as exc:
        raise SystemExit(f"--halt-poll: cannot write {HALT_POLL}: {exc} (run as root)") from exc

    def restore() -> None:
        try:
            HALT_POLL.write_text(str(before))
        except OSError as exc:
            print(f"warning: could not restore {HALT_POLL} to {before}: {exc}", file=sys.stderr)

    atexit.register(restore)


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument(
        "--soak-requests", type=int, default=1_000_000, help="requests sent to sentinel-1 before reading RSS (0: skip)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--cycles",
        type=int,
        default=5,
        help="A-B-A cycles for the feature costs (tracing, access log): sentinel-1 measured between each of them",
    )
    parser.add_argument(
        "--tracing", action="store_true", help="also run sentinel-1 with tracing at sampling 0, 0.1 and 1.0"
    )
    parser.add_argument(
        "--observability", action="store_true", help="also run sentinel-1 with the access log and metrics on"
    )
    parser.add_argument(
        "--agents", action="store_true", help="also run sentinel-1 with one allow-everything agent on the route"
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin wrk to CPU 0 and the servers to CPU 1 (CPU-efficiency comparison)"
    )
    parser.add_argument(
        "--halt-poll",
        type=non_negative,
        metavar="NS",
        help="set the guest's haltpoll guest_halt_poll_ns to NS for the run (VM guests; restored afterwards)",
    )
    parser.add_argument("--only", choices=["direct", "nginx", "bare", "sentinel-1", "sentinel-auto"], action="append")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: install the Debian package (./dev bench does)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PIN_CLIENT[:] = ["taskset", "-c", "0"]
        PIN_SERVER[:] = ["taskset", "-c", "1"]
    # SIGTERM and SIGHUP end the run like Ctrl-C does: servers stopped, settings restored.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if args.halt_poll is not None:
        set_halt_poll(args.halt_poll)
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    results: list[Result] = []
    notes: dict[str, object] = {}
    wanted = set(args.only or ["direct", "nginx", "bare", "sentinel-1", "sentinel-auto"])
    try:
        up_port = free_port()
        (work / "upstream.conf").write_text(NGINX_UPSTREAM.format(dir=work, port=up_port))
        procs.start([*PIN_SERVER, nginx, "-c", str(work / "upstream.conf"), "-p", str(work)])
        wait_port(up_port)

        targets: list[tuple[str, int, subprocess.Popen[bytes] | None]] = []
        if "direct" in wanted:
            targets.append(("direct", up_port, None))
        if "nginx" in wanted:
            port = free_port()
            (work / "proxy.conf").write_text(NGINX_PROXY.format(dir=work, port=port, upstream=up_port))
            targets.append(
                ("nginx", port, procs.start([*PIN_SERVER, nginx, "-c", str(work / "proxy.conf"), "-p", str(work)]))
            )
        if "bare" in wanted:
            # The ceiling for Python on this machine: uvloop + httptools and nothing else.
            port = free_port()
            bare = [*PIN_SERVER, sys.executable, str(REPO / "bench" / "bare_proxy.py"), str(port), str(up_port)]
            targets.append(("bare", port, procs.start(bare)))
        variants = [("sentinel-1", 1, ""), ("sentinel-auto", 0, "")]
        if args.tracing:
            sink_port = free_port()
            # The sink stands in for a collector on another machine: pinned, it runs with the client, not on
            # the proxy's core.
            sink = [*PIN_CLIENT, sys.executable, str(REPO / "bench" / "otlp_sink.py"), str(sink_port)]
            procs.start(sink, stdout=work / "sink.json")  # what it received, written when it stops
            wait_port(sink_port)
            variants += [
                (f"sentinel-1-trace-{rate}", 1, TRACING.format(rate=rate, sink=sink_port))
                for rate in ("0", "0.1", "1.0")
            ]
            wanted.update(name for name, _, _ in variants)
        if args.observability:
            variants.append(("sentinel-1-logs-metrics", 1, LOGS_AND_METRICS.format(log=work / "access.log")))
            wanted.add("sentinel-1-logs-metrics")
        agent_socket = work / "allow.sock"
        if args.agents:
            agent = [*PIN_SERVER, sys.executable, str(REPO / "bench" / "allow_agent.py"), "-s", str(agent_socket)]
            procs.start(agent)
            wait_socket(agent_socket)
            variants.append(("sentinel-1-agent", 1, ONE_AGENT.format(socket=agent_socket)))
            wanted.add("sentinel-1-agent")
        for name, workers, extra in variants:
            if name not in wanted:
                continue
            port = free_port()
            config = work / f"{name}.kdl"
            route_extra = '        agents "allow"\n' if name == "sentinel-1-agent" else ""
            config.write_text(
                SENTINEL.format(workers=workers, port=port, upstream=up_port, extra=extra, route_extra=route_extra)
            )
            pin = PIN_SERVER if workers == 1 else []
            sentinel = [*pin, sys.executable, "-m", "sentinel.cli.main", "-c", str(config)]
            targets.append((name, port, procs.start(sentinel)))
        for name, port, _ in targets:
            wait_port(port)
            wrk(name, port, args.connections, 2)  # warm-up: pools filled, code paths hot

        # Rounds interleave the targets, so that drift in the machine's speed (seen here: the same
        # nginx measured 17k and 35k req/s a minute apart) hits all of them alike; medians are reported.
        # Every other round runs the targets in reverse order, so that a steady drift does not always
        # favour the ones measured first.
        rounds: list[dict[tuple[str, int], Result]] = []
        for i in range(args.rounds):
            this: dict[tuple[str, int], Result] = {}
            for name, port, proc in targets if i % 2 == 0 else reversed(targets):
                this[(name, args.connections)] = measured(name, port, args.connections, args.duration, proc)
                this[(name, 1)] = wrk(name, port, 1, max(args.duration / 2, 2))
            rounds.append(this)
        for key in rounds[0]:
            ordered = sorted((r[key] for r in rounds), key=lambda r: r.requests_per_sec)
            median = ordered[len(ordered) // 2]
            cpu = sorted(r.cpu_us for r in ordered)
            median.cpu_us = cpu[len(cpu) // 2]  # the median of its own, not that of the median-req/s round
            results.append(median)
        notes["rounds"] = args.rounds
        for name, port, proc in targets:
            if proc is not None and name.startswith("sentinel"):
                notes[f"{name}_worker_rss_mib"] = round(rss_of_children(proc.pid) / 2**20, 1)
                if name == "sentinel-1" and args.soak_requests:
                    served = soak(port, args.soak_requests, args.connections)
                    notes[f"{name}_worker_rss_mib_after_{served}_requests"] = round(
                        rss_of_children(proc.pid) / 2**20, 1
                    )
        features = [(name, port) for name, port, _ in targets if name in FEATURE_VARIANTS]
        base_port = next((port for name, port, _ in targets if name == "sentinel-1"), None)
        if features and base_port is not None and args.cycles > 0:
            costs, errors = feature_costs(base_port, features, args.connections, args.duration, args.cycles)
            for name, values in costs.items():
                notes[f"{name} A-B-A costs %"] = [round(x * 100, 1) for x in values]
                notes[f"{name} A-B-A median cost %"] = round(sorted(values)[len(values) // 2] * 100, 1)
            if errors:
                notes["A-B-A phase: wrk errors (the costs above are suspect)"] = errors
        for name in ("bare", "sentinel-1"):
            per_round = [
                r[(name, args.connections)].requests_per_sec / r[("nginx", args.connections)].requests_per_sec
                for r in rounds
                if (name, args.connections) in r and ("nginx", args.connections) in r
            ]
            if per_round:
                notes[f"{name}/nginx per-round ratios"] = [round(x, 2) for x in per_round]
            # Added p50 at one connection, target against nginx, each round against its own direct run.
            added = [
                (r[(name, 1)].p50_ms - r[("direct", 1)].p50_ms) / (r[("nginx", 1)].p50_ms - r[("direct", 1)].p50_ms)
                for r in rounds
                if all(key in r for key in ((name, 1), ("nginx", 1), ("direct", 1)))
                and r[("nginx", 1)].p50_ms > r[("direct", 1)].p50_ms
            ]
            if added:
                notes[f"{name}/nginx per-round added-latency ratios"] = [round(x, 2) for x in added]
        # The features' costs against sentinel-1, paired within each round (the two were measured minutes
        # apart at most, where the medians can come from different rounds).
        for name in FEATURE_VARIANTS:
            paired = [
                1 - r[(name, args.connections)].requests_per_sec / r[("sentinel-1", args.connections)].requests_per_sec
                for r in rounds
                if (name, args.connections) in r and ("sentinel-1", args.connections) in r
            ]
            if paired:
                notes[f"{name} per-round costs %"] = [round(x * 100, 1) for x in paired]
                notes[f"{name} median per-round cost %"] = round(sorted(paired)[len(paired) // 2] * 100, 1)
        kept = [
            r[("sentinel-1-agent", args.connections)].requests_per_sec
            / r[("sentinel-1", args.connections)].requests_per_sec
            for r in rounds
            if ("sentinel-1-agent", args.connections) in r and ("sentinel-1", args.connections) in r
        ]
        if kept:
            notes["sentinel-1-agent/sentinel-1 per-round ratios"] = [round(x, 2) for x in kept]
        if args.agents:
            out = subprocess.run(
                [*PIN_CLIENT, sys.executable, str(REPO / "bench" / "agent_roundtrip.py"), str(agent_socket)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            notes["agent round trip (wire, no proxy)"] = out.strip()
    finally:
        procs.stop_all()  # the proxies first (they flush their spans), the sink after them
        with contextlib.suppress(OSError, ValueError):
            notes["OTLP sink received"] = json.loads((work / "sink.json").read_text())
        shutil.rmtree(work, ignore_errors=True)
    notes["guest_halt_poll_ns"] = args.halt_poll if args.halt_poll is not None else read_halt_poll()

    report(results, notes, args)
    return 0


def report(results: list[Result], notes: dict[str, object], args: argparse.Namespace) -> None:
    print(f"\n{'target':<25}{'conns':>6}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'CPU us/req':>12}")
    for r in results:
        cpu = f"{r.cpu_us:>12.1f}" if r.cpu_us else f"{'':>12}"
        print(
            f"{r.name:<25}{r.connections:>6}{r.requests_per_sec:>12.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}{r.errors:>8}{cpu}"
        )
    by = {(r.name, r.connections): r for r in results}
    nginx_many, nginx_one = by.get(("nginx", args.connections)), by.get(("nginx", 1))
    direct_one = by.get(("direct", 1))
    print()
    for name in ("bare", "sentinel-1", "sentinel-auto"):
        many, one = by.get((name, args.connections)), by.get((name, 1))
        if many and nginx_many:
            print(
                f"{name}/nginx throughput ratio ({args.connections} conns): "
                f"{many.requests_per_sec / nginx_many.requests_per_sec:.2f}x"
            )
        if one and nginx_one and direct_one:
            added_sentinel = one.p50_ms - direct_one.p50_ms
            added_nginx = nginx_one.p50_ms - direct_one.p50_ms
            print(
                f"{name} p50 added latency at 1 conn: {added_sentinel * 1000:.0f} us "
                f"(nginx adds {added_nginx * 1000:.0f} us; ratio {added_sentinel / max(added_nginx, 1e-6):.2f}x)"
            )
    base = by.get(("sentinel-1", args.connections))
    for rate in ("0", "0.1", "1.0"):
        traced = by.get((f"sentinel-1-trace-{rate}", args.connections))
        if base and traced:
            cost = 1 - traced.requests_per_sec / base.requests_per_sec
            print(
                f"tracing at sampling {rate} costs {cost * 100:.1f}% of req/s against tracing off"
                + _paired(notes, f"sentinel-1-trace-{rate}")
                + _cpu_cost(base, traced)
            )
    with_agent = by.get(("sentinel-1-agent", args.connections))
    if base and with_agent:
        kept = with_agent.requests_per_sec / base.requests_per_sec
        print(f"one allow agent keeps {kept * 100:.1f}% of req/s against the same route without agents")
    agent_one, base_one = by.get(("sentinel-1-agent", 1)), by.get(("sentinel-1", 1))
    if agent_one and base_one:
        print(f"one allow agent adds {(agent_one.p50_ms - base_one.p50_ms) * 1000:.0f} us to p50 at 1 conn")
    observed = by.get(("sentinel-1-logs-metrics", args.connections))
    if base and observed:
        cost = 1 - observed.requests_per_sec / base.requests_per_sec
        print(
            f"access log + metrics cost {cost * 100:.1f}% of req/s against both off"
            + _paired(notes, "sentinel-1-logs-metrics")
            + _cpu_cost(base, observed)
        )
    for key, value in notes.items():
        print(f"{key}: {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"proxy-{stamp}.json"
    out.write_text(
        json.dumps({"machine": machine(), "results": [asdict(r) for r in results], "notes": notes}, indent=2)
    )
    print(f"\nsaved {out.relative_to(REPO)}")


def feature_costs(
    base_port: int, features: list[tuple[str, int]], connections: int, duration: float, cycles: int
) -> tuple[dict[str, list[float]], int]:
    """Each feature's cost against sentinel-1, measured A-B-A: sentinel-1 runs before and after every
    feature run, and the feature's req/s is compared with the mean of those two, which cancels a drift
    that is steady over the ~2 x `duration` seconds between them. The order of the features alternates
    between cycles. Also returns the number of wrk errors (socket errors, non-2xx answers) seen."""
    costs: dict[str, list[float]] = {name: [] for name, _ in features}
    first = wrk("sentinel-1", base_port, connections, duration)
    before, errors = first.requests_per_sec, first.errors
    for cycle in range(cycles):
        for name, port in features if cycle % 2 == 0 else features[::-1]:
            with_feature = wrk(name, port, connections, duration)
            after = wrk("sentinel-1", base_port, connections, duration)
            costs[name].append(1 - with_feature.requests_per_sec / ((before + after.requests_per_sec) / 2))
            before = after.requests_per_sec
            errors += with_feature.errors + after.errors
    return costs, errors


def _paired(notes: dict[str, object], name: str) -> str:
    aba = notes.get(f"{name} A-B-A median cost %")
    median = notes.get(f"{name} median per-round cost %")
    parts = []
    if aba is not None:
        parts.append(f"A-B-A median {aba}%")
    if median is not None:
        parts.append(f"paired per round, median {median}%")
    return f" ({'; '.join(parts)})" if parts else ""


def _cpu_cost(base: Result, other: Result) -> str:
    """The same cost from CPU per request: what a CPU-bound proxy loses in req/s, 1 - base/other."""
    if not base.cpu_us or not other.cpu_us:
        return ""
    return (
        f" (by CPU per request: {base.cpu_us:.1f} -> {other.cpu_us:.1f} us, "
        f"{(1 - base.cpu_us / other.cpu_us) * 100:.1f}%)"
    )


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "pinned": bool(PIN_SERVER)}


if __name__ == "__main__":
    raise SystemExit(main())
