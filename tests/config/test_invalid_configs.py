"""Bad configurations: each one is refused with a message that names the problem and where it is.

Every case is a whole config file. `line` is the line the message must point at, `path` the node path
it must name and `words` what it must say.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest

from sentinel.config import ConfigError, load_config_file

OK_LISTENERS = 'listeners {\n    listener "http" { address "127.0.0.1:8080"; }\n}\n'


class Case:
    def __init__(self, name: str, kdl: str, *, line: int | None, path: str, words: tuple[str, ...]) -> None:
        self.name = name
        self.kdl = dedent(kdl).lstrip("\n")
        self.line = line
        self.path = path
        self.words = words


CASES = [
    # -- document and top level --------------------------------------------------------------------
    Case(
        "unknown top-level block",
        OK_LISTENERS + "routez {\n}\n",
        line=4,
        path="routez",
        words=('unknown top-level block "routez"', 'did you mean "routes"', "valid blocks"),
    ),
    Case(
        "no listeners block",
        "system {\n    worker-threads 1\n}\n",
        line=None,
        path="",
        words=('missing "listeners" block',),
    ),
    Case(
        "empty listeners block",
        "listeners {\n}\n",
        line=1,
        path="listeners",
        words=("at least one listener",),
    ),
    Case(
        "duplicate top-level block",
        OK_LISTENERS + "limits {\n}\nlimits {\n}\n",
        line=6,
        path="limits",
        words=("appears more than once", "line 4"),
    ),
    Case(
        "system and server both",
        OK_LISTENERS + "system {\n}\nserver {\n}\n",
        line=6,
        path="server",
        words=("appears more than once",),
    ),
    Case(
        "top-level block with a value",
        OK_LISTENERS + 'limits "x" {\n}\n',
        line=4,
        path="limits",
        words=("takes no values",),
    ),
    # -- system ------------------------------------------------------------------------------------
    Case(
        "unknown trace-id-format",
        OK_LISTENERS + 'system {\n    trace-id-format "snowflake"\n}\n',
        line=5,
        path="system > trace-id-format",
        words=('unknown trace-id-format "snowflake"', "tinyflake", "uuid"),
    ),
    Case(
        "worker-threads is a string",
        OK_LISTENERS + 'system {\n    worker-threads "4"\n}\n',
        line=5,
        path="system > worker-threads",
        words=("must be an integer", 'string "4"'),
    ),
    Case(
        "negative worker-threads",
        OK_LISTENERS + "system {\n    worker-threads -1\n}\n",
        line=5,
        path="system > worker-threads",
        words=("at least 0",),
    ),
    Case(
        "unknown system key",
        OK_LISTENERS + "system {\n    worker-thread 2\n}\n",
        line=5,
        path="system > worker-thread",
        words=('unknown key "worker-thread"', 'did you mean "worker-threads"'),
    ),
    Case(
        "repeated key",
        OK_LISTENERS + "system {\n    worker-threads 2\n    worker-threads 3\n}\n",
        line=6,
        path="system > worker-threads",
        words=("more than once", "line 5"),
    ),
    Case(
        "two values for a scalar",
        OK_LISTENERS + "system {\n    worker-threads 2 3\n}\n",
        line=5,
        path="system > worker-threads",
        words=("exactly one value", "got 2"),
    ),
    # -- listeners ---------------------------------------------------------------------------------
    Case(
        "listener without address",
        'listeners {\n    listener "http" {\n        protocol "http"\n    }\n}\n',
        line=2,
        path='listeners > listener "http"',
        words=('missing required key "address"',),
    ),
    Case(
        "listener address without port",
        'listeners {\n    listener "http" { address "0.0.0.0"; }\n}\n',
        line=2,
        path='listeners > listener "http" > address',
        words=("is not HOST:PORT",),
    ),
    Case(
        "listener port out of range",
        'listeners {\n    listener "http" { address "0.0.0.0:70000"; }\n}\n',
        line=2,
        path='listeners > listener "http" > address',
        words=("between 0 and 65535",),
    ),
    Case(
        "listener h2",
        'listeners {\n    listener "h" {\n        address "0.0.0.0:80"\n        protocol "h2"\n    }\n}\n',
        line=4,
        path='listener "h" > protocol',
        words=('protocol "h2"', "not supported"),
    ),
    Case(
        "listener unknown protocol",
        'listeners {\n    listener "h" {\n        address "0.0.0.0:80"\n        protocol "ftp"\n    }\n}\n',
        line=4,
        path='listener "h" > protocol',
        words=('unknown protocol "ftp"', "http, https"),
    ),
    Case(
        "https without tls",
        'listeners {\n    listener "s" {\n        address "0.0.0.0:443"\n        protocol "https"\n    }\n}\n',
        line=2,
        path='listener "s"',
        words=("needs a tls",),
    ),
    Case(
        "tls without key-file",
        'listeners {\n    listener "s" {\n        address "0.0.0.0:443"\n        protocol "https"\n'
        '        tls {\n            cert-file "/c.pem"\n        }\n    }\n}\n',
        line=5,
        path='listener "s" > tls',
        words=('missing required key "key-file"',),
    ),
    Case(
        "listener without id",
        'listeners {\n    listener {\n        address "0.0.0.0:80"\n    }\n}\n',
        line=2,
        path="listeners > listener",
        words=("needs exactly one non-empty string id",),
    ),
    Case(
        "duplicate listener id",
        'listeners {\n    listener "a" { address "127.0.0.1:1"; }\n    listener "a" { address "127.0.0.1:2"; }\n}\n',
        line=3,
        path='listener "a"',
        words=('listener "a" is defined more than once', "line 2"),
    ),
    Case(
        "listeners on the same address",
        'listeners {\n    listener "a" { address "0.0.0.0:80"; }\n    listener "b" { address "127.0.0.1:80"; }\n}\n',
        line=3,
        path='listener "b"',
        words=('collides with listener "a"',),
    ),
    Case(
        "default-route not defined",
        'listeners {\n    listener "a" {\n        address "0.0.0.0:80"\n        default-route "nope"\n    }\n}\n',
        line=2,
        path='listener "a"',
        words=('default-route "nope" is not a route',),
    ),
    Case(
        "unknown listener key",
        'listeners {\n    listener "a" {\n        address "0.0.0.0:80"\n        keepalive-timeout 5\n    }\n}\n',
        line=4,
        path='listener "a" > keepalive-timeout',
        words=('did you mean "keepalive-timeout-secs"',),
    ),
    # -- routes ------------------------------------------------------------------------------------
    Case(
        "route upstream not defined",
        OK_LISTENERS + 'routes {\n    route "api" {\n        upstream "backend"\n    }\n}\n',
        line=5,
        path='routes > route "api"',
        words=('upstream "backend" is not defined',),
    ),
    Case(
        "route agent not defined",
        OK_LISTENERS + 'routes {\n    route "api" {\n        builtin-handler "health"\n'
        '        agents "auth"\n    }\n}\n',
        line=5,
        path='route "api"',
        words=('agent "auth" is not defined',),
    ),
    Case(
        "route filter not defined",
        OK_LISTENERS + 'routes {\n    route "api" {\n        builtin-handler "health"\n'
        '        filters "f1"\n    }\n}\n',
        line=5,
        path='route "api"',
        words=('filter "f1" is not defined',),
    ),
    Case(
        "route without upstream or handler",
        OK_LISTENERS + 'routes {\n    route "api" {\n        priority 5\n    }\n}\n',
        line=5,
        path='route "api"',
        words=("needs an upstream",),
    ),
    Case(
        "unknown builtin handler",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "healthz"\n    }\n}\n',
        line=6,
        path='route "x" > builtin-handler',
        words=('unknown builtin-handler "healthz"', 'did you mean "health"'),
    ),
    Case(
        "bad priority name",
        OK_LISTENERS + 'routes {\n    route "x" {\n        priority "urgent"\n'
        '        builtin-handler "health"\n    }\n}\n',
        line=6,
        path='route "x" > priority',
        words=('unknown priority "urgent"', "critical"),
    ),
    Case(
        "priority is a float",
        OK_LISTENERS + 'routes {\n    route "x" {\n        priority 1.5\n        builtin-handler "health"\n    }\n}\n',
        line=6,
        path='route "x" > priority',
        words=("must be an integer",),
    ),
    Case(
        "bad path regex",
        OK_LISTENERS + 'routes {\n    route "x" {\n        matches {\n            path-regex "^/v[0-9"\n'
        '        }\n        builtin-handler "health"\n    }\n}\n',
        line=7,
        path='route "x" > matches > path-regex',
        words=("invalid regular expression",),
    ),
    Case(
        "path without slash",
        OK_LISTENERS + 'routes {\n    route "x" {\n        matches {\n            path "health"\n'
        '        }\n        builtin-handler "health"\n    }\n}\n',
        line=7,
        path="matches > path",
        words=('must start with "/"',),
    ),
    Case(
        "unknown match kind",
        OK_LISTENERS + 'routes {\n    route "x" {\n        matches {\n            path_prefix "/a"\n'
        '        }\n        builtin-handler "health"\n    }\n}\n',
        line=7,
        path="matches > path_prefix",
        words=('did you mean "path-prefix"',),
    ),
    Case(
        "header match with three values",
        OK_LISTENERS + 'routes {\n    route "x" {\n        matches {\n'
        '            header "a" "b" "c"\n        }\n        builtin-handler "health"\n    }\n}\n',
        line=7,
        path="matches > header",
        words=("a name and an optional value",),
    ),
    Case(
        "host with a port",
        OK_LISTENERS + 'routes {\n    route "x" {\n        matches {\n            host "example.com:8080"\n'
        '        }\n        builtin-handler "health"\n    }\n}\n',
        line=7,
        path="matches > host",
        words=('host "example.com:8080" is not a host name',),
    ),
    Case(
        "upstream and builtin",
        OK_LISTENERS + 'routes {\n    route "x" {\n        upstream "u"\n'
        '        builtin-handler "health"\n    }\n}\nupstreams {\n    upstream "u" { target "127.0.0.1:1"; }\n}\n',
        line=5,
        path='route "x"',
        words=("not both",),
    ),
    Case(
        "service-type builtin without handler",
        OK_LISTENERS + 'routes {\n    route "x" {\n        service-type "builtin"\n    }\n}\n',
        line=5,
        path='route "x"',
        words=("needs builtin-handler",),
    ),
    Case(
        "service-type static",
        OK_LISTENERS + 'routes {\n    route "x" {\n        service-type "static"\n'
        '        builtin-handler "health"\n    }\n}\n',
        line=6,
        path='route "x" > service-type',
        words=('service-type "static"', "not supported"),
    ),
    Case(
        "sampling rate above 1",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "health"\n'
        "        tracing {\n            sampling-rate 1.5\n        }\n    }\n}\n",
        line=8,
        path='route "x" > tracing > sampling-rate',
        words=("at most 1.0",),
    ),
    Case(
        "tracing with a string",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "health"\n        tracing "off"\n    }\n}\n',
        line=7,
        path='route "x" > tracing',
        words=("#true, #false",),
    ),
    Case(
        "bad header op",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "health"\n'
        '        policies {\n            request-headers {\n                replace "a" "b"\n'
        "            }\n        }\n    }\n}\n",
        line=9,
        path="request-headers > replace",
        words=('unknown header operation "replace"',),
    ),
    Case(
        "set with one value",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "health"\n'
        '        policies {\n            response-headers {\n                set "a"\n'
        "            }\n        }\n    }\n}\n",
        line=9,
        path="response-headers > set",
        words=("a header name and a value",),
    ),
    Case(
        "duplicate route id",
        OK_LISTENERS + 'routes {\n    route "x" { builtin-handler "health"; }\n'
        '    route "x" { builtin-handler "status"; }\n}\n',
        line=6,
        path='route "x"',
        words=("defined more than once", "line 5"),
    ),
    Case(
        "retry max-attempts zero",
        OK_LISTENERS + 'routes {\n    route "x" {\n        builtin-handler "health"\n'
        "        retry {\n            max-attempts 0\n        }\n    }\n}\n",
        line=8,
        path="retry > max-attempts",
        words=("at least 1",),
    ),
    # -- upstreams ---------------------------------------------------------------------------------
    Case(
        "upstream without targets",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n    }\n}\n',
        line=5,
        path='upstreams > upstream "u"',
        words=("at least one target",),
    ),
    Case(
        "unknown load balancing",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:1"\n'
        '        load-balancing "least_conn"\n    }\n}\n',
        line=7,
        path='upstream "u" > load-balancing',
        words=('unknown load-balancing "least_conn"', "least_connections"),
    ),
    Case(
        "target weight zero",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:1" weight=0\n    }\n}\n',
        line=6,
        path='upstream "u" > target',
        words=("weight must be an integer from 1",),
    ),
    Case(
        "target without port",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "backend"\n    }\n}\n',
        line=6,
        path='upstream "u" > target',
        words=("is not HOST:PORT",),
    ),
    Case(
        "target port zero",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:0"\n    }\n}\n',
        line=6,
        path='upstream "u" > target',
        words=("between 1 and 65535",),
    ),
    Case(
        "targets block with bad child",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        targets {\n'
        '            target {\n                address "127.0.0.1:1"\n                weigth 2\n            }\n'
        "        }\n    }\n}\n",
        line=9,
        path="target > weigth",
        words=('did you mean "weight"',),
    ),
    Case(
        "health check unknown type",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:1"\n'
        '        health-check {\n            type "grpc"\n        }\n    }\n}\n',
        line=8,
        path="health-check > type",
        words=('unknown type "grpc"', "http, tcp"),
    ),
    Case(
        "health check expected-status string",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n'
        '        target "127.0.0.1:1"\n        health-check {\n            type "http" {\n'
        '                expected-status "200"\n            }\n        }\n    }\n}\n',
        line=9,
        path="type > expected-status",
        words=("must be an integer",),
    ),
    Case(
        "duplicate target",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:1"\n'
        '        target "127.0.0.1:1"\n    }\n}\n',
        line=5,
        path='upstream "u"',
        words=("more than once",),
    ),
    Case(
        "bad hash-key",
        OK_LISTENERS + 'upstreams {\n    upstream "u" {\n        target "127.0.0.1:1"\n'
        '        hash-key "cookie:x"\n    }\n}\n',
        line=7,
        path='upstream "u" > hash-key',
        words=('"header:NAME"',),
    ),
    # -- agents and filters ------------------------------------------------------------------------
    Case(
        "agent without transport",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n        timeout-ms 50\n    }\n}\n',
        line=5,
        path='agents > agent "auth"',
        words=("needs a transport",),
    ),
    Case(
        "agent unknown event",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n        unix-socket path="/tmp/a.sock"\n'
        '        events "request_header"\n    }\n}\n',
        line=7,
        path='agent "auth" > events',
        words=('unknown events "request_header"', 'did you mean "request_headers"'),
    ),
    Case(
        "agent unknown failure mode",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n'
        '        unix-socket path="/tmp/a.sock"\n        failure-mode "ignore"\n    }\n}\n',
        line=7,
        path='agent "auth" > failure-mode',
        words=('unknown failure-mode "ignore"',),
    ),
    Case(
        "agent timeout zero",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n        unix-socket path="/tmp/a.sock"\n'
        "        timeout-ms 0\n    }\n}\n",
        line=7,
        path='agent "auth" > timeout-ms',
        words=("at least 1",),
    ),
    Case(
        "agent grpc transport",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n        grpc address="http://127.0.0.1:50051"\n    }\n}\n',
        line=6,
        path='agent "auth" > grpc',
        words=("not supported", "unix-socket"),
    ),
    Case(
        "agent bad protocol version",
        OK_LISTENERS + 'agents {\n    agent "auth" {\n'
        '        unix-socket path="/tmp/a.sock"\n        protocol-version "v3"\n    }\n}\n',
        line=7,
        path='agent "auth" > protocol-version',
        words=('unknown protocol-version "v3"',),
    ),
    Case(
        "filter of unknown type",
        OK_LISTENERS + 'filters {\n    filter "f" {\n        type "cors"\n    }\n}\n',
        line=6,
        path='filter "f" > type',
        words=('filter type "cors" is not supported',),
    ),
    Case(
        "filter agent not defined",
        OK_LISTENERS + 'filters {\n    filter "f" {\n        type "agent"\n        agent "waf"\n    }\n}\n',
        line=5,
        path='filters > filter "f"',
        words=('agent "waf" is not defined',),
    ),
    # -- limits ------------------------------------------------------------------------------------
    Case(
        "limit is a string",
        OK_LISTENERS + 'limits {\n    max-body-size "10MB"\n}\n',
        line=5,
        path="limits > max-body-size",
        words=("must be an integer",),
    ),
    Case(
        "both spellings of one limit",
        OK_LISTENERS + "limits {\n    max-body-size 10\n    max-body-size-bytes 20\n}\n",
        line=6,
        path="limits > max-body-size-bytes",
        words=("more than once",),
    ),
    # -- observability -----------------------------------------------------------------------------
    Case(
        "tracing without backend",
        OK_LISTENERS + "observability {\n    tracing {\n        sampling-rate 0.5\n    }\n}\n",
        line=5,
        path="observability > tracing",
        words=("needs a backend",),
    ),
    Case(
        "unknown tracing backend",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "datadog" {\n'
        '            endpoint "http://x:1"\n        }\n    }\n}\n',
        line=6,
        path="tracing > backend",
        words=('unknown backend "datadog"', "otlp"),
    ),
    Case(
        "endpoint is not a URL",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            endpoint "localhost:4317"\n        }\n    }\n}\n',
        line=7,
        path="backend > endpoint",
        words=("http:// or https://",),
    ),
    Case(
        "a gRPC exporter header the client sets itself",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            endpoint "http://collector:4317"\n            headers {\n                te "x"\n'
        "            }\n        }\n    }\n}\n",
        line=9,
        path="backend > headers > te",
        words=('header "te"', "set by the gRPC client itself"),
    ),
    Case(
        "a gRPC exporter header that is not ASCII",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            protocol "grpc"\n            headers {\n                x-tenant "caf\u00e9"\n'
        "            }\n        }\n    }\n}\n",
        line=9,
        path="backend > headers > x-tenant",
        words=('header "x-tenant"', "printable ASCII"),
    ),
    Case(
        "an OTLP/HTTP exporter header the exporter sets itself",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            protocol "http/protobuf"\n            headers {\n                Content-Type "x"\n'
        "            }\n        }\n    }\n}\n",
        line=9,
        path="backend > headers > Content-Type",
        words=('header "Content-Type"', "set by the exporter itself"),
    ),
    Case(
        "sampling rate negative",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp"\n        sampling-rate -0.1\n    }\n}\n',
        line=7,
        path="tracing > sampling-rate",
        words=("at least 0.0",),
    ),
    Case(
        "bad OTLP protocol",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            protocol "thrift"\n        }\n    }\n}\n',
        line=7,
        path="backend > protocol",
        words=('unknown protocol "thrift"',),
    ),
    Case(
        "bad compression",
        OK_LISTENERS + 'observability {\n    tracing {\n        backend "otlp" {\n'
        '            compression "zstd"\n        }\n    }\n}\n',
        line=7,
        path="backend > compression",
        words=('unknown compression "zstd"', "gzip"),
    ),
    Case(
        "bad log level",
        OK_LISTENERS + 'observability {\n    logging {\n        level "verbose"\n    }\n}\n',
        line=6,
        path="logging > level",
        words=('unknown level "verbose"',),
    ),
    Case(
        "bad access log format",
        OK_LISTENERS + "observability {\n    logging {\n        access-log {\n"
        '            format "common"\n        }\n    }\n}\n',
        line=7,
        path="access-log > format",
        words=('unknown format "common"', "combined"),
    ),
    Case(
        "v1 boolean",
        OK_LISTENERS + "observability {\n    logging {\n        access-log {\n"
        '            enabled "true"\n        }\n    }\n}\n',
        line=7,
        path="access-log > enabled",
        words=("#true or #false",),
    ),
    Case(
        "metrics collide with listener",
        'listeners {\n    listener "http" { address "0.0.0.0:9090"; }\n}\n'
        'observability {\n    metrics {\n        address "127.0.0.1:9090"\n    }\n}\n',
        line=5,
        path="observability > metrics",
        words=('collides with listener "http"',),
    ),
    Case(
        "metrics path without slash",
        OK_LISTENERS + 'observability {\n    metrics {\n        path "metrics"\n    }\n}\n',
        line=6,
        path="metrics > path",
        words=('must start with "/"',),
    ),
    Case(
        "unknown observability block",
        OK_LISTENERS + "observability {\n    profiling {\n    }\n}\n",
        line=5,
        path="observability > profiling",
        words=('unknown key "profiling"', "logging, metrics, tracing"),
    ),
]


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def _write(text: str) -> Path:
        path = tmp_path / "sentinel.kdl"
        path.write_text(text)
        return path

    return _write


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_config_is_refused_with_a_located_message(case: Case, write: Callable[[str], Path]) -> None:
    path = write(case.kdl)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    issues = info.value.issues
    matching = [i for i in issues if all(w in i.message for w in case.words)]
    assert matching, f"no issue says {case.words}; got:\n{info.value}"
    issue = matching[0]
    assert issue.file == str(path)
    assert case.path in issue.path, f"path {issue.path!r} does not contain {case.path!r}"
    assert issue.line == case.line, f"line {issue.line} != {case.line} for:\n{issue}"
    rendered = str(issue)
    assert rendered.startswith(f"{path}:{case.line}:" if case.line else f"{path}:")
