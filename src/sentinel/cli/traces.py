"""`sentinel traces`: the built-in trace viewer as its own process (SPEC §9).

    sentinel traces [--grpc 127.0.0.1:4317] [--http 127.0.0.1:4318] [--ui 127.0.0.1:16686]
                    [--db PATH] [--retention-hours 24] [--max-size-mb 512]

Once listening it prints `sentinel traces: otlp grpc on HOST:PORT`, `... otlp http on ...` and
`... ui on ...` to stderr; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sentinel.config.addresses import AddressError, parse_socket_address
from sentinel.config.model import SocketAddress

DEFAULT_GRPC = "127.0.0.1:4317"
DEFAULT_HTTP = "127.0.0.1:4318"
DEFAULT_UI = "127.0.0.1:16686"


def default_db_path() -> Path:
    """Where traces are kept unless --db says otherwise: the XDG state directory."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sentinel" / "traces.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grpc", default=DEFAULT_GRPC, metavar="HOST:PORT", help="OTLP/gRPC receiver (%(default)s)")
    parser.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT", help="OTLP/HTTP receiver (%(default)s)")
    parser.add_argument("--ui", default=DEFAULT_UI, metavar="HOST:PORT", help="web UI and Jaeger API (%(default)s)")
    parser.add_argument("--db", default=None, metavar="PATH", help=f"SQLite file (default {default_db_path()})")
    parser.add_argument("--retention-hours", type=float, default=24.0, help="keep spans this long (%(default)s)")
    parser.add_argument("--max-size-mb", type=float, default=512.0, help="and at most this much data (%(default)s)")


def run_traces(args: argparse.Namespace) -> int:
    from sentinel.viewer.server import ViewerServer
    from sentinel.viewer.store import TraceStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        addresses = [_address(args.grpc, "--grpc"), _address(args.http, "--http"), _address(args.ui, "--ui")]
    except AddressError as exc:
        print(f"sentinel traces: {exc}", file=sys.stderr)
        return 2
    if args.retention_hours <= 0 or args.max_size_mb <= 0:
        print("sentinel traces: --retention-hours and --max-size-mb must be positive", file=sys.stderr)
        return 2
    db = Path(args.db) if args.db else default_db_path()
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        store = TraceStore(str(db), retention_secs=args.retention_hours * 3600, max_bytes=int(args.max_size_mb * 2**20))
    except OSError as exc:
        print(f"sentinel traces: cannot open {db}: {exc}", file=sys.stderr)
        return 1
    server = ViewerServer(store, *addresses)
    try:
        server.start()
    except OSError as exc:
        print(f"sentinel traces: {exc}", file=sys.stderr)
        server.stop()
        store.close()
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for name, (host, port) in server.bound.items():
        shown = f"[{host}]" if ":" in host else host
        print(f"sentinel traces: {name} on {shown}:{port}", file=sys.stderr, flush=True)
    print(f"sentinel traces: storing in {db}", file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    store.close()
    return 0


def _address(text: str, flag: str) -> SocketAddress:
    try:
        return parse_socket_address(text, allow_port_zero=True)
    except AddressError as exc:
        raise AddressError(f"{flag}: {exc}") from None
