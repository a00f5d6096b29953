"""The Jaeger query API's JSON (SPEC §9): what Jaeger's UI and Grafana's Jaeger data source read.

Pure functions, no HTTP: the viewer server routes `/api/services`, `/api/services/{s}/operations`,
`/api/operations`, `/api/traces` and `/api/traces/{id}` here. Shapes follow jaeger-query's HTTP handler
(`{"data", "total", "limit", "offset", "errors"}` around every answer) and its UI model; spans are translated
the way the OpenTelemetry Collector's OTLP-to-Jaeger translator does it: the span kind, status and scope
become tags, events become logs, the parent becomes a CHILD_OF reference and links FOLLOWS_FROM ones, and
each distinct resource a process.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sentinel.viewer.store import StoredSpan, TraceQuery

__all__ = [
    "error_response",
    "not_found_response",
    "operations_by_kind_response",
    "operations_response",
    "query_from_params",
    "services_response",
    "trace_response",
    "traces_response",
]

DEFAULT_LIMIT: Final = 20
KIND_NAMES: Final = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_NAMES: Final = {1: "OK", 2: "ERROR"}
_STATUS_ERROR: Final = 2

# Go's time.ParseDuration units, in nanoseconds.
_GO_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_DURATION: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-zµμ]+)")
_LOOKBACK: Final = re.compile(r"([0-9]+)([smhdw])")
_LOOKBACK_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_LOGFMT: Final = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s="]+))=(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))')


def _envelope(data: Any, total: int = 0, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


def services_response(names: list[str]) -> dict[str, Any]:
    """`GET /api/services`."""
    return _envelope(list(names), len(names))


def operations_response(ops: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """`GET /api/services/{service}/operations`: the distinct span names, sorted."""
    names = sorted({name for name, _ in ops})
    return _envelope(names, len(names))


def operations_by_kind_response(ops: Sequence[tuple[str, int]], span_kind: str = "") -> dict[str, Any]:
    """`GET /api/operations?service=S[&spanKind=K]`: `{"name", "spanKind"}` pairs, only kind K if given."""
    data = [
        {"name": name, "spanKind": KIND_NAMES.get(kind, "")}
        for name, kind in sorted(set(ops))
        if not span_kind or KIND_NAMES.get(kind, "") == span_kind
    ]
    return _envelope(data, len(data))


def traces_response(traces: Sequence[Sequence[StoredSpan]]) -> dict[str, Any]:
    """`GET /api/traces?...`: each trace with its spans and processes (total stays 0, as in Jaeger)."""
    return _envelope([_trace(spans) for spans in traces if spans])


def trace_response(spans: Sequence[StoredSpan]) -> dict[str, Any]:
    """`GET /api/traces/{trace_id}` for a trace that has spans."""
    return traces_response([spans])


def not_found_response(trace_id: str) -> dict[str, Any]:
    """`GET /api/traces/{trace_id}` for an unknown trace, sent with status 404 (as jaeger-query does)."""
    return error_response(404, "trace not found")


def error_response(code: int, message: str) -> dict[str, Any]:
    """Any failed request: `data` null and one error with the HTTP status code."""
    return _envelope(None, errors=[{"code": code, "msg": message}])


# -- traces ------------------------------------------------------------------------------------------------


def _trace(spans: Sequence[StoredSpan]) -> dict[str, Any]:
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[tuple[str, str], str] = {}
    out = []
    for span in spans:
        identity = (span.service, json.dumps(span.resource, sort_keys=True, default=repr))
        process_id = process_ids.get(identity)
        if process_id is None:
            process_id = process_ids[identity] = f"p{len(process_ids) + 1}"
            processes[process_id] = {
                "serviceName": span.service,
                "tags": [_tag(key, value) for key, value in span.resource.items() if key != "service.name"],
            }
        out.append(_span(span, process_id))
    return {"traceID": spans[0].trace_id, "spans": out, "processes": processes, "warnings": None}


def _span(span: StoredSpan, process_id: str) -> dict[str, Any]:
    references = []
    if span.parent_span_id:
        references.append({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": span.parent_span_id})
    references += [
        {"refType": "FOLLOWS_FROM", "traceID": link["trace_id"], "spanID": link["span_id"]} for link in span.links
    ]
    tags = []
    if span.scope_name:
        tags.append(_tag("otel.scope.name", span.scope_name))
    if span.scope_version:
        tags.append(_tag("otel.scope.version", span.scope_version))
    tags += [_tag(key, value) for key, value in span.attributes.items()]
    if KIND_NAMES.get(span.kind):
        tags.append(_tag("span.kind", KIND_NAMES[span.kind]))
    if span.status_code in STATUS_NAMES:
        tags.append(_tag("otel.status_code", STATUS_NAMES[span.status_code]))
    if span.status_code == _STATUS_ERROR:
        tags.append(_tag("error", True))
    if span.status_message:
        tags.append(_tag("otel.status_description", span.status_message))
    if span.trace_state:
        tags.append(_tag("w3c.tracestate", span.trace_state))
    logs = []
    for event in span.events:
        fields = [_tag("event", event["name"])] if event["name"] else []
        fields += [_tag(key, value) for key, value in event["attributes"].items()]
        logs.append({"timestamp": event["time_ns"] // 1000, "fields": fields})
    return {
        "traceID": span.trace_id,
        "spanID": span.span_id,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns // 1000,
        "duration": max(0, span.end_ns - span.start_ns) // 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": None,
        "flags": span.flags & 0xFF,  # the W3C trace flags; the higher OTLP bits say nothing to Jaeger
    }


def _tag(key: str, value: Any) -> dict[str, Any]:
    """A typed Jaeger key-value. Arrays and maps become JSON text, as the Collector's translator does; so do
    non-finite floats, which JSON cannot carry as numbers."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"key": key, "type": "float64", "value": value}
        return {
            "key": key,
            "type": "string",
            "value": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity",
        }
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if value is None:
        return {"key": key, "type": "string", "value": ""}
    return {
        "key": key,
        "type": "string",
        "value": json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr),
    }


