"""Process model (SPEC §1): workers, reload under load, crash recovery, graceful drain, flat memory."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.process import rss, sentinel, wait_for
from tests.support.upstream import UpstreamServer


class Load:
    """Clients sending requests in a loop, each on a fresh connection, counting every failure."""

    def __init__(self, port: int, clients: int = 4, path: str = "/load") -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test forgets to stop us
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                resp = request(self.port, path=self.path)
                ok = resp.status == 200
                detail = f"status {resp.status}"
            except OSError as exc:
                ok, detail = False, repr(exc)
            with self._lock:
                if ok:
                    self.ok += 1
                else:
                    self.failures.append(detail)

    def wait_for_more(self, count: int) -> None:
        start = self.ok
        wait_for(lambda: self.ok >= start + count, timeout=30, what=f"{count} more answered requests")


def _config(upstream: UpstreamServer, workers: int, marker: str = "one", limits: str = "") -> str:
    return proxy_config(upstream.address, workers=workers, limits=limits).replace(
        'set "x-policy" "on"', f'set "x-policy" "{marker}"'
    )


def test_workers_share_the_port_and_both_serve(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream, workers=2)) as proc:
        assert len(proc.worker_pids()) == 2
        pids = set()
        for _ in range(200):
            pids.add(request(proc.port, path="/status").json()["instance_id"])
            if len(pids) == 2:
                break
        assert len(pids) == 2


def test_reload_under_load_fails_no_request(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream, workers=2)) as proc:
        old = set(proc.worker_pids())
        with Load(proc.port) as load:
            load.wait_for_more(50)
            (tmp_path / "sentinel.kdl").write_text(_config(upstream, workers=2, marker="two"))
            proc.signal(signal.SIGHUP)
            wait_for(lambda: proc.saw("reloaded"), timeout=30, what="the reload")
            wait_for(lambda: not (old & set(proc.worker_pids())), timeout=30, what="old workers to exit")
            load.wait_for_more(50)
        assert load.failures == []
        assert upstream.requests[-1].header("x-policy") == "two"


def test_bad_config_on_reload_keeps_the_old_one(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream, workers=1)) as proc:
        pids = proc.worker_pids()
        (tmp_path / "sentinel.kdl").write_text("listeners {\n}\n")
        proc.signal(signal.SIGHUP)
        wait_for(lambda: proc.saw("reload failed"), what="the reload to be refused")
        assert proc.saw("at least one listener is needed")
        assert proc.worker_pids() == pids
        assert request(proc.port, path="/x").status == 200


def test_killed_worker_is_replaced_while_requests_keep_being_served(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream, workers=2)) as proc:
        victim = proc.worker_pids()[0]
        with Load(proc.port) as load:
            load.wait_for_more(20)
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: victim not in proc.worker_pids() and len(proc.worker_pids()) == 2, what="a replacement worker"
            )
            load.wait_for_more(50)
        # Requests in flight on the killed worker fail (their connection dies); new ones never do.
        assert len(load.failures) <= 4, load.failures
        assert proc.saw("exited with -9; restarting")


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, upstream: UpstreamServer) -> None:
    with sentinel(tmp_path, _config(upstream, workers=1)) as proc:
        with RawClient(proc.port, timeout=30) as client:
            client.send(b"GET /slow/1 HTTP/1.1\r\nHost: a\r\n\r\n")
            wait_for(lambda: any(r.target == "/slow/1" for r in upstream.requests), what="the request upstream")
            proc.signal(signal.SIGTERM)
            resp = client.read_response()
            assert resp.status == 200
            assert resp.header("connection") == "close"
        assert proc.proc.wait(30) == 0
        # New connections are refused once the listeners are gone.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", proc.port)) != 0


def test_streamed_upload_keeps_memory_flat(tmp_path: Path, upstream: UpstreamServer) -> None:
    size = 1 << 30  # 1 GiB
    limits = "limits {\n    max-body-size 2000000000\n}\n"
    with sentinel(tmp_path, _config(upstream, workers=1, limits=limits)) as proc:
        (worker,) = proc.worker_pids()
        before = rss(worker)
        peak = before
        with RawClient(proc.port, timeout=120) as client:
            client.send(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"\0" * (1 << 20)
            for i in range(size // len(block)):
                client.send(block)
                if i % 64 == 0:
                    peak = max(peak, rss(worker))
            resp = client.read_response()
        assert resp.body == str(size).encode()
        assert peak - before < 64 * 1024 * 1024, f"worker RSS grew from {before} to {peak}"
