"""An upstream at run time: its targets' state, balancer and connection pools."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from sentinel.config.model import LoadBalancing, UpstreamConfig
from sentinel.upstream.balancer import Balancer, make_balancer
from sentinel.upstream.connection import TargetPool
from sentinel.upstream.target import TargetState

# Final: compiled, a C static rather than a lookup in the module's dict per call.
_monotonic: Final = time.monotonic
_CONSISTENT_HASH: Final = LoadBalancing.CONSISTENT_HASH


class Cluster:
    __slots__ = ("balancer", "config", "hash_header", "id", "pools", "targets", "uses_key")

    def __init__(
        self,
        config: UpstreamConfig,
        loop: asyncio.AbstractEventLoop,
        previous: dict[str, TargetState] | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        previous = previous or {}
        self.targets: list[TargetState] = []
        for t in config.targets:
            state = previous.get(str(t.address))
            if state is None:
                state = TargetState(config.id, t.address, t.weight)
            state.weight = t.weight
            self.targets.append(state)
        self.balancer: Balancer = make_balancer(config.load_balancing, self.targets)
        pool = config.connection_pool
        self.pools = {t.key: TargetPool(t, pool.max_idle, pool.idle_timeout_secs, loop) for t in self.targets}
        self.uses_key = config.load_balancing in (LoadBalancing.IP_HASH, LoadBalancing.CONSISTENT_HASH)
        header = config.hash_key.removeprefix("header:") if config.hash_key.startswith("header:") else None
        self.hash_header = header.encode() if header is not None else None

    def pick(
        self, client_ip: str, headers: dict[bytes, bytes], exclude: list[TargetState] | tuple[()] = ()
    ) -> TargetState | None:
        key = ""
        if self.uses_key:
            key = client_ip
            if self.hash_header is not None and self.config.load_balancing is _CONSISTENT_HASH:
                value = headers.get(self.hash_header)
                if value is not None:
                    key = value.decode("latin-1")
        return self.balancer.pick(_monotonic(), key, exclude)

    def set_health(self, target_key: str, healthy: bool) -> None:
        for t in self.targets:
            if t.key == target_key:
                t.active_healthy = healthy
                if healthy:
                    t.record_success()

    def sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close_all()