# -- search parameters ------------------------------------------------------------------------------------


def query_from_params(params: Mapping[str, Sequence[str]], *, now_us: int | None = None) -> TraceQuery:
    """A `TraceQuery` from the query string of `GET /api/traces` (as `urllib.parse.parse_qs` returns it).

    service, operation; tags as JSON (`{"k":"v"}`, Jaeger's UI) or logfmt (`k=v k2="v 2"`, some Grafana
    versions), and `tag=k:v`; `error=true` among the tags means errors only; minDuration and maxDuration as Go
    durations ("1.2s", "100ms", "500us"); start and end in Unix microseconds, or lookback ("1h", "2d";
    "custom" means start and end say it) before end or now; limit (default 20). Raises ValueError, with a
    message for the client, on a bad value.
    """
    tags: dict[str, str] = {}
    for raw in params.get("tags", []):
        if raw.strip():
            tags.update(_json_tags(raw) if raw.lstrip().startswith("{") else _logfmt_tags(raw))
    for raw in params.get("tag", []):
        key, sep, value = raw.partition(":")
        if not sep or not key:
            raise ValueError(f"tag: expected key:value, not {raw!r}")
        tags[key] = value
    errors_only = tags.get("error") == "true"
    if errors_only:
        del tags["error"]

    min_us = _duration_us(_first(params, "minDuration"), "minDuration", round_up=True)
    max_us = _duration_us(_first(params, "maxDuration"), "maxDuration", round_up=False)
    if min_us is not None and max_us is not None and max_us < min_us:
        raise ValueError("maxDuration must not be less than minDuration")

    start_us = _integer(_first(params, "start"), "start")
    end_us = _integer(_first(params, "end"), "end")
    lookback = _first(params, "lookback")
    if start_us is None and lookback is not None and lookback != "custom":
        reference = end_us if end_us is not None else time.time_ns() // 1000 if now_us is None else now_us
        start_us = reference - _lookback_us(lookback)
    if start_us is not None and end_us is not None and end_us < start_us:
        raise ValueError("end must not be before start")

    limit = _integer(_first(params, "limit"), "limit")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return TraceQuery(
        service=_first(params, "service"),
        operation=_first(params, "operation"),
        tags=tags,
        min_duration_us=min_us,
        max_duration_us=max_us,
        start_us=start_us,
        end_us=end_us,
        errors_only=errors_only,
        limit=DEFAULT_LIMIT if limit is None else limit,
    )


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The parameter's first value (as Go's FormValue), None when absent or empty."""
    values = params.get(name)
    return values[0] if values and values[0] != "" else None


def _integer(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not an integer") from None


def _json_tags(raw: str) -> dict[str, str]:
    try:
        tags = json.loads(raw)
    except ValueError:
        raise ValueError(f"tags: {raw!r} is not a JSON object") from None
    if not isinstance(tags, dict):
        raise ValueError(f"tags: {raw!r} is not a JSON object")
    out = {}
    for key, value in tags.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            out[key] = str(value)
        else:
            raise ValueError(f"tags: the value of {key!r} is not a string")
    return out


def _logfmt_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    pos = 0
    text = raw.rstrip()
    while pos < len(text):
        match = _LOGFMT.match(text, pos)
        if match is None:
            raise ValueError(f'tags: {raw!r} is neither a JSON object nor logfmt (key=value key2="value 2")')
        quoted_key, key, quoted_value, value = match.groups()
        key = _unquote(quoted_key) if quoted_key is not None else key
        tags[key] = _unquote(quoted_value) if quoted_value is not None else value
        pos = match.end()
    return tags


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), text)


def _duration_us(text: str | None, name: str, *, round_up: bool) -> int | None:
    """A Go duration in whole microseconds (the unit Jaeger stores): rounded up for a minimum, down for a
    maximum, so that comparing whole microseconds keeps exactly the spans the duration allows."""
    if text is None:
        return None
    ns = _go_duration_ns(text.strip())
    if ns is None:
        raise ValueError(f"{name}: {text!r} is not a duration like 1.5s, 100ms, 500us or 1m")
    if ns < 0:
        raise ValueError(f"{name} must not be negative")
    return -(-ns // 1000) if round_up else ns // 1000


def _go_duration_ns(text: str) -> int | None:
    """Nanoseconds of a Go `time.ParseDuration` string ("1h2m0.5s", "-1.5ms", "0"), None if malformed."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    if not body:
        return None
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _GO_DURATION.match(body, pos)
        if match is None or match.group(1) in ("", ".") or match.group(2) not in _GO_UNITS:
            return None
        try:
            total += Decimal(match.group(1)) * _GO_UNITS[match.group(2)]
        except InvalidOperation:
            return None
        pos = match.end()
    return sign * int(total)


def _lookback_us(text: str) -> int:
    match = _LOOKBACK.fullmatch(text.strip())
    if match is not None:
        return int(match.group(1)) * _LOOKBACK_UNITS[match.group(2)] * 1_000_000
    ns = _go_duration_ns(text.strip())
    if ns is None or ns < 0:
        raise ValueError(f"lookback: {text!r} is not a duration like 1h or 2d (or custom)")
    return ns // 1000
