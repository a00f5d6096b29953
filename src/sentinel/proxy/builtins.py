"""Builtin handlers (SPEC §3): health, status, metrics, upstreams, not-found.

Each returns (status, content type, body); the listener protocol adds the common headers
(X-Request-Id, X-Correlation-Id, Cache-Control).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sentinel import __version__
from sentinel.config.model import BuiltinHandler, Config
from sentinel.logging.timestamps import rfc3339_now

JSON = b"application/json; charset=utf-8"
ERROR_JSON = b"application/json"
PROMETHEUS_TEXT = b"text/plain; version=0.0.4; charset=utf-8"


def format_uptime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}d {hours}h {minutes}m {secs}s"


@dataclass
class InstanceInfo:
    """Facts about this running proxy that builtin handlers report."""

    started: float = field(default_factory=time.time)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


@dataclass(frozen=True, slots=True)
class BuiltinResponse:
    status: int
    content_type: bytes
    body: bytes


TargetHealth = Callable[[str, str], str]  # (upstream id, target address) -> "healthy" | "unhealthy" | "unknown"
Scrape = Callable[[str], Awaitable[tuple[str, bytes]]]  # Accept header -> (content type, exposition)


class Builtins:
    def __init__(
        self,
        config: Config,
        info: InstanceInfo,
        target_health: TargetHealth | None = None,
        scrape: Scrape | None = None,
    ) -> None:
        """`scrape` answers the `metrics` handler with every worker's numbers (the supervisor adds them up);
        without it the handler answers the two families that are always true."""
        self.scrape = scrape
        self._config = config
        self._info = info
        self._target_health = target_health or (lambda _u, _t: "unknown")
        self._handlers: dict[BuiltinHandler, Callable[[str], BuiltinResponse]] = {
            BuiltinHandler.HEALTH: self.health,
            BuiltinHandler.STATUS: self.status,
            BuiltinHandler.METRICS: self.metrics,
            BuiltinHandler.UPSTREAMS: self.upstreams,
            BuiltinHandler.NOT_FOUND: self.not_found,
        }

    def handle(self, handler: BuiltinHandler, request_id: str) -> BuiltinResponse:
        return self._handlers[handler](request_id)

    def health(self, _request_id: str) -> BuiltinResponse:
        body = json.dumps({"status": "healthy", "timestamp": rfc3339_now()}, separators=(",", ":"))
        return BuiltinResponse(200, JSON, body.encode())

    def status(self, _request_id: str) -> BuiltinResponse:
        uptime = int(time.time() - self._info.started)
        body = {
            "status": "ok",
            "version": __version__,
            "uptime": format_uptime(uptime),
            "uptime_secs": uptime,
            "instance_id": self._info.instance_id,
            "timestamp": rfc3339_now(),
        }
        return BuiltinResponse(200, JSON, json.dumps(body, indent=2).encode())

    def metrics(self, _request_id: str) -> BuiltinResponse:
        # Only used without a supervisor to ask (a worker run on its own): the families that are always true.
        text = (
            "# HELP sentinel_up Whether the proxy is up.\n# TYPE sentinel_up gauge\nsentinel_up 1\n"
            "# HELP sentinel_build_info Build information.\n# TYPE sentinel_build_info gauge\n"
            f'sentinel_build_info{{version="{__version__}"}} 1\n'
        )
        return BuiltinResponse(200, PROMETHEUS_TEXT, text.encode())

    def upstreams(self, _request_id: str) -> BuiltinResponse:
        body = {
            "upstreams": [
                {
                    "id": u.id,
                    "load_balancing": u.load_balancing.value,
                    "targets": [
                        {
                            "address": str(t.address),
                            "weight": t.weight,
                            "status": self._target_health(u.id, str(t.address)),
                        }
                        for t in u.targets
                    ],
                }
                for u in self._config.upstreams.values()
            ]
        }
        return BuiltinResponse(200, JSON, json.dumps(body, separators=(",", ":")).encode())

    def not_found(self, request_id: str) -> BuiltinResponse:
        body = {
            "error": "Not Found",
            "status": 404,
            "message": "no resource at this path",
            "request_id": request_id,
            "timestamp": rfc3339_now(),
        }
        return BuiltinResponse(404, JSON, json.dumps(body, separators=(",", ":")).encode())
