"""Route selection (SPEC §2): priority, then specificity, then config order; AND across kinds, OR within one.

Every router here is built from real KDL v2 text through `load_config_text`, so the tests also pin down
how the config reader and the router agree on names, lower-casing and named priorities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import pairwise

import pytest

from sentinel.config import Config, load_config_text
from sentinel.proxy.router import RequestView, Router, route_template


def route(route_id: str, *conditions: str, priority: str | int | None = None) -> str:
    """One `route` node: `conditions` are lines of its `matches` block (none: no `matches` block at all)."""
    lines = [f'    route "{route_id}" {{']
    if priority is not None:
        lines.append(f'        priority "{priority}"' if isinstance(priority, str) else f"        priority {priority}")
    if conditions:
        lines.append("        matches {")
        lines.extend(f"            {c}" for c in conditions)
        lines.append("        }")
    lines.append('        builtin-handler "not-found"')
    lines.append("    }")
    return "\n".join(lines)


def load(*routes: str, default_route: str | None = None) -> Config:
    default = f'        default-route "{default_route}"\n' if default_route is not None else ""
    text = (
        'listeners {\n    listener "http" {\n        address "127.0.0.1:8080"\n'
        + default
        + "    }\n}\n"
        + "routes {\n"
        + "\n".join(routes)
        + "\n}\n"
    )
    return load_config_text(text, "router.kdl")


def make_router(*routes: str, default_route: str | None = None) -> Router:
    config = load(*routes, default_route=default_route)
    return Router(config, config.listeners[0])


def request(
    path: str = "/",
    *,
    method: str = "GET",
    query: str = "",
    host: str = "example.com",
    headers: Mapping[str, str] | None = None,
) -> RequestView:
    return RequestView(method, path, query, host, dict(headers or {}))


def matched(router: Router, req: RequestView) -> str | None:
    found = router.match(req)
    return None if found is None else found.config.id


def order(router: Router) -> list[str]:
    return [r.config.id for r in router.routes]


# -- priority ---------------------------------------------------------------------------------------


def test_higher_priority_wins_over_specificity_and_config_order() -> None:
    router = make_router(
        route("exact-low", 'path "/api/users"', priority=10),
        route("catch-all-high", priority=100),
    )
    assert matched(router, request("/api/users")) == "catch-all-high"
    assert order(router) == ["catch-all-high", "exact-low"]


def test_lower_priority_route_still_matches_when_higher_ones_do_not() -> None:
    router = make_router(
        route("api", 'path-prefix "/api/"', priority=100),
        route("rest", priority=1),
    )
    assert matched(router, request("/api/x")) == "api"
    assert matched(router, request("/other")) == "rest"


def test_named_priorities_and_default_priority() -> None:
    config = load(
        route("low", priority="low"),
        route("p11", priority=11),
        route("default"),
        route("p49", priority=49),
        route("normal", priority="normal"),
        route("p51", priority=51),
        route("high", priority="high"),
        route("p101", priority=101),
        route("critical", priority="critical"),
        route("p999", priority=999),
        route("negative", priority=-1),
    )
    assert {r.id: r.priority for r in config.routes} == {
        "low": 10,
        "p11": 11,
        "default": 50,
        "p49": 49,
        "normal": 50,
        "p51": 51,
        "high": 100,
        "p101": 101,
        "critical": 1000,
        "p999": 999,
        "negative": -1,
    }
    router = Router(config, config.listeners[0])
    # "default" and "normal" are both 50 with no conditions: config order decides between them.
    assert order(router) == [
        "critical",
        "p999",
        "p101",
        "high",
        "p51",
        "default",
        "normal",
        "p49",
        "p11",
        "low",
        "negative",
    ]
    assert matched(router, request("/anything")) == "critical"


# -- specificity ------------------------------------------------------------------------------------

# Listed from the least to the most specific; every one of them matches FULL_REQUEST.
BY_SPECIFICITY = [
    ("catch-all", ()),
    ("method", ('method "GET"',)),
    ("query", ('query-param "debug"',)),
    ("header", ('header "x-env" "prod"',)),
    ("host", ('host "api.example.com"',)),
    ("short-prefix", ('path-prefix "/api/"',)),
    ("long-prefix", ('path-prefix "/api/v1/"',)),
    ("regex", ('path-regex "^/api/v[0-9]+/"',)),
    ("exact", ('path "/api/v1/users"',)),
]
FULL_REQUEST = request(
    "/api/v1/users", method="GET", query="debug=1", host="api.example.com", headers={"x-env": "prod"}
)


def test_specificity_order_at_equal_priority() -> None:
    router = make_router(*(route(rid, *conds) for rid, conds in BY_SPECIFICITY))
    assert order(router) == [rid for rid, _ in reversed(BY_SPECIFICITY)]
    assert matched(router, FULL_REQUEST) == "exact"


@pytest.mark.parametrize(
    ("less", "more"),
    list(pairwise(BY_SPECIFICITY)),
    ids=[f"{m[0]}>{le[0]}" for le, m in pairwise(BY_SPECIFICITY)],
)
def test_more_specific_route_wins_even_when_listed_later(
    less: tuple[str, tuple[str, ...]], more: tuple[str, tuple[str, ...]]
) -> None:
    router = make_router(route(less[0], *less[1]), route(more[0], *more[1]))
    assert matched(router, FULL_REQUEST) == more[0]
    # Listed the other way round the answer is the same.
    router = make_router(route(more[0], *more[1]), route(less[0], *less[1]))
    assert matched(router, FULL_REQUEST) == more[0]


def test_each_level_of_specificity_falls_through_to_the_next() -> None:
    router = make_router(*(route(rid, *conds) for rid, conds in BY_SPECIFICITY))
    assert matched(router, request("/api/v1/users")) == "exact"
    assert matched(router, request("/api/v2/users")) == "regex"
    assert matched(router, request("/api/vx/users", host="api.example.com")) == "short-prefix"
    assert matched(router, request("/other", host="api.example.com", headers={"x-env": "prod"})) == "host"
    assert matched(router, request("/other", query="debug", headers={"x-env": "prod"})) == "header"
    assert matched(router, request("/other", query="debug", headers={"x-env": "dev"})) == "query"
    assert matched(router, request("/other")) == "method"
    assert matched(router, request("/other", method="POST")) == "catch-all"


def test_longer_prefix_wins_whatever_the_config_order() -> None:
    short = route("short", 'path-prefix "/a/"')
    mid = route("mid", 'path-prefix "/a/b/"')
    long = route("long", 'path-prefix "/a/b/c/"')
    for routes in ((short, long, mid), (long, mid, short), (mid, short, long)):
        router = make_router(*routes)
        assert order(router) == ["long", "mid", "short"]
        assert matched(router, request("/a/b/c/d")) == "long"
        assert matched(router, request("/a/b/x")) == "mid"
        assert matched(router, request("/a/x")) == "short"


def test_priority_beats_specificity_but_specificity_beats_config_order() -> None:
    router = make_router(
        route("prefix-high", 'path-prefix "/api/"', priority="high"),
        route("exact", 'path "/api/users"'),
        route("prefix", 'path-prefix "/api/"'),
    )
    assert order(router) == ["prefix-high", "exact", "prefix"]
    assert matched(router, request("/api/users")) == "prefix-high"


# -- config order -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["one", "two"])
def test_config_order_breaks_remaining_ties(first: str) -> None:
    second = "two" if first == "one" else "one"
    router = make_router(route(first, 'path-prefix "/x/"'), route(second, 'path-prefix "/x/"'))
    assert matched(router, request("/x/y")) == first
    assert order(router) == [first, second]


# -- AND across kinds, OR within one ----------------------------------------------------------------


def test_conditions_of_different_kinds_are_anded() -> None:
    router = make_router(
        route(
            "strict",
            'path-prefix "/api/"',
            'method "POST"',
            'host "api.example.com"',
            'header "x-env" "prod"',
            'query-param "v" "2"',
        ),
    )
    good = request("/api/items", method="POST", host="api.example.com", headers={"x-env": "prod"}, query="v=2")
    assert matched(router, good) == "strict"
    assert matched(router, replace(good, path="/web/items")) is None
    assert matched(router, replace(good, method="GET")) is None
    assert matched(router, replace(good, host="www.example.com")) is None
    assert matched(router, replace(good, headers={"x-env": "dev"})) is None
    assert matched(router, replace(good, headers={})) is None
    assert matched(router, replace(good, query="v=1")) is None
    assert matched(router, replace(good, query="")) is None


def test_several_paths_are_ored() -> None:
    router = make_router(route("health", 'path "/health"', 'path "/healthz"'))
    assert matched(router, request("/health")) == "health"
    assert matched(router, request("/healthz")) == "health"
    assert matched(router, request("/healthzz")) is None
    assert matched(router, request("/health/")) is None
    assert matched(router, request("/")) is None


def test_several_of_each_kind_are_ored_then_anded() -> None:
    router = make_router(
        route(
            "r",
            'path-prefix "/a/"',
            'path-prefix "/b/"',
            'method "GET"',
            'method "HEAD"',
            'header "x-one"',
            'header "x-two" "2"',
        ),
    )
    assert matched(router, request("/a/1", headers={"x-one": ""})) == "r"
    assert matched(router, request("/b/1", method="HEAD", headers={"x-two": "2"})) == "r"
    assert matched(router, request("/b/1", method="HEAD", headers={"x-two": "3"})) is None
    assert matched(router, request("/c/1", headers={"x-one": "1"})) is None
    assert matched(router, request("/a/1", method="POST", headers={"x-one": "1"})) is None


def test_path_kinds_are_one_kind_each_so_path_and_prefix_are_anded() -> None:
    # `path` and `path-prefix` are different kinds: both must hold.
    router = make_router(route("r", 'path "/a/b"', 'path-prefix "/a/"'))
    assert matched(router, request("/a/b")) == "r"
    assert matched(router, request("/a/c")) is None


@pytest.mark.parametrize(
    "routes",
    [
        (route("all"),),
        ('    route "all" {\n        matches {\n        }\n        builtin-handler "not-found"\n    }',),
    ],
    ids=["no matches block", "empty matches block"],
)
def test_no_conditions_match_everything(routes: tuple[str, ...]) -> None:
    router = make_router(*routes)
    for req in (
        request("/"),
        request("/x/y/z", method="DELETE", query="a=1", host="other.test", headers={"x": "y"}),
        request("", method="OPTIONS", host=""),
    ):
        assert matched(router, req) == "all"


# -- hosts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "exact"),
        ("www.example.com", None),
        ("example.org", None),
        ("example.co", None),
        ("xexample.com", None),
    ],
)
def test_exact_host(host: str, expected: str | None) -> None:
    router = make_router(route("exact", 'host "example.com"'))
    assert matched(router, request(host=host)) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("example.com", None),  # the wildcard needs at least one more label
        (".example.com", None),  # ... and that label must not be empty
        ("badexample.com", None),
        ("example.com.evil.test", None),
        ("a.example.org", None),
    ],
)
def test_wildcard_host(host: str, expected: str | None) -> None:
    router = make_router(route("wild", 'host "*.example.com"'))
    assert matched(router, request(host=host)) == expected


def test_config_hosts_are_lower_cased_and_ored() -> None:
    router = make_router(route("r", 'host "API.Example.COM"', 'host "*.Other.Test"'))
    # The caller lower-cases the request's host (exchange.py), so the config side must be lower-case too.
    assert matched(router, request(host="api.example.com")) == "r"
    assert matched(router, request(host="x.other.test")) == "r"
    assert matched(router, request(host="other.test")) is None
    assert matched(router, request(host="www.example.com")) is None


def test_exact_and_wildcard_hosts_tie_so_config_order_decides() -> None:
    # Both are "host" conditions: equal specificity, so config order decides.
    router = make_router(route("wild", 'host "*.example.com"'), route("exact", 'host "api.example.com"'))
    assert matched(router, request(host="api.example.com")) == "wild"
    assert matched(router, request(host="www.example.com")) == "wild"


# -- headers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-debug": "1"}, "presence"),
        ({"x-debug": ""}, "presence"),
        ({"x-debug-not": "1"}, None),
        ({}, None),
    ],
)
def test_header_presence(headers: dict[str, str], expected: str | None) -> None:
    router = make_router(route("presence", 'header "X-Debug"'))  # names are case-insensitive: lower-cased
    assert matched(router, request(headers=headers)) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-env": "prod"}, "value"),
        ({"x-env": "staging"}, None),
        ({"x-env": ""}, None),
        ({"x-env": "prod "}, None),
        ({"x-other": "prod"}, None),
        ({}, None),
    ],
)
def test_header_value(headers: dict[str, str], expected: str | None) -> None:
    router = make_router(route("value", 'header "X-Env" "prod"'))
    assert matched(router, request(headers=headers)) == expected


# -- query parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("debug", "presence"),
        ("debug=", "presence"),
        ("debug=1", "presence"),
        ("a=1&debug=0&b=2", "presence"),
        ("%64ebug=1", "presence"),  # the name is URL-decoded too
        ("debugger=1", None),
        ("xdebug=1", None),
        ("a=debug", None),
        ("", None),
    ],
)
def test_query_param_presence(query: str, expected: str | None) -> None:
    router = make_router(route("presence", 'query-param "debug"'))
    assert matched(router, request(query=query)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=a%20b", "value"),
        ("q=a+b", "value"),
        ("x=1&q=a%20b", "value"),
        ("q=zz&q=a%20b", "value"),  # any occurrence counts
        ("q=a%2520b", None),  # decoded once only
        ("q=a", None),
        ("q", None),
        ("Q=a%20b", None),
        ("", None),
    ],
)
def test_query_param_value_is_url_decoded(query: str, expected: str | None) -> None:
    router = make_router(route("value", 'query-param "q" "a b"'))
    assert matched(router, request(query=query)) == expected


def test_query_param_utf8_value() -> None:
    router = make_router(route("value", 'query-param "city" "Zürich"'))
    assert matched(router, request(query="city=Z%C3%BCrich")) == "value"
    assert matched(router, request(query="city=Zurich")) is None


# -- methods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", "m"), ("HEAD", "m"), ("POST", "m"), ("DELETE", "m"), ("PUT", None), ("OPTIONS", None)],
)
def test_method_lists(method: str, expected: str | None) -> None:
    # A list on one line, a second line, and a lower-case name that the reader upper-cases.
    router = make_router(route("m", 'method "GET" "HEAD"', 'method "POST"', 'method "delete"'))
    assert matched(router, request(method=method)) == expected


def test_config_methods_are_upper_cased() -> None:
    config = load(route("m", 'method "get" "Post"'))
    assert config.routes[0].matches.methods == ("GET", "POST")


# -- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v2/users", "regex"),
        ("/v10/", "regex"),
        ("/prefix/v3/x", "regex"),  # search, not match: the pattern is not anchored
        ("/api/vx/users", None),
        ("/api/v2", None),
    ],
)
def test_path_regex_is_an_unanchored_search(path: str, expected: str | None) -> None:
    router = make_router(route("regex", 'path-regex "/v[0-9]+/"'))
    assert matched(router, request(path)) == expected


def test_anchored_path_regex() -> None:
    router = make_router(route("regex", 'path-regex "^/v[0-9]+/$"'))
    assert matched(router, request("/v1/")) == "regex"
    assert matched(router, request("/api/v1/")) is None
    assert matched(router, request("/v1/x")) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/", "prefix"), ("/api/x/y", "prefix"), ("/api", None), ("/apix/", None), ("/", None)],
)
def test_path_prefix(path: str, expected: str | None) -> None:
    router = make_router(route("prefix", 'path-prefix "/api/"'))
    assert matched(router, request(path)) == expected


def test_query_is_not_part_of_the_path() -> None:
    router = make_router(route("exact", 'path "/search"'))
    assert matched(router, request("/search", query="q=1")) == "exact"
    assert matched(router, request("/search?q=1")) is None


# -- the listener's default route -------------------------------------------------------------------


def test_default_route_when_nothing_matches() -> None:
    router = make_router(
        route("api", 'path-prefix "/api/"'),
        route("fallback", 'path "/never-requested"'),
        default_route="fallback",
    )
    assert router.default is not None
    assert router.default.config.id == "fallback"
    assert matched(router, request("/api/x")) == "api"
    assert matched(router, request("/elsewhere")) == "fallback"


def test_no_default_route_means_none() -> None:
    router = make_router(route("api", 'path-prefix "/api/"'))
    assert router.default is None
    assert router.match(request("/elsewhere")) is None


def test_matching_routes_beat_the_default_route_regardless_of_priority() -> None:
    router = make_router(
        route("fallback", priority="critical"),
        route("api", 'path-prefix "/api/"', priority="low"),
        default_route="api",
    )
    # The default route is only a fallback: "fallback" matches everything and has the higher priority.
    assert matched(router, request("/api/x")) == "fallback"


def test_default_route_is_the_listeners() -> None:
    config = load_config_text(
        'listeners {\n    listener "a" {\n        address "127.0.0.1:8080"\n        default-route "one"\n    }\n'
        + '    listener "b" {\n        address "127.0.0.1:8081"\n        default-route "two"\n    }\n'
        + '    listener "c" {\n        address "127.0.0.1:8082"\n    }\n}\n'
        + "routes {\n"
        + route("one", 'path "/1"')
        + "\n"
        + route("two", 'path "/2"')
        + "\n}\n",
        "router.kdl",
    )
    routers = {listener.id: Router(config, listener) for listener in config.listeners}
    assert matched(routers["a"], request("/3")) == "one"
    assert matched(routers["b"], request("/3")) == "two"
    assert matched(routers["c"], request("/3")) is None
    assert matched(routers["c"], request("/2")) == "two"


# -- route templates (http.route, SPEC §6.4) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "template"),
    [
        (('path-prefix "/api/"',), "/api/*"),
        (('path-prefix "/api/v1/"', 'method "GET"'), "/api/v1/*"),
        (('path "/health"',), "/health"),
        (('path "/users"', 'method "POST"', 'host "example.com"'), "/users"),
        (('path-regex "^/v[0-9]+/"',), "^/v[0-9]+/"),
        (('path "/health"', 'path "/healthz"'), None),
        (('path-prefix "/a/"', 'path-prefix "/b/"'), None),
        (('path "/a"', 'path-prefix "/b/"'), None),
        (('path "/a"', 'path-regex "^/b"'), None),
        (('path-prefix "/a/"', 'path-regex "^/b"'), None),
        (('host "example.com"',), None),
        ((), None),
    ],
)
def test_route_template(conditions: tuple[str, ...], template: str | None) -> None:
    config = load(route("r", *conditions))
    assert route_template(config.routes[0].matches) == template
    compiled = Router(config, config.listeners[0]).routes[0]
    assert compiled.template == template
