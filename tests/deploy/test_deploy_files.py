"""deploy/ holds ready files (SPEC §10): a Dockerfile and the tracing guide's Jaeger and Tempo setups.

Nothing here runs Docker or touches the network. What can break silently is checked instead: every YAML
file parses, every file a compose file mounts or builds exists, the configs agree with each other (host
names, sockets, log paths, Grafana datasource uids), every metric a dashboard or a datasource link
queries is one Sentinel exports, every sentinel.kdl passes `sentinel test`, and the Dockerfile has the
non-root user, ports, entrypoint and COPY sources it promises.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO
from tests.support.client import request
from tests.support.metrics import scrape
from tests.support.process import sentinel, wait_for

DEPLOY = REPO / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
COMPOSE_FILES = sorted(DEPLOY.rglob("docker-compose.yml"))
KDL_FILES = sorted(DEPLOY.rglob("*.kdl"))
DATASOURCE_FILES = sorted(DEPLOY.rglob("grafana-datasources.yaml"))
DASHBOARDS = sorted(DEPLOY.rglob("dashboards/*.json"))
DOCKERFILE = DEPLOY / "Dockerfile"
# The image copies examples/ to /app/examples (deploy/Dockerfile): compose commands name them there.
IMAGE_APP_DIR = PurePosixPath("/app")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_setups_are_there() -> None:
    assert DOCKERFILE.is_file()
    assert {p.parent.name for p in COMPOSE_FILES} == {"jaeger", "tempo"}
    assert (DEPLOY / "tempo" / "tempo.yaml").is_file()
    assert [p.parent.name for p in DATASOURCE_FILES] == ["tempo"]
    assert DASHBOARDS


# --- YAML and compose files ------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=[rel(p) for p in YAML_FILES])
def test_yaml_file_parses(path: Path) -> None:
    data = load_yaml(path)
    assert isinstance(data, dict), f"{rel(path)}: not a mapping"
    if path.name == "docker-compose.yml":
        assert isinstance(data.get("services"), dict)
        assert data["services"]


def services(compose: Path) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = load_yaml(compose)["services"]
    return data


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume, short form `SRC:DST[:MODE]` or long form."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            yield source, target
        else:
            yield volume.get("source", ""), volume["target"]


def is_host_path(source: str) -> bool:
    return source.startswith(("./", "../", "/"))


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=[rel(p) for p in COMPOSE_FILES])
def test_compose_sources_exist(compose: Path) -> None:
    """Bind-mounted files, build contexts and Dockerfiles exist; named volumes are declared; the
    example scripts the services run from the image are in the repository."""
    data = load_yaml(compose)
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        assert "image" in service or "build" in service, name
        for source, _ in volume_mounts(service):
            if is_host_path(source):
                assert (compose.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build is not None:
            context = compose.parent / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile}"
        for arg in [*service.get("entrypoint", []), *service.get("command", [])]:
            if arg.startswith(f"{IMAGE_APP_DIR}/"):
                assert (REPO / PurePosixPath(arg).relative_to(IMAGE_APP_DIR)).is_file(), f"{name}: {arg}"


def mount_of(service: dict[str, Any], target: str) -> str | None:
    """The source mounted at `target` (or at a parent of it) in the service."""
    for source, mounted in volume_mounts(service):
        if target == mounted or target.startswith(mounted.rstrip("/") + "/"):
            return source
    return None


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=[rel(p) for p in COMPOSE_FILES])
def test_compose_agrees_with_its_sentinel_config(compose: Path) -> None:
    """The sentinel.kdl next to a compose file is the one Sentinel runs, and the hosts it names (upstream
    targets, trace endpoint) are services of that compose file, as are the other services' OTLP endpoints;
    each agent socket is on a volume some other service mounts at the same place and listens on."""
    kdl = compose.parent / "sentinel.kdl"
    text = kdl.read_text()
    svc = services(compose)
    assert mount_of(svc["sentinel"], "/etc/sentinel/sentinel.kdl") == "./sentinel.kdl"
    hosts = re.findall(r'^\s*target "([^":]+):\d+"', text, re.M)
    hosts += re.findall(r'^\s*endpoint "https?://([^":/]+)', text, re.M)
    assert hosts
    for host in hosts:
        assert host in svc, f"{rel(kdl)} names {host}, not a service of {rel(compose)}"
    for name, service in svc.items():  # the backend's and the agents' own span export
        for env in service.get("environment", []):
            key, _, value = env.partition("=")
            if key == "OTEL_EXPORTER_OTLP_ENDPOINT":
                assert re.sub(r"^https?://|:\d+$", "", value) in svc, f"{name}: {env}"
    for socket_path in re.findall(r'unix-socket path="([^"]+)"', text):
        volume = mount_of(svc["sentinel"], socket_path)
        assert volume is not None, f"{socket_path} is not on a volume of the sentinel service"
        agents = [
            name
            for name, service in svc.items()
            if name != "sentinel" and socket_path in service.get("entrypoint", []) + service.get("command", [])
        ]
        assert len(agents) == 1, f"no single service listens on {socket_path}"
        assert mount_of(svc[agents[0]], socket_path) == volume


def test_tempo_logs_reach_loki() -> None:
    """Sentinel's log files are on a volume promtail reads, under promtail's path glob, with the label
    Tempo's trace-to-logs query selects."""
    here = DEPLOY / "tempo"
    svc = services(here / "docker-compose.yml")
    text = (here / "sentinel.kdl").read_text()
    files = re.findall(r'^\s*file "([^"]+)"', text, re.M)
    assert len(files) == 2  # the application log and the access log
    promtail = load_yaml(here / "promtail.yaml")
    [static] = promtail["scrape_configs"][0]["static_configs"]
    labels = static["labels"]
    for path in files:
        volume = mount_of(svc["sentinel"], path)
        assert volume is not None
        assert not is_host_path(volume)
        assert mount_of(svc["promtail"], path) == volume
        assert fnmatch(path, labels["__path__"])
    assert promtail["clients"][0]["url"].startswith("http://loki:3100/")
    [tempo] = [d for d in load_yaml(here / "grafana-datasources.yaml")["datasources"] if d["type"] == "tempo"]
    query = tempo["jsonData"]["tracesToLogsV2"]["query"]
    assert f'job="{labels["job"]}"' in query
    assert "${__trace.traceId}" in query.replace("$$", "$")


