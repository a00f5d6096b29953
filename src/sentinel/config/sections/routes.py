"""`routes { route "ID" { ... } }`."""

from __future__ import annotations

import re

from sentinel.config.model import (
    BuiltinHandler,
    FailureMode,
    HeaderMatch,
    HeaderOp,
    HeaderPolicy,
    QueryParamMatch,
    RetryConfig,
    RouteAgent,
    RouteConfig,
    RouteMatch,
    RouteTracing,
    ServiceType,
)
from sentinel.config.reader import Block, ConfigNode, describe, pick, read_entries

NAMED_PRIORITIES = {"low": 10, "normal": 50, "high": 100, "critical": 1000}

BUILTIN_HANDLERS = {
    "health": BuiltinHandler.HEALTH,
    "status": BuiltinHandler.STATUS,
    "metrics": BuiltinHandler.METRICS,
    "upstreams": BuiltinHandler.UPSTREAMS,
    "not-found": BuiltinHandler.NOT_FOUND,
    "not_found": BuiltinHandler.NOT_FOUND,
}

_SERVICE_TYPES = {"web": ServiceType.WEB, "proxy": ServiceType.WEB, "builtin": ServiceType.BUILTIN}
_REFUSED_SERVICE_TYPES = dict.fromkeys(
    ("static", "api", "inference"), "is not supported by this proxy (supported: web, builtin)"
)

FAILURE_MODES = {
    "open": FailureMode.OPEN,
    "fail-open": FailureMode.OPEN,
    "fail_open": FailureMode.OPEN,
    "closed": FailureMode.CLOSED,
    "fail-closed": FailureMode.CLOSED,
    "fail_closed": FailureMode.CLOSED,
}

# A token as RFC 9110 defines it: what a method or header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Hosts are matched without the port (the request's Host is compared port-less), so none is allowed here.
_HOST_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

_ROUTE_KEYS = [
    "priority",
    "matches",
    "upstream",
    "service-type",
    "builtin-handler",
    "agents",
    "filters",
    "tracing",
    "policies",
    "failure-mode",
    "retry",
    "timeout-secs",
]


def read_routes(node: ConfigNode) -> list[RouteConfig]:
    order = iter(range(len(node.children)))
    return read_entries(node, "route", lambda child: _read_route(child, next(order)))


def _read_route(node: ConfigNode, order: int) -> RouteConfig | None:
    route_id = node.id_arg()
    node.no_properties()
    b = Block(node, _ROUTE_KEYS)
    d = RouteConfig("")

    matches_node = b.block("matches")
    matches = _read_matches(matches_node) if matches_node is not None else RouteMatch()

    upstream = b.string("upstream", None)
    handler = b.choice("builtin-handler", BUILTIN_HANDLERS, None)
    service_type = b.choice("service-type", _SERVICE_TYPES, None, extra=_REFUSED_SERVICE_TYPES)
    if service_type is ServiceType.BUILTIN and handler is None and not b.has("builtin-handler"):
        node.error('service-type "builtin" needs builtin-handler, e.g. builtin-handler "health"')
    if service_type is ServiceType.WEB and b.has("builtin-handler"):
        node.error('builtin-handler is set but service-type is not "builtin"')
    if handler is not None and upstream is not None:
        node.error("a route has either an upstream or a builtin-handler, not both")
    if handler is None and upstream is None and not b.has("builtin-handler") and not b.has("upstream"):
        node.error('route needs an upstream (upstream "backend") or a builtin-handler (builtin-handler "health")')
    if handler is not None:
        service_type = ServiceType.BUILTIN

    failure_mode = b.choice("failure-mode", FAILURE_MODES, None)
    policies_node = b.block("policies")
    policies = HeaderPolicy()
    if policies_node is not None:
        policies, policy_failure_mode = _read_policies(policies_node)
        if policy_failure_mode is not None:
            if failure_mode is not None:
                policies_node.error("failure-mode is set both on the route and in its policies")
            failure_mode = policy_failure_mode

    agent_ids = b.strings("agents") or []
    _no_repeats(b, "agents", agent_ids)
    filter_ids = b.strings("filters") or []
    _no_repeats(b, "filters", filter_ids)

    retry_node = b.block("retry")
    retry = _read_retry(retry_node) if retry_node is not None else d.retry

    config = RouteConfig(
        id=route_id or "",
        priority=_read_priority(b, d.priority),
        matches=matches,
        upstream=upstream,
        service_type=service_type or ServiceType.WEB,
        builtin_handler=handler,
        agents=tuple(RouteAgent(agent_id=a) for a in agent_ids),
        filters=tuple(filter_ids),
        tracing=_read_route_tracing(b.get("tracing")),
        policies=policies,
        failure_mode=failure_mode,
        retry=retry,
        timeout_secs=b.number("timeout-secs", d.timeout_secs, minimum=0.001),
        order=order,
    )
    return config if route_id is not None else None


def _no_repeats(b: Block, key: str, ids: list[str]) -> None:
    node = b.get(key)
    for ident in {i for i in ids if ids.count(i) > 1}:
        if node is not None:
            node.error(f'"{ident}" is listed more than once in {key}')


