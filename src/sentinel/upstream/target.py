"""Runtime state of one upstream target, shared by the balancer, the pool and the health logic."""

from __future__ import annotations

from sentinel.config.model import SocketAddress

# Passive health (SPEC §4): this many consecutive connect failures or 5xx answers mark a target down
# until an active check or a later success brings it back.
PASSIVE_FAILURE_THRESHOLD = 5
# A target marked down only passively is tried again after this long, so that an upstream without
# active health checks is not lost for good.
PASSIVE_RETRY_SECS = 10.0


class TargetState:
    __slots__ = (
        "active_healthy",
        "address",
        "consecutive_failures",
        "current_weight",
        "host",
        "inflight",
        "key",
        "log_fields",
        "passive_down_until",
        "port",
        "span_fields",
        "upstream_id",
        "weight",
    )

    def __init__(self, upstream_id: str, address: SocketAddress, weight: int) -> None:
        self.upstream_id = upstream_id
        self.address = address
        self.host = address.host
        self.port = address.port
        self.key = str(address)
        self.weight = weight
        self.current_weight = 0  # smooth weighted round robin
        self.inflight = 0
        self.active_healthy = True  # set by the supervisor's active health checks
        self.consecutive_failures = 0
        self.passive_down_until = 0.0
        # What the CLIENT spans of this target share (the start of url.full, the attributes naming the
        # target), encoded once by the tracing code when first needed.
        self.span_fields: tuple[bytes, bytes] | None = None
        # The access log's upstream_addr field for this target (and the next key), made on its first line.
        self.log_fields = b""

    def healthy(self, now: float) -> bool:
        return self.active_healthy and self.passive_down_until <= now

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.passive_down_until = 0.0

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= PASSIVE_FAILURE_THRESHOLD:
            self.passive_down_until = now + PASSIVE_RETRY_SECS

    def health_label(self, now: float) -> str:
        return "healthy" if self.healthy(now) else "unhealthy"