def test_tempo_prometheus_scrapes_sentinel_with_exemplars() -> None:
    here = DEPLOY / "tempo"
    svc = services(here / "docker-compose.yml")
    assert "--enable-feature=exemplar-storage" in svc["prometheus"]["command"]
    config = load_yaml(here / "prometheus.yaml")
    # Exemplars are only in OpenMetrics: it must be what Prometheus asks for first.
    assert config["global"]["scrape_protocols"][0].startswith("OpenMetricsText")
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    metrics_port = re.search(r'metrics \{[^}]*address "[^"]*:(\d+)"', (here / "sentinel.kdl").read_text())
    assert metrics_port is not None
    assert f"sentinel:{metrics_port.group(1)}" in targets
    tempo = load_yaml(here / "tempo.yaml")
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    remote = tempo["metrics_generator"]["storage"]["remote_write"][0]["url"]
    assert remote.startswith("http://prometheus:9090/")
    assert "--web.enable-remote-write-receiver" in svc["prometheus"]["command"]


# --- Grafana -----------------------------------------------------------------------------------------


def find_key(node: Any, key: str) -> Iterator[Any]:
    """Every value of `key` anywhere in a nested YAML/JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find_key(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from find_key(item, key)


def datasource_uids(path: Path) -> dict[str, str]:
    """uid → type of the datasources a provisioning file defines."""
    return {d["uid"]: d["type"] for d in load_yaml(path)["datasources"]}


@pytest.mark.parametrize("path", DATASOURCE_FILES, ids=[rel(p) for p in DATASOURCE_FILES])
def test_datasource_links_resolve(path: Path) -> None:
    datasources = load_yaml(path)["datasources"]
    uids = datasource_uids(path)
    assert len(uids) == len(datasources), "every datasource needs its own fixed uid"
    referenced = list(find_key(datasources, "datasourceUid"))
    assert referenced
    for uid in referenced:
        assert uid in uids, f"{uid} is not a datasource of {rel(path)}"
    by_type = {d["type"]: d for d in datasources}
    tempo = by_type["tempo"]["jsonData"]
    assert uids[tempo["tracesToLogsV2"]["datasourceUid"]] == "loki"
    assert uids[tempo["tracesToMetrics"]["datasourceUid"]] == "prometheus"
    assert uids[tempo["serviceMap"]["datasourceUid"]] == "prometheus"
    [derived] = by_type["loki"]["jsonData"]["derivedFields"]
    assert uids[derived["datasourceUid"]] == "tempo"
    [destination] = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert uids[destination["datasourceUid"]] == "tempo"


ACCESS_LOG_LINE = (  # docs/logs-and-metrics.md's example line
    '{"timestamp":"2026-11-25T17:47:10.622Z","trace_id":"19fd1c2774ad74e1269afdf3a110c3da",'
    '"span_id":"48df2c5e705a3e99","method":"GET","path":"/x","status":200}'
)


def test_loki_derived_field_extracts_the_trace_id() -> None:
    [loki] = [d for d in load_yaml(DEPLOY / "tempo" / "grafana-datasources.yaml")["datasources"] if d["type"] == "loki"]
    [derived] = loki["jsonData"]["derivedFields"]
    # Grafana runs the regex in the browser (JavaScript); this one means the same in Python.
    match = re.search(derived["matcherRegex"], ACCESS_LOG_LINE)
    assert match is not None
    assert match.group(1) == "19fd1c2774ad74e1269afdf3a110c3da"
    assert derived["url"].replace("$$", "$") == "${__value.raw}"


def test_dashboards_are_provisioned() -> None:
    here = DEPLOY / "tempo"
    grafana = services(here / "docker-compose.yml")["grafana"]
    [provider] = load_yaml(here / "grafana-dashboards.yaml")["providers"]
    source = mount_of(grafana, provider["options"]["path"])
    assert source is not None
    assert sorted((here / source).glob("*.json")) == [p for p in DASHBOARDS if p.is_relative_to(here)]
    assert mount_of(grafana, "/etc/grafana/provisioning/dashboards/dashboards.yaml") == "./grafana-dashboards.yaml"
    assert mount_of(grafana, "/etc/grafana/provisioning/datasources/datasources.yaml") == "./grafana-datasources.yaml"


# --- PromQL in dashboards and datasource links ----------------------------------------------------------

_PROMQL_NOISE = (
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings
    re.compile(r"\{[^}]*\}"),  # label matchers (and Grafana's {$__tags})
    re.compile(r"\[[^\]]*\]"),  # range selectors
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),  # label lists
)
_PROMQL_WORD = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (words that are not functions, keywords or labels)."""
    for noise in _PROMQL_NOISE:
        expr = noise.sub(" ", expr)
    return {
        m.group(1) for m in _PROMQL_WORD.finditer(expr) if not m.group(2) and m.group(1).lower() not in _PROMQL_KEYWORDS
    }


