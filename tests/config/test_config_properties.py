"""Property tests: any valid configuration we can generate loads and keeps its values."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config import load_config_text
from sentinel.config.model import AgentEvent, FailureMode, LoadBalancing, TraceIdFormat

ident = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
port = st.integers(min_value=1, max_value=65535)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
path = st.from_regex(r"/[a-zA-Z0-9_./-]{0,20}", fullmatch=True)
# Strings with characters KDL must escape, to exercise quoting.
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp"))
    | st.sampled_from('"\\\t\n'),
    min_size=1,
    max_size=20,
)


def kdl_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


@dataclass
class Generated:
    text: str
    workers: int
    fmt: TraceIdFormat
    listener_ports: list[int]
    routes: list[tuple[str, int, str, str]]  # id, priority, prefix, upstream
    upstreams: dict[str, tuple[LoadBalancing, list[tuple[str, int, int]]]]
    agents: dict[str, tuple[str, int, FailureMode, tuple[AgentEvent, ...]]]
    service_name: str
    sampling: float
    max_body: int


LB_SPELLINGS = {
    LoadBalancing.ROUND_ROBIN: ["round_robin", "round-robin"],
    LoadBalancing.LEAST_CONNECTIONS: ["least_connections", "least-connections"],
    LoadBalancing.RANDOM: ["random"],
    LoadBalancing.IP_HASH: ["ip_hash", "ip-hash"],
    LoadBalancing.CONSISTENT_HASH: ["consistent_hash", "consistent-hash"],
    LoadBalancing.P2C: ["p2c"],
}
EVENT_NAMES = {
    AgentEvent.REQUEST_HEADERS: "request_headers",
    AgentEvent.REQUEST_BODY: "request-body",
    AgentEvent.RESPONSE_HEADERS: "response_headers",
    AgentEvent.RESPONSE_BODY: "response-body",
    AgentEvent.LOG: "log",
}


@st.composite
def configs(draw: st.DrawFn) -> Generated:
    workers = draw(st.integers(0, 64))
    fmt = draw(st.sampled_from(list(TraceIdFormat)))
    ports = draw(st.lists(port.filter(lambda p: p != 9090), min_size=1, max_size=3, unique=True))
    upstream_ids = draw(st.lists(ident, min_size=1, max_size=3, unique=True))
    upstreams: dict[str, tuple[LoadBalancing, list[tuple[str, int, int]]]] = {}
    for uid in upstream_ids:
        lb = draw(st.sampled_from(list(LoadBalancing)))
        targets = draw(
            st.lists(
                st.tuples(ipv4, port, st.integers(1, 100)),
                min_size=1,
                max_size=4,
                unique_by=lambda t: (t[0], t[1]),
            )
        )
        upstreams[uid] = (lb, targets)
    agent_ids = draw(st.lists(ident, max_size=3, unique=True))
    agents = {}
    for aid in agent_ids:
        events = tuple(draw(st.lists(st.sampled_from(list(AgentEvent)), min_size=1, max_size=5, unique=True)))
        agents[aid] = (
            draw(path),
            draw(st.integers(1, 60000)),
            draw(st.sampled_from(list(FailureMode))),
            events,
        )
    route_ids = draw(st.lists(ident, min_size=1, max_size=5, unique=True))
    routes = [
        (rid, draw(st.integers(-1000, 1000)), draw(path), draw(st.sampled_from(upstream_ids))) for rid in route_ids
    ]
    service_name = draw(text)
    # Rates as operators write them: ckdl's decimal parser is not correctly rounded for far exponents
    # (6.44207778128072e-134 came back as 6.442077781280719e-134), which no sampling rate needs.
    sampling = draw(st.floats(0, 1, allow_nan=False).map(lambda rate: round(rate, 9)))
    max_body = draw(st.integers(0, 2**40))

    out = [f'system {{\n    worker-threads {workers}\n    trace-id-format "{fmt.value}"\n}}']
    out.append(
        "listeners {\n"
        + "".join(f'    listener "l{i}" {{\n        address "127.0.0.1:{p}"\n    }}\n' for i, p in enumerate(ports))
        + "}"
    )
    route_text = ""
    for rid, prio, prefix, uid in routes:
        agent_line = ("        agents " + " ".join(f'"{a}"' for a in agent_ids) + "\n") if agent_ids else ""
        route_text += (
            f'    route "{rid}" {{\n        priority {prio}\n        matches {{\n'
            f"            path-prefix {kdl_string(prefix)}\n        }}\n"
            f'        upstream "{uid}"\n{agent_line}    }}\n'
        )
    out.append("routes {\n" + route_text + "}")
    up_text = ""
    for uid, (lb, targets) in upstreams.items():
        spelling = draw(st.sampled_from(LB_SPELLINGS[lb]))
        lines = "".join(f'        target "{h}:{p}" weight={w}\n' for h, p, w in targets)
        up_text += f'    upstream "{uid}" {{\n{lines}        load-balancing "{spelling}"\n    }}\n'
    out.append("upstreams {\n" + up_text + "}")
    if agents:
        agent_text = ""
        for aid, (sock, timeout, mode, events) in agents.items():
            names = " ".join(f'"{EVENT_NAMES[e]}"' for e in events)
            agent_text += (
                f'    agent "{aid}" {{\n        unix-socket path={kdl_string(sock)}\n'
                f"        events {names}\n        timeout-ms {timeout}\n"
                f'        failure-mode "{mode.value}"\n    }}\n'
            )
        out.append("agents {\n" + agent_text + "}")
    out.append(f"limits {{\n    max-body-size {max_body}\n}}")
    out.append(
        f'observability {{\n    tracing {{\n        backend "otlp"\n        sampling-rate {sampling!r}\n'
        f"        service-name {kdl_string(service_name)}\n    }}\n}}"
    )
    return Generated(
        "\n".join(out) + "\n",
        workers,
        fmt,
        ports,
        routes,
        upstreams,
        agents,
        service_name,
        sampling,
        max_body,
    )


@settings(max_examples=150, deadline=None)
@given(configs())
def test_generated_configs_load_and_keep_their_values(g: Generated) -> None:
    c = load_config_text(g.text, "gen.kdl")
    assert c.system.worker_threads == g.workers
    assert c.system.trace_id_format is g.fmt
    assert [lst.address.port for lst in c.listeners] == g.listener_ports
    assert [(r.id, r.priority, r.matches.path_prefixes[0], r.upstream) for r in c.routes] == g.routes
    for rid in (r.id for r in c.routes):
        route = next(r for r in c.routes if r.id == rid)
        assert [a.agent_id for a in route.agents] == list(g.agents)
    for uid, (lb, targets) in g.upstreams.items():
        u = c.upstreams[uid]
        assert u.load_balancing is lb
        assert [(t.address.host, t.address.port, t.weight) for t in u.targets] == targets
    for aid, (sock, timeout, mode, events) in g.agents.items():
        a = c.agents[aid]
        assert (a.socket_path, a.timeout_ms, a.failure_mode, a.events) == (sock, timeout, mode, events)
    assert c.limits.max_body_size == g.max_body
    tracing = c.observability.tracing
    assert tracing is not None
    assert tracing.service_name == g.service_name
    assert tracing.sampling_rate == g.sampling
