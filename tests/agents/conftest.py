"""Real agent processes on real Unix sockets, and configs that attach them to a proxied route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import AgentProcess, scripted_argv, socket_dir
from tests.support.process import SentinelProcess, wait_for


@dataclass
class AgentSpec:
    """One `agent "NAME" { ... }` block."""

    name: str
    socket: str
    events: tuple[str, ...] = ("request_headers",)
    timeout_ms: int = 2000
    failure_mode: str = "open"
    protocol: str = "v2"
    max_concurrent: int = 100
    extra: str = ""

    def kdl(self) -> str:
        events = " ".join(f'"{e}"' for e in self.events)
        return (
            f'    agent "{self.name}" {{\n        unix-socket path="{self.socket}"\n        events {events}\n'
            f'        timeout-ms {self.timeout_ms}\n        failure-mode "{self.failure_mode}"\n'
            f'        protocol-version "{self.protocol}"\n        max-concurrent-calls {self.max_concurrent}\n'
            f"{self.extra}    }}\n"
        )


@dataclass
class Setup:
    """The pieces of a config with agents on the `api` route."""

    upstream: str
    agents: list[AgentSpec]
    route_agents: list[str] = field(default_factory=list)
    route_extra: str = ""
    extra: str = ""  # more top-level blocks (filters, observability)

    def kdl(self) -> str:
        names = " ".join(f'"{a}"' for a in self.route_agents)
        agents_line = f"        agents {names}\n" if self.route_agents else ""
        return (
            "system {\n    worker-threads 1\n}\n"
            'listeners {\n    listener "http" {\n        address "127.0.0.1:0"\n    }\n}\n'
            "routes {\n"
            '    route "api" {\n        matches { path-prefix "/"; }\n        upstream "backend"\n'
            f"{agents_line}{self.route_extra}    }}\n"
            '    route "health" {\n        priority "critical"\n        matches { path "/health"; }\n'
            '        builtin-handler "health"\n    }\n'
            "}\n"
            f'upstreams {{\n    upstream "backend" {{\n        target "{self.upstream}"\n    }}\n}}\n'
            "agents {\n" + "".join(a.kdl() for a in self.agents) + "}\n" + self.extra
        )


@pytest.fixture
def sockets() -> Iterator[str]:
    with socket_dir() as path:
        yield path


class Agents:
    """Starts scripted agents and stops them all at the end of the test."""

    def __init__(self, directory: str, records: Path) -> None:
        self.directory = directory
        self.records = records
        self.running: list[AgentProcess] = []

    def socket(self, name: str) -> str:
        return f"{self.directory}/{name}.sock"

    def record_path(self, name: str) -> Path:
        return self.records / f"{name}.jsonl"

    def start(self, name: str, *extra: str) -> AgentProcess:
        path = self.socket(name)
        agent = AgentProcess(scripted_argv(path, name, "--record", str(self.record_path(name)), *extra), path)
        self.running.append(agent.start())
        return agent

    def events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.record_path(name)
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r["payload"] for r in lines if kind is None or r["event"] == kind]

    def stop_all(self) -> None:
        for agent in self.running:
            agent.stop()


@pytest.fixture
def agents(sockets: str, tmp_path: Path) -> Iterator[Agents]:
    a = Agents(sockets, tmp_path)
    yield a
    a.stop_all()


def connected(proc: SentinelProcess, name: str, times: int = 1) -> None:
    """Wait until the proxy's worker(s) said they connected to agent `name` (`times` times)."""
    needle = f"agent {name} connected"
    wait_for(lambda: proc.log().count(needle) >= times, timeout=15, what=f"the proxy to connect to agent {name}")
