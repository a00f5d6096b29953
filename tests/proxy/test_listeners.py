"""Listener features: TLS (https) and the connection limit of `system { max-connections }`."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

from tests.support.client import RawClient, request
from tests.support.configs import proxy_config
from tests.support.process import SentinelProcess, sentinel, wait_for
from tests.support.upstream import UpstreamServer


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_listener_serves_tls(tmp_path: Path, upstream: UpstreamServer) -> None:
    cert, key = _self_signed(tmp_path)
    config = proxy_config(upstream.address).replace(
        'address "127.0.0.1:0"\n',
        f'address "127.0.0.1:0"\n        protocol "https"\n        tls {{\n            cert-file "{cert}"\n'
        f'            key-file "{key}"\n        }}\n',
    )
    path = tmp_path / "sentinel.kdl"
    path.write_text(config)
    # sentinel() probes readiness over plain HTTP, which TLS refuses; wait for the log line instead.
    proc = SentinelProcess(path)
    try:
        wait_for(lambda: bool(proc.ports) or proc.proc.poll() is not None, timeout=30, what="the listener")
        assert proc.ports, proc.log()
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with (
            socket.create_connection(("127.0.0.1", proc.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert upstream.requests[-1].header("x-forwarded-proto") == "https"
    finally:
        proc.stop()


def test_connections_over_max_connections_are_closed(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = proxy_config(upstream.address).replace("worker-threads 1", "worker-threads 1\n    max-connections 3")
    with sentinel(tmp_path, config) as proc:
        held = [RawClient(proc.port) for _ in range(3)]
        try:
            for client in held:  # make sure each is accepted and counted
                client.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                assert client.read_response().status == 200
            with RawClient(proc.port) as extra:
                assert extra.closed_by_peer()
        finally:
            for client in held:
                client.close()
        # Places are given back when connections close.
        assert request(proc.port, path="/health").status == 200