def test_metric_names_of_an_expression() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{r=~"x|y"}[$__rate_interval]))) / b > bool 1e3'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("sum(rate(c_total{$__tags}[5m])) or on (x) vector(0)") == {"c_total"}


def exported_names(exposition: str) -> set[str]:
    """Every series name the families of an exposition can produce."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in suffixes.get(family.type, ("",))
    }


# Families are taken from a real scrape rather than from the table in docs/logs-and-metrics.md: Sentinel
# renders every family on every scrape (a labelled family with no samples yet still has its HELP and TYPE
# lines), so an idle proxy lists them all, and a scrape cannot drift from the code the way a table can.
# The config still has an agent (whose socket is missing) and a trace exporter (to a collector that is not
# there), and one sampled request goes through them to an upstream that refuses it (502), so that the
# agent, upstream and exporter families have samples too and the OpenMetrics scrape carries an exemplar
# (builtin routes such as /health are not traced, so they leave none).
SCRAPE_CONFIG = """
system {
    worker-threads 1
}
listeners {
    listener "http" {
        address "127.0.0.1:0"
    }
}
routes {
    route "api" {
        matches {
            path-prefix "/api/"
        }
        upstream "backend"
        agents "auth"
    }
    route "health" {
        priority 1000
        matches {
            path "/health"
        }
        builtin-handler "health"
    }
}
upstreams {
    upstream "backend" {
        target "127.0.0.1:9"
    }
}
agents {
    agent "auth" {
        unix-socket path="SOCKET"
        timeout-ms 50
    }
}
observability {
    tracing {
        backend "otlp" {
            endpoint "http://127.0.0.1:9"
        }
        sampling-rate 1.0
    }
    metrics {
        enabled #true
        address "127.0.0.1:0"
    }
}
"""


@pytest.fixture(scope="module")
def expositions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(Prometheus text, OpenMetrics) scraped from a running Sentinel after one sampled proxied request."""
    tmp = tmp_path_factory.mktemp("scrape")
    config = SCRAPE_CONFIG.replace("SOCKET", str(tmp / "auth.sock"))
    with sentinel(tmp, config) as proc:
        wait_for(lambda: proc.metrics_port != 0, what="the metrics endpoint")
        assert request(proc.port, path="/api/users").status == 502

        def has_exemplar() -> bool:
            return "# {" in scrape(proc.metrics_port, "application/openmetrics-text").body.decode()

        wait_for(has_exemplar, what="an exemplar")
        text = scrape(proc.metrics_port).body.decode()
        openmetrics = scrape(proc.metrics_port, "application/openmetrics-text").body.decode()
    return text, openmetrics


