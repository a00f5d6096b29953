"""`upstreams { upstream "ID" { ... } }`."""

from __future__ import annotations

import re

from sentinel.config.addresses import AddressError, parse_socket_address
from sentinel.config.model import (
    ConnectionPoolConfig,
    HealthCheckConfig,
    HealthCheckType,
    LoadBalancing,
    TargetConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from sentinel.config.reader import Block, ConfigNode, describe, pick, read_entries

LOAD_BALANCING = {
    "round_robin": LoadBalancing.ROUND_ROBIN,
    "round-robin": LoadBalancing.ROUND_ROBIN,
    "roundrobin": LoadBalancing.ROUND_ROBIN,
    "least_connections": LoadBalancing.LEAST_CONNECTIONS,
    "least-connections": LoadBalancing.LEAST_CONNECTIONS,
    "leastconnections": LoadBalancing.LEAST_CONNECTIONS,
    "random": LoadBalancing.RANDOM,
    "ip_hash": LoadBalancing.IP_HASH,
    "ip-hash": LoadBalancing.IP_HASH,
    "iphash": LoadBalancing.IP_HASH,
    "consistent_hash": LoadBalancing.CONSISTENT_HASH,
    "consistent-hash": LoadBalancing.CONSISTENT_HASH,
    "consistenthash": LoadBalancing.CONSISTENT_HASH,
    "p2c": LoadBalancing.P2C,
    "power_of_two_choices": LoadBalancing.P2C,
    "power-of-two-choices": LoadBalancing.P2C,
}

_HEALTH_TYPES = {"http": HealthCheckType.HTTP, "tcp": HealthCheckType.TCP}
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MAX_WEIGHT = 1000


def read_upstreams(node: ConfigNode) -> list[UpstreamConfig]:
    return read_entries(node, "upstream", _read_upstream)


def _read_upstream(node: ConfigNode) -> UpstreamConfig | None:
    upstream_id = node.id_arg()
    node.no_properties()
    b = Block(
        node,
        ["target", "targets", "load-balancing", "hash-key", "health-check", "connection-pool", "timeouts"],
        repeatable=["target"],
    )
    targets = [t for t in (_read_target(n) for n in b.all("target")) if t is not None]
    wrapper = b.block("targets")
    if wrapper is not None:
        Block(wrapper, ["target"], repeatable=["target"])
        targets += [t for t in (_read_target(n) for n in wrapper.children if n.name == "target") if t is not None]
    if not b.has("target") and not (wrapper is not None and wrapper.children):
        node.error('upstream needs at least one target, e.g. target "127.0.0.1:3000"')
    seen: set[str] = set()
    for target in targets:
        if str(target.address) in seen:
            node.error(f'target "{target.address}" is listed more than once; use weight=N instead')
        seen.add(str(target.address))

    d = UpstreamConfig("", ())
    hash_key = b.string("hash-key", d.hash_key)
    hash_node = b.get("hash-key")
    if hash_node is not None and hash_key != "client-ip":
        name = hash_key.removeprefix("header:")
        if not hash_key.startswith("header:") or not _HEADER_NAME.match(name):
            hash_node.error(f'hash-key must be "client-ip" or "header:NAME", got "{hash_key}"')
    health = b.block("health-check")
    pool = b.block("connection-pool")
    timeouts = b.block("timeouts")
    config = UpstreamConfig(
        id=upstream_id or "",
        targets=tuple(targets),
        load_balancing=b.choice("load-balancing", LOAD_BALANCING, d.load_balancing),
        hash_key=hash_key.lower(),
        health_check=_read_health_check(health) if health is not None else None,
        connection_pool=_read_pool(pool) if pool is not None else d.connection_pool,
        timeouts=_read_timeouts(timeouts) if timeouts is not None else d.timeouts,
    )
    return config if upstream_id is not None else None


def _read_target(node: ConfigNode) -> TargetConfig | None:
    """`target "h:p" weight=2`, `target address="h:p" weight=2` or `target { address "h:p"; weight 2 }`."""
    address: object = None
    weight: object = 1
    if node.children:
        if node.args or node.properties:
            node.error('target takes either values (target "h:p" weight=2) or a block, not both')
            return None
        b = Block(node, ["address", "weight"])
        address = b.string("address", None, required='address "127.0.0.1:3000"')
        weight = b.integer("weight", 1)
    else:
        node.no_properties(["address", "weight"])
        if len(node.args) > 1 or (node.args and "address" in node.properties):
            node.error('target takes one address, e.g. target "127.0.0.1:3000" weight=2')
            return None
        address = node.args[0] if node.args else node.properties.get("address")
        weight = node.properties.get("weight", 1)
        if address is None:
            node.error('target needs an address, e.g. target "127.0.0.1:3000"')
            return None
    if address is None:
        return None
    if not isinstance(address, str):
        node.error(f'target address must be a string "HOST:PORT", got {describe(address)}')
        return None
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= _MAX_WEIGHT:
        node.error(f"weight must be an integer from 1 to {_MAX_WEIGHT}, got {describe(weight)}")
        return None
    try:
        return TargetConfig(parse_socket_address(address), weight)
    except AddressError as exc:
        node.error(f"target: {exc}")
        return None


def _read_health_check(node: ConfigNode) -> HealthCheckConfig:
    b = Block(node, ["type", "interval-secs", "timeout-secs", "healthy-threshold", "unhealthy-threshold"])
    d = HealthCheckConfig()
    kind = d.type
    path, expected, host = d.path, d.expected_status, d.host
    type_node = b.get("type")
    if type_node is not None:
        if len(type_node.args) != 1 or not isinstance(type_node.args[0], str) or type_node.properties:
            type_node.error('type takes one value, "http" or "tcp", e.g. type "http" { path "/health" }')
        else:
            kind = pick(type_node, "type", type_node.args[0], _HEALTH_TYPES, None) or d.type
            if type_node.children and kind is HealthCheckType.TCP:
                type_node.error('a "tcp" health check takes no settings block')
            elif kind is HealthCheckType.HTTP:
                hb = Block(type_node, ["path", "expected-status", "host"])
                path = hb.string("path", d.path)
                path_node = hb.get("path")
                if path_node is not None and not path.startswith("/"):
                    path_node.error(f'health-check path "{path}" must start with "/"')
                    path = d.path
                expected = hb.integer("expected-status", d.expected_status, minimum=100, maximum=599)
                host = hb.string("host", None)
    return HealthCheckConfig(
        type=kind,
        path=path,
        expected_status=expected,
        host=host,
        interval_secs=b.number("interval-secs", d.interval_secs, minimum=0.1),
        timeout_secs=b.number("timeout-secs", d.timeout_secs, minimum=0.01),
        healthy_threshold=b.integer("healthy-threshold", d.healthy_threshold, minimum=1),
        unhealthy_threshold=b.integer("unhealthy-threshold", d.unhealthy_threshold, minimum=1),
    )


def _read_pool(node: ConfigNode) -> ConnectionPoolConfig:
    b = Block(node, ["max-idle", "idle-timeout-secs"], aliases={"idle-timeout": "idle-timeout-secs"})
    d = ConnectionPoolConfig()
    return ConnectionPoolConfig(
        max_idle=b.integer("max-idle", d.max_idle, minimum=0),
        idle_timeout_secs=b.number("idle-timeout-secs", d.idle_timeout_secs, minimum=0),
    )


def _read_timeouts(node: ConfigNode) -> UpstreamTimeouts:
    b = Block(
        node,
        ["connect-secs", "read-secs", "write-secs"],
        aliases={"connect": "connect-secs", "read": "read-secs", "write": "write-secs"},
    )
    d = UpstreamTimeouts()
    return UpstreamTimeouts(
        connect_secs=b.number("connect-secs", d.connect_secs, minimum=0.001),
        read_secs=b.number("read-secs", d.read_secs, minimum=0.001),
        write_secs=b.number("write-secs", d.write_secs, minimum=0.001),
    )
