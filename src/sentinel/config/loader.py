"""Load a KDL v2 configuration into a `Config`, reporting every problem at once.

Three passes: ckdl parses (it is the validator of record for KDL syntax) and `kdl_positions` adds
lines; each top-level block is read by its section reader; then cross-references are checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import ckdl

from sentinel.config.addresses import addresses_overlap
from sentinel.config.errors import ConfigError
from sentinel.config.kdl_positions import KdlSyntaxError, SourceNode, locate_nodes
from sentinel.config.model import (
    AgentConfig,
    Config,
    FilterConfig,
    LimitsConfig,
    ListenerConfig,
    ObservabilityConfig,
    RouteAgent,
    RouteConfig,
    SystemConfig,
    UpstreamConfig,
)
from sentinel.config.reader import Collector, ConfigNode, suggest
from sentinel.config.sections.agents import read_agents, read_filters
from sentinel.config.sections.listeners import read_listeners
from sentinel.config.sections.observability import read_observability
from sentinel.config.sections.routes import read_routes
from sentinel.config.sections.system import read_limits, read_system
from sentinel.config.sections.upstreams import read_upstreams

DEFAULT_SOURCE = "<default>"
TOP_LEVEL_BLOCKS = (
    "system",
    "server",
    "listeners",
    "routes",
    "upstreams",
    "agents",
    "filters",
    "limits",
    "observability",
)

T = TypeVar("T")


def default_config_text() -> str:
    return resources.files("sentinel.config").joinpath("default.kdl").read_text(encoding="utf-8")


def load_default_config() -> Config:
    return load_config_text(default_config_text(), DEFAULT_SOURCE)


def load_config_file(path: str | os.PathLike[str]) -> Config:
    """Read and load a config file; a missing or unreadable file is a ConfigError too."""
    name = os.fspath(path)
    return load_config_text(read_config_file(name), name)


def read_config_file(path: str | os.PathLike[str]) -> str:
    """A config file's text; a missing or unreadable file is a ConfigError naming it."""
    name = os.fspath(path)
    collector = Collector(name)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        collector.add("", "configuration file not found")
        raise ConfigError(collector.issues) from None
    except IsADirectoryError:
        collector.add("", "is a directory, not a configuration file")
        raise ConfigError(collector.issues) from None
    except UnicodeDecodeError as exc:
        collector.add("", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise ConfigError(collector.issues) from None
    except OSError as exc:
        collector.add("", f"cannot be read: {exc.strerror}")
        raise ConfigError(collector.issues) from None
    return text


def load_config_text(text: str, source: str) -> Config:
    collector = Collector(source)
    nodes = _parse(text, collector)
    if collector.issues:
        raise ConfigError(collector.issues)
    config = _build(nodes, source, collector)
    if collector.issues or config is None:
        # In file order, as a compiler lists them; problems of the whole file first.
        raise ConfigError(sorted(collector.issues, key=lambda i: (i.line or 0, i.column or 0)))
    return config


def _parse(text: str, collector: Collector) -> list[ConfigNode]:
    try:
        document = ckdl.parse(text, version=2)
    except ckdl.ParseError as exc:
        _report_syntax_error(text, str(exc), collector)
        return []
    try:
        positions: list[SourceNode] | None = locate_nodes(text)
    except KdlSyntaxError:
        positions = None  # ckdl accepted it; lines are a nicety, never a reason to refuse a config
    aligned = positions is not None and [p.name for p in positions] == [n.name for n in document.nodes]
    return [
        ConfigNode(raw, positions[i] if aligned and positions is not None else None, "", collector)
        for i, raw in enumerate(document.nodes)
    ]


def _report_syntax_error(text: str, ckdl_message: str, collector: Collector) -> None:
    """ckdl says only that the text is invalid; our scanner says where."""
    try:
        locate_nodes(text)
    except KdlSyntaxError as exc:
        collector.add("", f"KDL syntax error: {exc.message}", exc.line, exc.column)
        return
    collector.add("", f"KDL syntax error: {ckdl_message}")


def _build(nodes: list[ConfigNode], source: str, collector: Collector) -> Config | None:
    blocks: dict[str, ConfigNode] = {}
    for node in nodes:
        if node.name not in TOP_LEVEL_BLOCKS:
            node.error(
                f'unknown top-level block "{node.name}"{suggest(node.name, TOP_LEVEL_BLOCKS)}; valid blocks: '
                + ", ".join(b for b in TOP_LEVEL_BLOCKS if b != "server")
            )
            continue
        canonical = "system" if node.name == "server" else node.name
        if canonical in blocks:
            first = blocks[canonical]
            node.error(f'block "{node.name}" appears more than once (first "{first.name}" on line {first.line})')
            continue
        blocks[canonical] = node

    def read(name: str, reader: Callable[[ConfigNode], T], default: T) -> T:
        node = blocks.get(name)
        return reader(node) if node is not None else default

    system = read("system", read_system, SystemConfig())
    listeners: list[ListenerConfig] = read("listeners", read_listeners, [])
    routes: list[RouteConfig] = read("routes", read_routes, [])
    upstreams: list[UpstreamConfig] = read("upstreams", read_upstreams, [])
    agents: list[AgentConfig] = read("agents", read_agents, [])
    filters: list[FilterConfig] = read("filters", read_filters, [])
    limits = read("limits", read_limits, LimitsConfig())
    observability = read("observability", read_observability, ObservabilityConfig())

    if "listeners" not in blocks:
        collector.add(
            "",
            'missing "listeners" block: at least one listener is needed, e.g. '
            'listeners { listener "http" { address "0.0.0.0:8080" } }',
        )
    elif not blocks["listeners"].children:
        blocks["listeners"].error('at least one listener is needed, e.g. listener "http" { address "0.0.0.0:8080" }')

    upstream_map = _unique(upstreams, "upstream", blocks.get("upstreams"))
    agent_map = _unique(agents, "agent", blocks.get("agents"))
    filter_map = _unique(filters, "filter", blocks.get("filters"))
    _unique(listeners, "listener", blocks.get("listeners"))
    route_map = _unique(routes, "route", blocks.get("routes"))

    _check_listeners(listeners, route_map, blocks.get("listeners"))
    routes = _resolve_routes(routes, upstream_map, agent_map, filter_map, blocks.get("routes"))
    for f in filter_map.values():
        if f.agent not in agent_map:
            _error_at(
                blocks.get("filters"),
                "filter",
                f.id,
                f'agent "{f.agent}" is not defined in agents{suggest(f.agent, agent_map)}',
            )
    metrics = observability.metrics
    if metrics is not None and metrics.enabled:
        for listener in listeners:
            if addresses_overlap(listener.address, metrics.address):
                _error_at(
                    blocks.get("observability"),
                    "metrics",
                    None,
                    f'metrics address "{metrics.address}" collides with listener "{listener.id}" '
                    f'on "{listener.address}"; pick another port',
                )

    if collector.issues:
        return None
    return Config(
        source=source,
        system=system,
        listeners=tuple(listeners),
        routes=tuple(routes),
        upstreams=MappingProxyType(upstream_map),
        agents=MappingProxyType(agent_map),
        filters=MappingProxyType(filter_map),
        limits=limits,
        observability=observability,
    )


def _find(block: ConfigNode | None, kind: str, ident: str | None) -> ConfigNode | None:
    """The node `kind "ident"` (or the first `kind`) inside `block`, for error positions."""
    if block is None:
        return None
    for child in block.children:
        if child.name == kind and (ident is None or (child.args and child.args[0] == ident)):
            return child
    return None


def _error_at(block: ConfigNode | None, kind: str, ident: str | None, message: str) -> None:
    node = _find(block, kind, ident) or block
    if node is not None:
        node.error(message)


def _unique(items: list[Any], kind: str, block: ConfigNode | None) -> dict[str, Any]:
    """Index by id; a repeated id is an error that names both places."""
    seen: dict[str, Any] = {}
    if block is None:
        return seen
    nodes = [c for c in block.children if c.name == kind and c.args]
    for item in items:
        if item.id in seen:
            same = [n for n in nodes if n.args[0] == item.id]
            where = same[-1] if same else block
            first_line = same[0].line if same else None
            where.error(f'{kind} "{item.id}" is defined more than once (first on line {first_line})')
            continue
        seen[item.id] = item
    return seen


def _check_listeners(listeners: list[ListenerConfig], routes: dict[str, RouteConfig], block: ConfigNode | None) -> None:
    for i, listener in enumerate(listeners):
        if listener.default_route is not None and listener.default_route not in routes:
            _error_at(
                block,
                "listener",
                listener.id,
                f'default-route "{listener.default_route}" is not a route{suggest(listener.default_route, routes)}',
            )
        for other in listeners[:i]:
            if addresses_overlap(listener.address, other.address):
                _error_at(
                    block,
                    "listener",
                    listener.id,
                    f'address "{listener.address}" collides with listener "{other.id}" on "{other.address}"',
                )


def _resolve_routes(
    routes: list[RouteConfig],
    upstreams: dict[str, UpstreamConfig],
    agents: dict[str, AgentConfig],
    filters: dict[str, FilterConfig],
    block: ConfigNode | None,
) -> list[RouteConfig]:
    """Check a route's references, and turn its `agents` and agent `filters` into one ordered list."""
    resolved: list[RouteConfig] = []
    for route in routes:
        node = _find(block, "route", route.id)

        def error(message: str, node: ConfigNode | None = node) -> None:
            if node is not None:
                node.error(message)

        if route.upstream is not None and route.upstream not in upstreams:
            error(f'upstream "{route.upstream}" is not defined in upstreams{suggest(route.upstream, upstreams)}')
        route_agents: list[RouteAgent] = []
        for ra in route.agents:
            if ra.agent_id not in agents:
                error(f'agent "{ra.agent_id}" is not defined in agents{suggest(ra.agent_id, agents)}')
            route_agents.append(RouteAgent(ra.agent_id, failure_mode=route.failure_mode))
        for filter_id in route.filters:
            f = filters.get(filter_id)
            if f is None:
                error(f'filter "{filter_id}" is not defined in filters{suggest(filter_id, filters)}')
                continue
            if any(a.agent_id == f.agent for a in route_agents):
                error(f'agent "{f.agent}" is attached twice (through agents and filter "{filter_id}")')
                continue
            route_agents.append(
                RouteAgent(
                    f.agent,
                    failure_mode=f.failure_mode or route.failure_mode,
                    timeout_ms=f.timeout_ms,
                    filter_id=f.id,
                )
            )
        if route.builtin_handler is not None and route_agents:
            error("builtin routes are answered before agents run; remove agents/filters from this route")
        resolved.append(replace(route, agents=tuple(route_agents)))
    return resolved