def promql_exprs() -> Iterator[tuple[str, str]]:
    """(where, expression) of every PromQL query under deploy/: dashboard targets, datasource links."""
    for path in DASHBOARDS:
        for n, expr in enumerate(find_key(json.loads(path.read_text()), "expr"), 1):
            yield f"{rel(path)}#{n}", expr
    for path in DATASOURCE_FILES:
        for ds in load_yaml(path)["datasources"]:
            for n, query in enumerate(ds.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []), 1):
                yield f"{rel(path)}#{ds['uid']}-{n}", query["query"].replace("$$", "$")


PROMQL = list(promql_exprs())


@pytest.mark.parametrize(("where", "expr"), PROMQL, ids=[w for w, _ in PROMQL])
def test_promql_uses_exported_metrics(where: str, expr: str, expositions: tuple[str, str]) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr}"
    unknown = names - exported_names(expositions[0])
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by Sentinel"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus` (./dev test does so when root)")
    return path


def test_promql_parses(tmp_path: Path) -> None:
    """Every query is valid PromQL: promtool parses them as recording rules (Grafana's variables replaced)."""
    rules = [
        {"record": f"deploy:query_{n}", "expr": expr.replace("$__rate_interval", "1m").replace("{$__tags}", "")}
        for n, (_, expr) in enumerate(PROMQL)
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "deploy", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config = load_yaml(DEPLOY / "tempo" / "prometheus.yaml")
    # scrape_protocols came with Prometheus 2.49 (the compose file runs 2.53); Debian 12's promtool is 2.42.
    config["global"].pop("scrape_protocols")
    path = tmp_path / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run([promtool(), "check", "config", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_exemplar_label_is_the_datasource_destination(expositions: tuple[str, str]) -> None:
    [prometheus] = [
        d for d in load_yaml(DEPLOY / "tempo" / "grafana-datasources.yaml")["datasources"] if d["type"] == "prometheus"
    ]
    [destination] = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    bucket_with_exemplar = r'^sentinel_request_duration_seconds_bucket\{.*\} \S+ # \{(\w+)="([0-9a-f]{32})"\}'
    exemplar = re.search(bucket_with_exemplar, expositions[1], re.M)
    assert exemplar is not None, expositions[1]
    assert exemplar.group(1) == destination["name"]


DASHBOARD_FAMILIES = {  # what deploy/tempo's dashboard promises to show
    "sentinel_requests_total",
    "sentinel_request_duration_seconds_bucket",
    "sentinel_active_requests",
    "sentinel_open_connections",
    "sentinel_upstream_requests_total",
    "sentinel_upstream_failures_total",
    "sentinel_upstream_target_healthy",
    "sentinel_agent_latency_seconds_bucket",
    "sentinel_agent_requests_total",
    "sentinel_agent_timeouts_total",
    "sentinel_agent_errors_total",
    "sentinel_blocked_requests_total",
    "otel_exporter_spans_exported_total",
    "otel_exporter_spans_failed_total",
    "otel_exporter_spans_dropped_total",
    "otel_exporter_queue_size",
}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[rel(p) for p in DASHBOARDS])
def test_dashboard(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    uids = datasource_uids(path.parent.parent / "grafana-datasources.yaml")
    for ds in find_key(dashboard, "datasource"):
        assert ds["uid"] in uids, f"panel datasource {ds} is not provisioned"
    targets = list(find_key(dashboard, "targets"))
    used = {name for ts in targets for t in ts for name in metric_names(t["expr"])}
    assert used >= DASHBOARD_FAMILIES, sorted(DASHBOARD_FAMILIES - used)
    exemplars = [t for ts in targets for t in ts if t.get("exemplar")]
    assert any("sentinel_request_duration_seconds_bucket" in t["expr"] for t in exemplars)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- sentinel.kdl and the Dockerfile --------------------------------------------------------------------


# Every deploy/**/*.kdl passes `sentinel test`: tests/docs/test_kdl_snippets.py checks all .kdl files.


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def dockerignore_excludes(rules: list[str], path: str) -> bool:
    """Whether a .dockerignore excludes `path`: the last rule matching it or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerfile() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    args = {kw: [a for k, a in instructions if k == kw] for kw, _ in instructions}
    assert all(a.startswith("python:3.11-slim") for a in args["FROM"])
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    users = [a for k, a in instructions[last_from:] if k == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert {"8080", "9090"} <= {port for a in args["EXPOSE"] for port in a.split()}
    assert json.loads(args["ENTRYPOINT"][-1]) == ["sentinel"]
    assert json.loads(args["CMD"][-1]) == ["--config", "/etc/sentinel/sentinel.kdl"]
    installs = [a for a in args["RUN"] if "pip install" in a]
    assert installs
    assert all("-c constraints.txt" in a and ".[agents]" in a and "test" not in a for a in installs)

    ignore = DEPLOY / "Dockerfile.dockerignore"
    rules = [r.strip() for r in ignore.read_text().splitlines() if r.strip() and not r.startswith("#")]
    copies = [a.split() for k, a in instructions if k in {"COPY", "ADD"}]
    assert copies
    for words in copies:
        if any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the build context"
            assert not dockerignore_excludes(rules, source.rstrip("/")), f"COPY {source}: excluded by {rel(ignore)}"
    for unwanted in (".venv", ".git", "tests", "src/sentinel/__pycache__"):
        assert dockerignore_excludes(rules, unwanted), unwanted