def _read_priority(b: Block, default: int) -> int:
    node = b.get("priority")
    if node is None:
        return default
    if len(node.args) != 1 or node.properties or node.children:
        node.error('priority takes one value: an integer or "low", "normal", "high", "critical"')
        return default
    value = node.args[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        named = pick(node, "priority", value, NAMED_PRIORITIES, None)
        return default if named is None else named
    node.error(f'priority must be an integer or one of "low", "normal", "high", "critical", got {describe(value)}')
    return default


def _read_matches(node: ConfigNode) -> RouteMatch:
    kinds = ["path", "path-prefix", "path-regex", "host", "method", "header", "query-param"]
    Block(node, kinds, repeatable=kinds)
    paths: list[str] = []
    prefixes: list[str] = []
    regexes: list[re.Pattern[str]] = []
    hosts: list[str] = []
    methods: list[str] = []
    headers: list[HeaderMatch] = []
    params: list[QueryParamMatch] = []
    for child in node.children:
        kind = child.name
        if kind not in kinds:
            continue
        if child.children or child.properties:
            child.error(f"{child.name} takes only string values, not properties or a block")
            continue
        values = child.args
        if not values or not all(isinstance(v, str) for v in values):
            child.error(f"{child.name} takes string values, got {', '.join(describe(v) for v in values) or 'none'}")
            continue
        strings = [str(v) for v in values]
        if kind in ("header", "query-param"):
            if len(strings) > 2:
                child.error(f'{kind} takes a name and an optional value, e.g. {kind} "x-env" "prod"')
                continue
            name, value = strings[0], (strings[1] if len(strings) == 2 else None)
            if kind == "header":
                if not _TOKEN.match(name):
                    child.error(f'"{name}" is not a valid header name')
                    continue
                headers.append(HeaderMatch(name.lower(), value))
            else:
                params.append(QueryParamMatch(name, value))
            continue
        if kind == "method":
            for m in strings:
                if not _TOKEN.match(m):
                    child.error(f'"{m}" is not a valid HTTP method')
                else:
                    methods.append(m.upper())
            continue
        if len(strings) != 1:
            child.error(f"{child.name} takes exactly one value; repeat the line to match several")
            continue
        text = strings[0]
        if kind == "path":
            if not text.startswith("/"):
                child.error(f'path "{text}" must start with "/"')
            else:
                paths.append(text)
        elif kind == "path-prefix":
            if not text.startswith("/"):
                child.error(f'path-prefix "{text}" must start with "/"')
            else:
                prefixes.append(text)
        elif kind == "path-regex":
            try:
                regexes.append(re.compile(text))
            except re.error as exc:
                child.error(f'invalid regular expression "{text}": {exc}')
        elif kind == "host":
            if not _HOST_PATTERN.match(text):
                child.error(f'host "{text}" is not a host name or a "*.example.com" wildcard')
            else:
                hosts.append(text.lower())
    return RouteMatch(
        paths=tuple(paths),
        path_prefixes=tuple(prefixes),
        path_regexes=tuple(regexes),
        hosts=tuple(hosts),
        methods=tuple(methods),
        headers=tuple(headers),
        query_params=tuple(params),
    )


def _read_route_tracing(node: ConfigNode | None) -> RouteTracing | None:
    """`tracing #false`, `tracing #true` or `tracing { sampling-rate 0.5; enabled #true }`."""
    if node is None:
        return None
    if node.args or node.properties:
        if node.children or node.properties or len(node.args) != 1 or not isinstance(node.args[0], bool):
            node.error("tracing takes #true, #false or a { sampling-rate 0.5 } block")
            return None
        return RouteTracing(enabled=node.args[0])
    b = Block(node, ["enabled", "sampling-rate"])
    return RouteTracing(
        enabled=b.boolean("enabled", True),
        sampling_rate=b.number("sampling-rate", None, minimum=0.0, maximum=1.0),
    )


def _read_policies(node: ConfigNode) -> tuple[HeaderPolicy, FailureMode | None]:
    b = Block(node, ["request-headers", "response-headers", "failure-mode"])
    request = b.block("request-headers")
    response = b.block("response-headers")
    return (
        HeaderPolicy(
            request_headers=read_header_ops(request) if request is not None else (),
            response_headers=read_header_ops(response) if response is not None else (),
        ),
        b.choice("failure-mode", FAILURE_MODES, None),
    )


def read_header_ops(node: ConfigNode) -> tuple[HeaderOp, ...]:
    """`set "k" "v"`, `add "k" "v"`, `remove "k" ...` in list order."""
    ops: list[HeaderOp] = []
    for child in node.children:
        if child.name not in ("set", "add", "remove"):
            child.error(f'unknown header operation "{child.name}"; valid: set, add, remove')
            continue
        if child.children or child.properties or not all(isinstance(a, str) for a in child.args):
            child.error(f'{child.name} takes string values, e.g. {child.name} "x-env" "prod"')
            continue
        names = [str(a) for a in child.args]
        if child.name == "remove":
            if not names:
                child.error('remove takes one or more header names, e.g. remove "server"')
            ops.extend(HeaderOp("remove", n.lower()) for n in names if _valid_header_name(child, n))
            continue
        if len(names) != 2:
            child.error(f'{child.name} takes a header name and a value, e.g. {child.name} "x-env" "prod"')
            continue
        if _valid_header_name(child, names[0]):
            if any(c in names[1] for c in "\r\n\0"):
                child.error(f"the value of header {names[0]} contains a control character")
                continue
            ops.append(HeaderOp(child.name, names[0].lower(), names[1]))
    return tuple(ops)


def _valid_header_name(node: ConfigNode, name: str) -> bool:
    if not _TOKEN.match(name):
        node.error(f'"{name}" is not a valid header name')
        return False
    return True


def _read_retry(node: ConfigNode) -> RetryConfig:
    b = Block(node, ["max-attempts"])
    return RetryConfig(max_attempts=b.integer("max-attempts", RetryConfig().max_attempts, minimum=1, maximum=10))
