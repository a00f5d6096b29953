"""Active health checks (SPEC §4), run once in the supervisor for all workers.

A target starts healthy. `unhealthy-threshold` consecutive failed checks mark it down and
`healthy-threshold` consecutive good ones bring it back; each change is reported through `notify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sentinel.config.model import Config, HealthCheckConfig, HealthCheckType, TargetConfig

Notify = Callable[[str, str, bool], None]  # (upstream id, target address, healthy)


async def probe(target: TargetConfig, check: HealthCheckConfig) -> bool:
    """One check: a TCP connect, or an HTTP GET that must answer `expected-status`."""
    host, port = target.address.host, target.address.port
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), check.timeout_secs)
    except (OSError, TimeoutError):
        return False
    try:
        if check.type is HealthCheckType.TCP:
            return True
        host_header = check.host or str(target.address)
        writer.write(
            f"GET {check.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: sentinel-health-check\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), check.timeout_secs)
        parts = line.split(b" ", 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == str(check.expected_status).encode()
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class HealthChecker:
    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._checks: dict[tuple[str, str], HealthCheckConfig] = {}
        self._healthy: dict[tuple[str, str], bool] = {}

    def state(self) -> dict[tuple[str, str], bool]:
        return dict(self._healthy)

    def configure(self, config: Config) -> None:
        """(Re)start checks for the config's targets; a target whose check is unchanged keeps its state."""
        wanted: dict[tuple[str, str], tuple[TargetConfig, HealthCheckConfig]] = {}
        for upstream in config.upstreams.values():
            if upstream.health_check is None:
                continue
            for target in upstream.targets:
                wanted[(upstream.id, str(target.address))] = (target, upstream.health_check)
        for key in list(self._tasks):
            if key not in wanted or wanted[key][1] != self._checks[key]:
                self._tasks.pop(key).cancel()
                self._checks.pop(key)
                if key not in wanted:
                    self._healthy.pop(key, None)
        loop = asyncio.get_running_loop()
        for key, (target, check) in wanted.items():
            if key not in self._tasks:
                self._checks[key] = check
                self._healthy.setdefault(key, True)
                self._tasks[key] = loop.create_task(self._run(key, target, check))

    async def _run(self, key: tuple[str, str], target: TargetConfig, check: HealthCheckConfig) -> None:
        successes = failures = 0
        while True:
            ok = await probe(target, check)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            healthy = self._healthy.get(key, True)
            if healthy and failures >= check.unhealthy_threshold:
                self._set(key, False)
            elif not healthy and successes >= check.healthy_threshold:
                self._set(key, True)
            await asyncio.sleep(check.interval_secs)

    def _set(self, key: tuple[str, str], healthy: bool) -> None:
        self._healthy[key] = healthy
        self.notify(key[0], key[1], healthy)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
