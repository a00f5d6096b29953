"""Route selection, compiled once per config (SPEC §2).

Routes are tried by priority (higher first), then by specificity (exact path > regex > prefix > host >
header > query > method, and a longer prefix before a shorter one), then in config order. Within a
route, conditions of different kinds are ANDed and several of one kind are ORed. Each route becomes
a tuple of small predicate functions so that a request only pays for the kinds the route uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sentinel.config.model import (
    Config,
    HeaderMatch,
    ListenerConfig,
    QueryParamMatch,
    RouteConfig,
    RouteMatch,
)


@dataclass(slots=True)
class RequestView:
    """What routing looks at. `headers` maps lower-cased names to the first value."""

    method: str
    path: str
    query: str
    host: str  # lower-cased, without port
    headers: Mapping[str, str]


Predicate = Callable[[RequestView], bool]


def route_template(match: RouteMatch) -> str | None:
    """The `http.route` of a route (SPEC §6.4): exact path as is, a prefix as `/api/*`, else None."""
    if len(match.paths) == 1 and not match.path_prefixes and not match.path_regexes:
        return match.paths[0]
    if len(match.path_prefixes) == 1 and not match.paths and not match.path_regexes:
        return match.path_prefixes[0] + "*"
    if len(match.path_regexes) == 1 and not match.paths and not match.path_prefixes:
        return match.path_regexes[0].pattern
    return None


def specificity(route: RouteConfig) -> tuple[int, ...]:
    m = route.matches
    return (
        bool(m.paths),
        bool(m.path_regexes),
        bool(m.path_prefixes),
        max((len(p) for p in m.path_prefixes), default=0),
        bool(m.hosts),
        bool(m.headers),
        bool(m.query_params),
        bool(m.methods),
    )


def _host_predicate(hosts: tuple[str, ...]) -> Predicate:
    exact = frozenset(h for h in hosts if not h.startswith("*."))
    suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"

    def check(req: RequestView) -> bool:
        host = req.host
        if host in exact:
            return True
        # "*.example.com" needs at least one more label: "example.com" itself does not match.
        return any(host.endswith(s) and len(host) > len(s) for s in suffixes)

    return check


def _header_predicate(headers: tuple[HeaderMatch, ...]) -> Predicate:
    def check(req: RequestView) -> bool:
        for h in headers:
            value = req.headers.get(h.name)
            if value is not None and (h.value is None or value == h.value):
                return True
        return False

    return check


def _query_predicate(params: tuple[QueryParamMatch, ...]) -> Predicate:
    def check(req: RequestView) -> bool:
        if not req.query:
            return False
        pairs = parse_qsl(req.query, keep_blank_values=True)
        for p in params:
            for name, value in pairs:
                if name == p.name and (p.value is None or value == p.value):
                    return True
        return False

    return check


def _path_check(match: RouteMatch) -> Callable[[str], bool]:
    """The path conditions of a route (exact, prefix, regex: ANDed across kinds, ORed within one) as one
    function of the path; True when it has none."""
    paths = frozenset(match.paths)
    prefixes = match.path_prefixes
    regexes = match.path_regexes
    if paths and not prefixes and not regexes:
        return paths.__contains__
    if prefixes and not paths and not regexes:
        return lambda path: path.startswith(prefixes)
    if not paths and not prefixes and not regexes:
        return lambda path: True
    return lambda path: (
        (not paths or path in paths)
        and (not prefixes or path.startswith(prefixes))
        and (not regexes or any(r.search(path) for r in regexes))
    )


def compile_predicates(match: RouteMatch) -> tuple[Predicate, ...]:
    predicates: list[Predicate] = []
    if match.paths or match.path_prefixes or match.path_regexes:
        on_path = _path_check(match)
        predicates.append(lambda req: on_path(req.path))
    if match.methods:
        methods = frozenset(match.methods)
        predicates.append(lambda req: req.method in methods)
    if match.hosts:
        predicates.append(_host_predicate(match.hosts))
    if match.headers:
        predicates.append(_header_predicate(match.headers))
    if match.query_params:
        predicates.append(_query_predicate(match.query_params))
    return tuple(predicates)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    config: RouteConfig
    predicates: tuple[Predicate, ...]
    template: str | None  # http.route


class Router:
    """The route table of one listener."""

    __slots__ = ("_path_checks", "_routes", "default", "needs_headers", "path_only")

    def __init__(self, config: Config, listener: ListenerConfig) -> None:
        ordered = sorted(config.routes, key=lambda r: (-r.priority, tuple(-x for x in specificity(r)), r.order))
        self._routes = tuple(
            CompiledRoute(r, compile_predicates(r.matches), route_template(r.matches)) for r in ordered
        )
        self.needs_headers = any(r.matches.headers for r in config.routes)
        # When every route matches on the path alone (a common table: prefixes and exact paths), a request
        # is routed on its path without building a RequestView.
        self.path_only = all(
            not (m.methods or m.hosts or m.headers or m.query_params) for m in (r.matches for r in config.routes)
        )
        self._path_checks = tuple((r, _path_check(r.config.matches)) for r in self._routes)
        self.default: CompiledRoute | None = None
        if listener.default_route is not None:
            self.default = next(r for r in self._routes if r.config.id == listener.default_route)

    @property
    def routes(self) -> tuple[CompiledRoute, ...]:
        return self._routes

    def match_path(self, path: str) -> CompiledRoute | None:
        """`match` for a table where `path_only` holds."""
        for route, check in self._path_checks:
            if check(path):
                return route
        return self.default

    def match(self, req: RequestView) -> CompiledRoute | None:
        for route in self._routes:
            for predicate in route.predicates:
                if not predicate(req):
                    break
            else:
                return route
        return self.default
