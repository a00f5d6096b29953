"""`agents { agent "ID" { ... } }` and `filters { filter "ID" { type "agent"; ... } }`."""

from __future__ import annotations

from typing import Any

from sentinel.config.model import (
    AgentConfig,
    AgentEvent,
    AgentProtocolVersion,
    CircuitBreakerConfig,
    FilterConfig,
)
from sentinel.config.reader import Block, ConfigNode, describe, pick, read_entries
from sentinel.config.sections.routes import FAILURE_MODES

AGENT_EVENTS = {
    "request_headers": AgentEvent.REQUEST_HEADERS,
    "request-headers": AgentEvent.REQUEST_HEADERS,
    "request_body": AgentEvent.REQUEST_BODY,
    "request-body": AgentEvent.REQUEST_BODY,
    "response_headers": AgentEvent.RESPONSE_HEADERS,
    "response-headers": AgentEvent.RESPONSE_HEADERS,
    "response_body": AgentEvent.RESPONSE_BODY,
    "response-body": AgentEvent.RESPONSE_BODY,
    "log": AgentEvent.LOG,
    "request_complete": AgentEvent.LOG,
    "request-complete": AgentEvent.LOG,
}

_PROTOCOL_VERSIONS = {
    "v2": AgentProtocolVersion.V2,
    "2": AgentProtocolVersion.V2,
    "v1": AgentProtocolVersion.V1,
}

_AGENT_KEYS = [
    "unix-socket",
    "events",
    "timeout-ms",
    "failure-mode",
    "max-concurrent-calls",
    "protocol-version",
    "config",
    "circuit-breaker",
    "grpc",
    "http",
]


def read_agents(node: ConfigNode) -> list[AgentConfig]:
    return read_entries(node, "agent", _read_agent)


def _read_agent(node: ConfigNode) -> AgentConfig | None:
    agent_id = node.id_arg()
    node.no_properties(["type"])
    agent_type = node.properties.get("type")
    if agent_type is not None and not isinstance(agent_type, str):
        node.error(f"type= must be a string, got {describe(agent_type)}")
        agent_type = None
    b = Block(node, _AGENT_KEYS)
    for transport in ("grpc", "http"):
        other = b.get(transport)
        if other is not None:
            other.error(f'the {transport} agent transport is not supported; use unix-socket path="/run/x.sock"')
    socket_path = _read_socket(b, node)
    d = AgentConfig("", "")
    breaker = b.block("circuit-breaker")
    config_node = b.get("config")
    agent = AgentConfig(
        id=agent_id or "",
        socket_path=socket_path or "",
        events=_read_events(b, d.events),
        timeout_ms=b.integer("timeout-ms", d.timeout_ms, minimum=1, maximum=600_000),
        failure_mode=b.choice("failure-mode", FAILURE_MODES, d.failure_mode),
        max_concurrent_calls=b.integer("max-concurrent-calls", d.max_concurrent_calls, minimum=1),
        protocol_version=b.choice("protocol-version", _PROTOCOL_VERSIONS, d.protocol_version),
        config=kdl_to_json(config_node) if config_node is not None else None,
        circuit_breaker=_read_breaker(breaker) if breaker is not None else d.circuit_breaker,
        type=agent_type,
    )
    return agent if agent_id is not None and socket_path is not None else None


def _read_socket(b: Block, agent: ConfigNode) -> str | None:
    """`unix-socket path="/run/x.sock"` or `unix-socket "/run/x.sock"`."""
    node = b.get("unix-socket")
    if node is None:
        if not b.has("grpc") and not b.has("http"):
            agent.error('agent needs a transport: unix-socket path="/var/run/sentinel/agent.sock"')
        return None
    node.no_properties(["path"])
    values = node.args + ([node.properties["path"]] if "path" in node.properties else [])
    if node.children or len(values) != 1 or not isinstance(values[0], str) or not values[0]:
        node.error('unix-socket takes one path, e.g. unix-socket path="/var/run/sentinel/auth.sock"')
        return None
    path = str(values[0])
    if len(path.encode()) > 107:
        node.error(f'unix-socket path "{path}" is longer than the 107 bytes a Unix socket path may have')
        return None
    return path


def _read_events(b: Block, default: tuple[AgentEvent, ...]) -> tuple[AgentEvent, ...]:
    names = b.strings("events")
    node = b.get("events")
    if names is None or node is None:
        return default
    events: list[AgentEvent] = []
    for name in names:
        event = pick(node, "events", name, AGENT_EVENTS, None)
        if event is None:
            continue
        if event in events:
            node.error(f'event "{name}" is listed more than once')
            continue
        events.append(event)
    return tuple(events) or default


def _read_breaker(node: ConfigNode) -> CircuitBreakerConfig:
    b = Block(node, ["failure-threshold", "timeout-secs"], aliases={"timeout-seconds": "timeout-secs"})
    d = CircuitBreakerConfig()
    return CircuitBreakerConfig(
        failure_threshold=b.integer("failure-threshold", d.failure_threshold, minimum=1),
        timeout_secs=b.number("timeout-secs", d.timeout_secs, minimum=0.001),
    )


def kdl_to_json(node: ConfigNode) -> dict[str, Any]:
    """An agent's `config { ... }` as the JSON object of its Configure event.

    As in the Rust original: `k v` is {"k": v}, several values an array, a child block an object,
    properties are merged in, and a bare node is `true`.
    """
    out: dict[str, Any] = {}
    for child in node.children:
        out[child.name] = _node_value(child)
    return out


def _node_value(node: ConfigNode) -> Any:
    if node.children or node.properties:
        value: dict[str, Any] = dict(node.properties)
        value.update(kdl_to_json(node))
        if node.args:
            value["_args"] = list(node.args)
        return value
    if not node.args:
        return True
    return node.args[0] if len(node.args) == 1 else list(node.args)


def read_filters(node: ConfigNode) -> list[FilterConfig]:
    return read_entries(node, "filter", _read_filter)


def _read_filter(node: ConfigNode) -> FilterConfig | None:
    filter_id = node.id_arg()
    node.no_properties()
    b = Block(node, ["type", "agent", "timeout-ms", "failure-mode"])
    kind = b.string("type", None, required='type "agent"')
    type_node = b.get("type")
    if kind is not None and kind != "agent" and type_node is not None:
        type_node.error(
            f'filter type "{kind}" is not supported: filters only attach agents here (type "agent"); '
            "rate limiting and the like are done by agents"
        )
        return None
    agent = b.string("agent", None, required='agent "auth"')
    config = FilterConfig(
        id=filter_id or "",
        agent=agent or "",
        timeout_ms=b.integer("timeout-ms", None, minimum=1, maximum=600_000),
        failure_mode=b.choice("failure-mode", FAILURE_MODES, None),
    )
    return config if filter_id is not None and agent is not None else None
