"""`sentinel validate`: the schema check of `sentinel test`, then live checks of what the config points at.

Live problems are warnings, not errors: the proxy starts without its upstreams, agents or trace
collector and copes when they come up (SPEC §4, §5, §6.5), so a down peer must not fail a deploy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from sentinel.config import DEFAULT_SOURCE, Config, ConfigError, load_config_file, load_default_config


@dataclass(frozen=True, slots=True)
class Check:
    level: str  # "ok" | "warning" | "error"
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.level:<8}{self.subject}: {self.detail}"


def run_validate(path: str | None, *, skip_network: bool, timeout: float) -> int:
    shown = path if path is not None else DEFAULT_SOURCE
    try:
        config = load_config_file(path) if path is not None else load_default_config()
    except ConfigError as exc:
        for issue in exc.issues:
            print(Check("error", "config", str(issue)))
        print(f"sentinel: configuration file {shown} is invalid", file=sys.stderr)
        return 1
    print(Check("ok", "config", f"{shown} is valid"))
    if skip_network:
        print(Check("ok", "live checks", "skipped (--skip-network)"))
        return 0
    checks = asyncio.run(live_checks(config, timeout))
    for check in checks:
        print(check)
    return 1 if any(c.level == "error" for c in checks) else 0


async def live_checks(config: Config, timeout: float) -> list[Check]:
    jobs: list[asyncio.Task[Check]] = []
    for upstream in config.upstreams.values():
        for target in upstream.targets:
            subject = f'upstream "{upstream.id}" target {target.address}'
            jobs.append(asyncio.create_task(_tcp_check(subject, target.address.host, target.address.port, timeout)))
    for agent in config.agents.values():
        jobs.append(asyncio.create_task(_agent_check(agent.id, agent.socket_path, timeout)))
    tracing = config.observability.tracing
    if tracing is not None and tracing.enabled:
        url = urlsplit(tracing.backend.endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        subject = f"trace backend {tracing.backend.kind.value} {tracing.backend.endpoint}"
        jobs.append(asyncio.create_task(_tcp_check(subject, url.hostname or "localhost", port, timeout)))
    return [await job for job in jobs]


async def _tcp_check(subject: str, host: str, port: int, timeout: float) -> Check:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return Check("warning", subject, f"no answer within {timeout:g}s")
    except socket.gaierror as exc:
        return Check("warning", subject, f"cannot resolve {host}: {exc.strerror}")
    except OSError as exc:
        return Check("warning", subject, f"unreachable: {exc.strerror or exc}")
    writer.close()
    return Check("ok", subject, "reachable")


async def _agent_check(agent_id: str, path: str, timeout: float) -> Check:
    subject = f'agent "{agent_id}" {path}'
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return Check("warning", subject, "socket does not exist yet (the proxy reconnects when the agent starts)")
    except OSError as exc:
        return Check("warning", subject, f"cannot stat: {exc.strerror}")
    if not stat.S_ISSOCK(mode):
        return Check("error", subject, "exists but is not a Unix socket")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, TimeoutError) as exc:
        return Check("warning", subject, f"not accepting connections: {exc}")
    writer.close()
    return Check("ok", subject, "accepting connections")
