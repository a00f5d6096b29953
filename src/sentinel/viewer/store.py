"""The trace viewer's span store (SPEC §9): OTLP spans in one SQLite file, searchable, with retention.

Layout (schema version 1):

- `spans`: one narrow row per span, keyed by `k`, the span's start time in nanoseconds made unique (a span
  starting at the same nanosecond as a stored one gets the next free key; `skew` = k - start, almost always 0
  and then free in SQLite's record format). So the table, and every index on it (whose entries end in `k`),
  is in start-time order: "newest first" is a backward index walk that stops after `limit` traces instead of
  a sort of every match. Indexes: trace id; (service, k) carrying operation, status and duration, so that a
  service's spans are filtered without reading the table; and a partial one on error spans. `tagset` holds
  the CRC-32 of each attribute (its serialized `KeyValue`), 4 bytes each, for `instr()` to test.
- `span_data`: the span's `Span` protobuf exactly as received, keyed by `k`. Reading it back gives every
  field with its original type; it lives apart from `spans` so that scans of `spans` stay narrow.
- `tags`: postings for tag search, `(b, h) -> keys`. Buckets (table `buckets`) are consecutive ranges of `k`;
  a new one starts when the newest holds about 32k attributes. The two newest stay open: they have no
  postings and are searched by scanning their spans' `tagset` (a few thousand narrow rows). Older buckets
  are closed, once, by one INSERT ... SELECT ... GROUP BY that writes a row per distinct hash with its keys
  (a JSON array of offsets from the bucket start). So ingest writes each attribute once, in bulk and in
  order, instead of inserting it into a large index at a random place (which costs a B-tree descent and
  a dirty page per entry at every commit). A tag search walks the buckets newest first and stops after
  `limit` traces; a store of a million spans has a few hundred buckets. A hash match is only a candidate:
  the span is decoded and checked before its trace is returned, so collisions cost time, never results.
- dictionaries: `services`, `operations` (service, name), `operation_kinds` (operation, kind), `resources`
  (the serialized `Resource`, stored once) and `scopes`, each with the newest `k` that used it (`last_k`),
  so retention can drop the entries whose spans are all gone. AUTOINCREMENT: an id is never reused, which
  lets readers cache resources and scopes by id.

Ingest reads a request through "view" messages, built at import from descriptors, that declare attributes
and spans as plain bytes: the official classes would make a Python object per attribute (most of the cost
of a span). The request is also parsed once with the official class, which checks it (UTF-8 in strings)
before anything is stored. Tag hashes are taken over the attribute bytes as sent; OTLP encoders all write
a `KeyValue` canonically (fields in order), which is what a search hashes.

Concurrency: WAL mode; one writer connection behind a lock (ingest and retention), readers take a connection
from a pool (one per concurrent reader; a pool rather than a thread-local so that threads that come and go,
as in `ThreadingHTTPServer`, do not leave connections behind). One process writes a store at a time.
"""

from __future__ import annotations

import importlib
import math
import sqlite3
import sys
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from zlib import crc32

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["StoredSpan", "TraceQuery", "TraceStore"]

SCHEMA_VERSION: Final = 1
UNKNOWN_SERVICE: Final = "unknown_service"

_BUCKET_ENTRIES: Final = 32_768  # attributes (at least one a span) that fill a bucket
_MAX_INDEXED_ATTRIBUTES: Final = 1024  # per span (rows of `nums`); SDKs keep 128 by default
_KEY_MAX: Final = 1 << 62  # start times past 2116 share this key range (their exact value stays in span_data)
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_CANDIDATE_CAP: Final = 100_000  # index entries counted, at most, to rank the ways to answer a query
_IN_CHUNK: Final = 500  # host parameters per IN (...) list
_READER_POOL: Final = 8  # idle reader connections kept
_STATUS_ERROR: Final = 2

_SCHEMA: Final = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE services (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (service_id, name)
);
CREATE TABLE operation_kinds (
    op_id INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    last_k INTEGER NOT NULL,
    PRIMARY KEY (op_id, kind)
) WITHOUT ROWID;
CREATE TABLE resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id INTEGER NOT NULL,
    resource BLOB NOT NULL UNIQUE,
    last_k INTEGER NOT NULL
);
CREATE TABLE scopes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope BLOB NOT NULL UNIQUE,
    last_k INTEGER NOT NULL
);
CREATE TABLE spans (
    k INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    service_id INTEGER NOT NULL,
    op_id INTEGER NOT NULL,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    status INTEGER NOT NULL,
    skew INTEGER NOT NULL,
    tagset BLOB NOT NULL
);
CREATE INDEX spans_trace ON spans (trace_id);
CREATE INDEX spans_service ON spans (service_id, k, op_id, status, duration);
CREATE INDEX spans_error ON spans (status) WHERE status = {_STATUS_ERROR};
CREATE TABLE span_data (k INTEGER PRIMARY KEY, span BLOB NOT NULL);
CREATE TABLE buckets (b INTEGER PRIMARY KEY, start_k INTEGER NOT NULL UNIQUE, closed INTEGER NOT NULL);
CREATE TABLE tags (
    b INTEGER NOT NULL,
    h BLOB NOT NULL,
    first INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ks TEXT NOT NULL,
    PRIMARY KEY (b, h, first)
) WITHOUT ROWID;
CREATE TABLE nums (i INTEGER PRIMARY KEY);
INSERT INTO buckets VALUES (1, 0, 0);
INSERT INTO meta VALUES ('max_skew', 0);
"""

# k, trace id, service, operation, resource, scope, duration, status, skew, tagset
_SpanRow = tuple[int, bytes, int, int, int, int, int, int, int, bytes]
_INSERT_SPAN: Final = "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# The postings of a bucket's spans (those the condition picks), one row per distinct attribute hash.
_POSTINGS: Final = """
INSERT INTO tags (b, h, first, n, ks)
SELECT ?1, substr(s.tagset, 4 * n.i + 1, 4) AS h, min(s.k) - ?2, count(*), json_group_array(s.k - ?2)
FROM spans s NOT INDEXED CROSS JOIN nums n
WHERE n.i < length(s.tagset) / 4 AND {condition}
GROUP BY h
"""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """What `TraceStore.find_traces` looks for; all conditions hold for one and the same span.

    `tags` match a span attribute or a resource attribute exactly, by string form (str as is, int and float
    as `str()`, bool as "true"/"false", bytes as lower hex); `"error": "true"` means `errors_only`.
    Durations are compared in whole microseconds (as Jaeger stores them); `start_us`/`end_us` bound the
    span's start time, both inclusive.
    """

    service: str | None = None
    operation: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    start_us: int | None = None
    end_us: int | None = None
    errors_only: bool = False
    limit: int = 20


@dataclass(frozen=True, slots=True)
class StoredSpan:
    """A span as stored: ids in lower hex, times in Unix nanoseconds, attributes with their OTLP types
    (str, int, float, bool, lists of those, bytes as lower hex, key-value lists as dicts, empty values as None).
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    service: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    trace_state: str
    flags: int


@dataclass(frozen=True, slots=True)
class _Resource:
    service: str
    attributes: dict[str, Any]
    strings: dict[str, str]  # string form of each scalar attribute, for tag matching
    nested: bool  # some value is a list or dict: give each span its own copy


@dataclass(slots=True)
class _TagFilter:
    key: str
    value: str
    patterns: list[bytes]  # tagset entries of the KeyValues whose string form is `value`, that some span has
    resources: list[int]  # ids of the resources with this attribute


@dataclass(frozen=True, slots=True)
class _Driver:
    """A condition whose index, walked backwards, can produce the candidate spans."""

    kind: str
    cost: float  # of checking one entry, relative to the others
    count: Callable[[], int]  # entries in the time range, up to the cap
    tag: _TagFilter | None = None


@dataclass(frozen=True, slots=True)
class _Bucket:
    b: int
    base: int  # its start_k: posting offsets count from here
    lo: int  # the first key it holds (0 for the first bucket, which reaches down to the oldest span)
    end: int  # the first key it does not hold
    closed: bool


def _view_classes() -> tuple[Any, Any]:
    """Message classes that read an ExportTraceServiceRequest down to each span's fields, with attributes and
    spans as bytes. Built from descriptors; imported by name because protobuf ships no type stubs."""
    descriptor_pb2 = importlib.import_module("google.protobuf.descriptor_pb2")
    descriptor_pool = importlib.import_module("google.protobuf.descriptor_pool")
    message_factory = importlib.import_module("google.protobuf.message_factory")
    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="sentinel/viewer/view.proto", package="sentinel.view")
    file.syntax = "proto3"
    messages: dict[str, list[tuple[int, str, int, bool]]] = {
        "Request": [(1, "resource_spans", fdp.TYPE_MESSAGE, True)],
        "ResourceSpans": [(1, "resource", fdp.TYPE_BYTES, False), (2, "scope_spans", fdp.TYPE_MESSAGE, True)],
        "ScopeSpans": [(1, "scope", fdp.TYPE_BYTES, False), (2, "spans", fdp.TYPE_BYTES, True)],
        "Span": [
            (1, "trace_id", fdp.TYPE_BYTES, False),
            (2, "span_id", fdp.TYPE_BYTES, False),
            (5, "name", fdp.TYPE_STRING, False),
            (6, "kind", fdp.TYPE_INT32, False),
            (7, "start", fdp.TYPE_FIXED64, False),
            (8, "end", fdp.TYPE_FIXED64, False),
            (9, "attributes", fdp.TYPE_BYTES, True),
            (15, "status", fdp.TYPE_MESSAGE, False),
        ],
        "Status": [(3, "code", fdp.TYPE_INT32, False)],
    }
    submessage = {"resource_spans": "ResourceSpans", "scope_spans": "ScopeSpans", "status": "Status"}
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for number, field_name, field_type, repeated in fields:
            entry = message.field.add(name=field_name, number=number, type=field_type)
            entry.label = fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL
            if field_type == fdp.TYPE_MESSAGE:
                entry.type_name = f".sentinel.view.{submessage[field_name]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("sentinel.view.Request"))
    span = message_factory.GetMessageClass(pool.FindMessageTypeByName("sentinel.view.Span"))
    return request, span


_RequestView, _SpanView = _view_classes()


def _tagset(hashes: list[int]) -> bytes:
    packed = array("I", hashes)
    if sys.byteorder != "little":  # stored little-endian whatever the host
        packed.byteswap()
    return packed.tobytes()


def _pattern(h: int) -> bytes:
    return h.to_bytes(4, "little")


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return None


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes}


def _string_form(value: AnyValue) -> str | None:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return str(value.double_value)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None


def _python_string_form(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _typed_candidates(value: str) -> list[AnyValue]:
    """Every AnyValue whose string form is `value` (at most one per type)."""
    candidates = [AnyValue(string_value=value)]
    if value in ("true", "false"):
        candidates.append(AnyValue(bool_value=value == "true"))
    try:
        number = int(value)
    except ValueError:
        pass
    else:
        if str(number) == value and _INT64_MIN <= number <= _INT64_MAX:
            candidates.append(AnyValue(int_value=number))
    try:
        real = float(value)
    except ValueError:
        pass
    else:
        if str(real) == value:
            candidates.append(AnyValue(double_value=real))
    if len(value) % 2 == 0 and all(c in "0123456789abcdef" for c in value):
        candidates.append(AnyValue(bytes_value=bytes.fromhex(value)))
    return candidates


def _clamp64(value: int) -> int:
    return _INT64_MIN if value < _INT64_MIN else _INT64_MAX if value > _INT64_MAX else value


def _service_of(resource: Resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            name = _string_form(kv.value)
            return UNKNOWN_SERVICE if name is None else name
    return UNKNOWN_SERVICE


def _constant(value: int) -> Callable[[], int]:
    return lambda: value


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


class TraceStore:
    """Spans from OTLP export requests in a SQLite file, with search and retention (SPEC §9).

    Thread-safe: any number of threads may ingest and query at once (writes are serialised, reads run in
    parallel with them). Retention is not automatic: whoever runs the store (the viewer server) calls
    `enforce_retention` periodically, say every 30 seconds.
    """

    def __init__(self, path: str, *, retention_secs: float = 86_400, max_bytes: int = 512 * 2**20) -> None:
        if not retention_secs > 0:
            raise ValueError(f"retention_secs must be positive, not {retention_secs!r}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
        self.path = path
        self.retention_secs = retention_secs
        self.max_bytes = max_bytes
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._pool: list[sqlite3.Connection] = []
        self._closed = False
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back after a burst
        self._create_schema()
        # Writer state (under _write_lock): content -> id dictionaries, the largest skew, the buckets.
        self._service_ids: dict[str, int] = {}
        self._op_ids: dict[tuple[int, str, int], int] = {}
        self._resource_ids: dict[bytes, tuple[int, int]] = {}
        self._scope_ids: dict[bytes, int] = {}
        self._max_skew = 0
        self._bucket_ids: list[int] = []
        self._bucket_starts: list[int] = []
        self._open_from = 0  # the first key of the oldest open bucket
        self._newest_entries = 0  # attributes in the newest bucket
        self._load_writer_state()
        # Reader-side caches (under _cache_lock): id -> content, which never changes for an id.
        self._resources: dict[int, _Resource] = {}
        self._resources_seen = 0
        self._scopes: dict[int, tuple[str, str]] = {}

    # -- connections --------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the hot ends of the indexes stay in memory
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    def _create_schema(self) -> None:
        conn = self._writer
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # auto_vacuum only takes effect before the first table exists: it is what lets the file shrink.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the last commits, not the file
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise ValueError(f"{self.path}: trace store schema version {version}; this Sentinel reads {SCHEMA_VERSION}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # not created meanwhile by another process
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO nums VALUES (?)", [(i,) for i in range(_MAX_INDEXED_ATTRIBUTES)])
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the trace store is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._pool_lock:
                keep = not self._closed and len(self._pool) < _READER_POOL
                if keep:
                    self._pool.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
        with self._write_lock:
            self._writer.close()

    # -- ingest -------------------------------------------------------------------------------------------

    def ingest(self, data: bytes) -> int:
        """Store the spans of a protobuf-encoded `ExportTraceServiceRequest`; returns how many were stored.

        Raises ValueError if `data` is not such a message. Spans whose trace id is not 16 bytes or span id
        not 8 bytes are invalid in OTLP and are skipped (not counted).
        """
        try:
            ExportTraceServiceRequest.FromString(data)  # checks everything, UTF-8 included, before storing
        except Exception as exc:  # protobuf's DecodeError, which has no type stubs to name it by
            raise ValueError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
        return self._ingest_checked(data)

    def ingest_request(self, request: ExportTraceServiceRequest) -> int:
        """Store the spans of a decoded request (see `ingest`); the request is left unchanged."""
        data: bytes = request.SerializeToString()
        return self._ingest_checked(data)

    def _ingest_checked(self, data: bytes) -> int:
        view = _RequestView.FromString(data)
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = self._ingest_locked(conn, view)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._load_writer_state()  # the dictionaries may hold ids from the rolled-back transaction
                raise
            return stored

    def _ingest_locked(self, conn: sqlite3.Connection, view: Any) -> int:
        span_rows: list[_SpanRow] = []
        data_rows: list[tuple[int, bytes]] = []
        used: set[int] = set()
        bumped: dict[int, int] = {}
        op_last: dict[tuple[int, str, int], int] = {}
        resource_last: dict[int, int] = {}
        scope_last: dict[int, int] = {}
        op_ids = self._op_ids
        span_view = _SpanView
        newest_start = self._bucket_starts[-1]
        newest_entries = 0
        for resource_spans in view.resource_spans:
            resource_id, service_id = self._resource_id(conn, resource_spans.resource)
            resource_max = -1
            for scope_spans in resource_spans.scope_spans:
                scope_id = self._scope_id(conn, scope_spans.scope)
                scope_max = -1
                for raw in scope_spans.spans:
                    span = span_view.FromString(raw)
                    trace_id = span.trace_id
                    if len(trace_id) != 16 or len(span.span_id) != 8:
                        continue
                    start = span.start
                    base = start if start < _KEY_MAX else _KEY_MAX
                    k = base
                    if k in used:  # same start as another span of this batch: next free nanosecond
                        k = bumped.get(base, base) + 1
                        while k in used:
                            k += 1
                        bumped[base] = k
                    used.add(k)
                    op_key = (service_id, span.name, span.kind)
                    op_id = op_ids.get(op_key)
                    if op_id is None:
                        op_id = self._op_id(conn, op_key)
                    if op_last.get(op_key, -1) < k:
                        op_last[op_key] = k
                    scope_max = max(scope_max, k)
                    duration = span.end - start
                    if not _INT64_MIN <= duration <= _INT64_MAX:
                        duration = _clamp64(duration)
                    hashes = [crc32(attribute) for attribute in span.attributes]
                    if k >= newest_start:  # a span counts at least once: buckets of bare spans end too
                        newest_entries += len(hashes) or 1
                    span_rows.append(
                        (
                            k,
                            trace_id,
                            service_id,
                            op_id,
                            resource_id,
                            scope_id,
                            duration,
                            span.status.code,
                            k - base,
                            _tagset(hashes[:_MAX_INDEXED_ATTRIBUTES]),
                        )
                    )
                    data_rows.append((k, raw))
                if scope_max >= 0:
                    if scope_last.get(scope_id, -1) < scope_max:
                        scope_last[scope_id] = scope_max
                    resource_max = max(resource_max, scope_max)
            if resource_max >= 0 and resource_last.get(resource_id, -1) < resource_max:
                resource_last[resource_id] = resource_max
        if not span_rows:
            return 0
        self._insert_spans(conn, span_rows, data_rows)
        conn.executemany("INSERT INTO span_data VALUES (?, ?)", data_rows)
        conn.executemany(
            "UPDATE operation_kinds SET last_k = max(last_k, ?) WHERE op_id = ? AND kind = ?",
            [(last, op_ids[key], key[2]) for key, last in op_last.items()],
        )
        conn.executemany(
            "UPDATE resources SET last_k = max(last_k, ?) WHERE id = ?", [(v, i) for i, v in resource_last.items()]
        )
        conn.executemany(
            "UPDATE scopes SET last_k = max(last_k, ?) WHERE id = ?", [(v, i) for i, v in scope_last.items()]
        )
        self._index_late_spans(conn, [row[0] for row in span_rows if row[0] < self._open_from])
        self._newest_entries += newest_entries
        if self._newest_entries >= _BUCKET_ENTRIES:
            self._start_bucket(conn, span_rows)
        return len(span_rows)

    def _insert_spans(
        self, conn: sqlite3.Connection, span_rows: list[_SpanRow], data_rows: list[tuple[int, bytes]]
    ) -> None:
        conn.execute("SAVEPOINT spans")
        try:
            conn.executemany(_INSERT_SPAN, span_rows)
        except sqlite3.IntegrityError:
            # A key is taken by a span of an earlier batch that started at the same nanosecond.
            conn.execute("ROLLBACK TO spans")
            remap = self._free_keys(conn, [row[0] for row in span_rows])
            span_rows[:] = [
                (remap[r[0]], *r[1:8], r[8] + remap[r[0]] - r[0], r[9]) if r[0] in remap else r for r in span_rows
            ]
            data_rows[:] = [(remap.get(k, k), blob) for k, blob in data_rows]
            conn.executemany(_INSERT_SPAN, span_rows)
        conn.execute("RELEASE spans")
        skew = max(row[8] for row in span_rows)
        if skew > self._max_skew:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'max_skew'", (skew,))
            self._max_skew = skew

    @staticmethod
    def _free_keys(conn: sqlite3.Connection, keys: list[int]) -> dict[int, int]:
        """New keys for those of `keys` that stored spans hold: the next free nanosecond after each.

        Runs of taken keys (spans that all claim the same start, such as 0 from a client that sets none)
        are stepped over a page of keys at a time, so that a crowd does not cost a query per member."""
        taken: set[int] = set()
        for chunk in _chunks(keys):
            taken.update(k for (k,) in conn.execute(f"SELECT k FROM spans WHERE k IN ({_marks(len(chunk))})", chunk))
        in_batch = set(keys)
        remap: dict[int, int] = {}
        frontier = _INT64_MIN  # keys below it have been looked at already
        for k in sorted(taken):
            new = max(k + 1, frontier)
            while True:
                while new in in_batch:
                    new += 1
                stored = [
                    row for (row,) in conn.execute("SELECT k FROM spans WHERE k >= ? ORDER BY k LIMIT 256", (new,))
                ]
                run = 0
                while run < len(stored) and stored[run] == new + run:
                    run += 1
                if run == 0:
                    break
                new += run
            in_batch.add(new)
            remap[k] = new
            frontier = new + 1
        return remap

    def _start_bucket(self, conn: sqlite3.Connection, span_rows: list[_SpanRow]) -> None:
        """Start a new bucket after this batch and close the one that stops being among the two newest."""
        # After the newest span of the batch, but not after the present: a span from a wrong clock's future
        # would otherwise send every later span into the bucket that ends there.
        now = time.time_ns()
        start = max((row[0] for row in span_rows if row[0] <= now), default=now) + 1
        if start <= self._bucket_starts[-1]:
            return
        b = self._bucket_ids[-1] + 1
        conn.execute("INSERT INTO buckets VALUES (?, ?, 0)", (b, start))
        self._bucket_ids.append(b)
        self._bucket_starts.append(start)
        self._newest_entries = 0
        if len(self._bucket_ids) >= 3:  # buckets close oldest first: the third newest is the only one to close
            index = len(self._bucket_ids) - 3
            closing, base, end = self._bucket_ids[index], self._bucket_starts[index], self._bucket_starts[index + 1]
            lo = 0 if index == 0 else base
            conn.execute(_POSTINGS.format(condition="s.k >= ?3 AND s.k < ?4"), (closing, base, lo, end))
            conn.execute("UPDATE buckets SET closed = 1 WHERE b = ?", (closing,))
            self._open_from = end

    def _index_late_spans(self, conn: sqlite3.Connection, keys: list[int]) -> None:
        """Postings for spans that arrive after their bucket was closed (each gets rows of its own)."""
        by_bucket: dict[int, list[int]] = {}
        for k in keys:
            by_bucket.setdefault(self._bucket_index(k), []).append(k)
        for index, bucket_keys in by_bucket.items():
            b, first = self._bucket_ids[index], self._bucket_starts[index]
            for chunk in _chunks(bucket_keys):
                condition = f"s.k IN ({','.join(str(k) for k in chunk)})"  # integers we made: no injection
                conn.execute(_POSTINGS.format(condition=condition), (b, first))

    def _bucket_index(self, k: int) -> int:
        """Index in the bucket lists of the bucket holding key k; the first bucket reaches down to 0."""
        return max(0, bisect_right(self._bucket_starts, k) - 1)

    def _load_writer_state(self) -> None:
        conn = self._writer
        self._service_ids.clear()
        self._op_ids.clear()
        self._resource_ids.clear()
        self._scope_ids.clear()
        self._max_skew = int(conn.execute("SELECT value FROM meta WHERE key = 'max_skew'").fetchone()[0])
        rows = conn.execute("SELECT b, start_k, closed FROM buckets ORDER BY b").fetchall()
        self._bucket_ids = [b for b, _, _ in rows]
        self._bucket_starts = [start for _, start, _ in rows]
        oldest_open = next(i for i, (_, _, closed) in enumerate(rows) if not closed)  # the newest is always open
        self._open_from = 0 if oldest_open == 0 else rows[oldest_open][1]
        self._newest_entries = int(
            conn.execute(
                "SELECT coalesce(sum(max(length(tagset) / 4, 1)), 0) FROM spans WHERE k >= ?",
                (self._bucket_starts[-1],),
            ).fetchone()[0]
        )

    def _service_id(self, conn: sqlite3.Connection, name: str) -> int:
        service_id = self._service_ids.get(name)
        if service_id is None:
            conn.execute("INSERT OR IGNORE INTO services (name) VALUES (?)", (name,))
            service_id = conn.execute("SELECT id FROM services WHERE name = ?", (name,)).fetchone()[0]
            self._service_ids[name] = service_id
        return service_id

    def _resource_id(self, conn: sqlite3.Connection, blob: bytes) -> tuple[int, int]:
        ids = self._resource_ids.get(blob)
        if ids is None:
            service_id = self._service_id(conn, _service_of(Resource.FromString(blob)))
            conn.execute(
                "INSERT OR IGNORE INTO resources (service_id, resource, last_k) VALUES (?, ?, -1)", (service_id, blob)
            )
            row = conn.execute("SELECT id, service_id FROM resources WHERE resource = ?", (blob,)).fetchone()
            ids = self._resource_ids[blob] = (row[0], row[1])
        return ids

    def _scope_id(self, conn: sqlite3.Connection, blob: bytes) -> int:
        scope_id = self._scope_ids.get(blob)
        if scope_id is None:
            conn.execute("INSERT OR IGNORE INTO scopes (scope, last_k) VALUES (?, -1)", (blob,))
            row = conn.execute("SELECT id FROM scopes WHERE scope = ?", (blob,)).fetchone()
            scope_id = self._scope_ids[blob] = row[0]
        return scope_id

    def _op_id(self, conn: sqlite3.Connection, key: tuple[int, str, int]) -> int:
        service_id, name, kind = key
        conn.execute("INSERT OR IGNORE INTO operations (service_id, name) VALUES (?, ?)", (service_id, name))
        op_id: int = conn.execute(
            "SELECT id FROM operations WHERE service_id = ? AND name = ?", (service_id, name)
        ).fetchone()[0]
        conn.execute("INSERT OR IGNORE INTO operation_kinds VALUES (?, ?, -1)", (op_id, kind))
        self._op_ids[key] = op_id
        return op_id

    # -- reading ------------------------------------------------------------------------------------------

    def services(self) -> list[str]:
        """Names of the services with stored spans, sorted."""
        with self._reader() as conn:
            return [name for (name,) in conn.execute("SELECT name FROM services ORDER BY name")]

    def operations(self, service: str) -> list[tuple[str, int]]:
        """(span name, OTLP span kind) of the service's stored spans, sorted."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT o.name, ok.kind FROM services s JOIN operations o ON o.service_id = s.id "
                "JOIN operation_kinds ok ON ok.op_id = o.id WHERE s.name = ? ORDER BY o.name, ok.kind",
                (service,),
            )
            return [(name, kind) for name, kind in rows]

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """Every stored span of a trace, sorted by start time; [] if the id is unknown or not hex.

        Ids shorter than 32 hex digits are left-padded with zeros, as Jaeger does for 64-bit ids.
        """
        if not 0 < len(trace_id) <= 32:
            return []
        try:
            raw = bytes.fromhex(trace_id.rjust(32, "0"))
        except ValueError:
            return []
        with self._reader() as conn:
            return self._load_traces(conn, [raw]).get(raw, [])

    def find_traces(self, query: TraceQuery) -> list[list[StoredSpan]]:
        """Whole traces (every stored span) with at least one span matching `query`, newest first.

        A trace's place is the start of its newest matching span; at most `query.limit` traces.
        """
        if query.limit <= 0:
            return []
        with self._reader() as conn:
            conn.execute("BEGIN")  # one snapshot for the search and the reading of its traces
            order = self._search(conn, query)
            traces = self._load_traces(conn, order)
        return [traces[trace_id] for trace_id in order if trace_id in traces]

    def _search(self, conn: sqlite3.Connection, query: TraceQuery) -> list[bytes]:
        """The ids of the matching traces, newest first.

        Each condition with an index in start order (service, error status, a tag) could drive the search:
        its index is walked backwards while the other conditions filter. When there is a choice, the one
        with the fewest entries in the time range (counted up to a cap), weighted by what an entry costs to
        check, drives; without any, the table itself is walked.
        """
        where: list[str] = []  # conditions on `s` (spans) besides the driver's own
        params: list[Any] = []
        k_lo, k_hi = 0, _INT64_MAX
        if query.start_us is not None or query.end_us is not None:
            lo = 0 if query.start_us is None else min(_INT64_MAX, max(0, query.start_us * 1000))
            hi = _INT64_MAX if query.end_us is None else min(_INT64_MAX, query.end_us * 1000 + 999)
            if hi < lo:
                return []
            skew = int(conn.execute("SELECT value FROM meta WHERE key = 'max_skew'").fetchone()[0])
            k_lo, k_hi = min(lo, _KEY_MAX), min(hi + skew, _INT64_MAX)
            if skew:  # keys may sit up to `skew` ns after the start they stand for
                where.append("s.k - s.skew BETWEEN ? AND ?")
                params += [lo, hi]
        drivers: list[_Driver] = []
        service_id: int | None = None
        if query.service is not None:
            row = conn.execute("SELECT id FROM services WHERE name = ?", (query.service,)).fetchone()
            if row is None:
                return []
            service_id = row[0]
            service_args = [service_id, k_lo, k_hi]
            drivers.append(
                _Driver("service", 0.25, lambda: self._count(conn, "spans_service", "service_id = ?", service_args))
            )
        if query.operation is not None:
            if service_id is None:
                op_rows = conn.execute("SELECT id FROM operations WHERE name = ?", (query.operation,))
            else:
                op_rows = conn.execute(
                    "SELECT id FROM operations WHERE service_id = ? AND name = ?", (service_id, query.operation)
                )
            op_ids = [op_id for (op_id,) in op_rows]
            if not op_ids:
                return []
            where.append(f"s.op_id IN ({_marks(len(op_ids))})")
            params += op_ids
        errors = query.errors_only or query.tags.get("error") == "true"
        if errors:
            status = f"status = {_STATUS_ERROR}"
            drivers.append(_Driver("errors", 1.0, lambda: self._count(conn, "spans_error", status, [k_lo, k_hi])))
        if query.min_duration_us is not None or query.max_duration_us is not None:
            d_lo = _INT64_MIN if query.min_duration_us is None else _clamp64(query.min_duration_us * 1000)
            d_hi = _INT64_MAX if query.max_duration_us is None else _clamp64(query.max_duration_us * 1000 + 999)
            if d_hi < d_lo:
                return []
            where.append("s.duration BETWEEN ? AND ?")
            params += [d_lo, d_hi]
        buckets = self._buckets(conn, k_lo, k_hi)
        tag_filters: list[_TagFilter] = []
        for key, value in query.tags.items():
            if key == "error" and value == "true":
                continue
            resources = [rid for rid, r in self._all_resources(conn).items() if r.strings.get(key) == value]
            tag = _TagFilter(key, value, [], resources)
            total = 0
            for candidate in _typed_candidates(value):
                pattern = _pattern(crc32(KeyValue(key=key, value=candidate).SerializeToString()))
                count = self._count_tag(conn, [pattern], buckets, k_lo, k_hi)
                if count:
                    tag.patterns.append(pattern)
                    total += count
            if not tag.patterns and not tag.resources:
                return []
            if tag.patterns and not tag.resources:  # spans of a matching resource are not in the postings
                drivers.append(_Driver("tag", 1.5, _constant(total), tag))
            tag_filters.append(tag)
        if not drivers:
            kind, driver_tag = "time", None
        else:
            if len(drivers) > 1:  # counting costs a little: only to choose
                drivers.sort(key=lambda d: min(d.count(), _CANDIDATE_CAP) * d.cost)
            kind, driver_tag = drivers[0].kind, drivers[0].tag

        # The driver's condition is its access path; every other one filters.
        if service_id is not None and kind != "service":
            where.append("s.service_id = ?")
            params.append(service_id)
        if errors and kind != "errors":
            where.append(f"s.status = {_STATUS_ERROR}")
        for tag in tag_filters:
            if tag is driver_tag:
                continue
            alternatives = [f"s.resource_id IN ({_marks(len(tag.resources))})"] if tag.resources else []
            alternatives += ["instr(s.tagset, ?)"] * len(tag.patterns)
            where.append("(" + " OR ".join(alternatives) + ")")
            params += tag.resources + tag.patterns
        filters = "".join(" AND " + condition for condition in where)

        rows: Generator[tuple[int, bytes]]
        if kind == "tag":
            assert driver_tag is not None
            rows = self._tag_rows(conn, driver_tag.patterns, buckets, k_lo, k_hi, filters, params)
        else:
            access = {
                "service": ("INDEXED BY spans_service", "s.service_id = ? AND ", [service_id]),
                "errors": ("INDEXED BY spans_error", f"s.status = {_STATUS_ERROR} AND ", []),
                "time": ("NOT INDEXED", "", []),
            }
            index, condition, own = access[kind]
            rows = self._rows(
                conn,
                f"SELECT s.k, s.trace_id FROM spans s {index} WHERE {condition}s.k BETWEEN ? AND ?{filters} "
                "ORDER BY s.k DESC",
                [*own, k_lo, k_hi, *params],
            )
        return self._collect(conn, rows, tag_filters, query.limit)

    @staticmethod
    def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Generator[tuple[int, bytes]]:
        cursor = conn.execute(sql, args)
        try:
            yield from cursor
        finally:
            cursor.close()  # a search that stops early releases the statement (and its read lock)

    def _tag_rows(
        self,
        conn: sqlite3.Connection,
        patterns: list[bytes],
        buckets: list[_Bucket],
        k_lo: int,
        k_hi: int,
        filters: str,
        params: list[Any],
    ) -> Generator[tuple[int, bytes]]:
        """Candidate spans with one of the hashes, newest first: bucket by bucket, each sorted."""
        any_pattern = "(" + " OR ".join(["instr(s.tagset, ?)"] * len(patterns)) + ")"
        for bucket in reversed(buckets):
            lo, hi = max(k_lo, bucket.lo), min(k_hi, bucket.end - 1)
            if bucket.closed:
                sql = (
                    "SELECT s.k, s.trace_id FROM tags t CROSS JOIN json_each(t.ks) j "
                    "CROSS JOIN spans s ON s.k = ? + j.value "
                    f"WHERE t.b = ? AND t.h IN ({_marks(len(patterns))}) AND s.k BETWEEN ? AND ?{filters} "
                    "ORDER BY s.k DESC"
                )
                args = [bucket.base, bucket.b, *patterns, lo, hi, *params]
            else:
                sql = (
                    f"SELECT s.k, s.trace_id FROM spans s NOT INDEXED WHERE s.k BETWEEN ? AND ? AND {any_pattern}"
                    f"{filters} ORDER BY s.k DESC"
                )
                args = [lo, hi, *patterns, *params]
            yield from self._rows(conn, sql, args)

    def _collect(
        self, conn: sqlite3.Connection, rows: Generator[tuple[int, bytes]], tag_filters: list[_TagFilter], limit: int
    ) -> list[bytes]:
        """The first `limit` distinct traces of the candidate spans (newest first), tag matches verified."""
        found: dict[bytes, None] = {}
        try:
            for k, trace_id in rows:
                if trace_id in found:
                    continue
                if tag_filters and not self._tags_match(conn, k, tag_filters):
                    continue
                found[trace_id] = None
                if len(found) >= limit:
                    break
        finally:
            rows.close()
        return list(found)

    def _tags_match(self, conn: sqlite3.Connection, k: int, tag_filters: list[_TagFilter]) -> bool:
        row = conn.execute(
            "SELECT s.resource_id, d.span FROM spans s JOIN span_data d ON d.k = s.k WHERE s.k = ?", (k,)
        ).fetchone()
        if row is None:
            return False
        resource_id, blob = row
        attributes = Span.FromString(blob).attributes
        for tag in tag_filters:
            if resource_id in tag.resources:
                continue
            if not any(kv.key == tag.key and _string_form(kv.value) == tag.value for kv in attributes):
                return False
        return True

    @staticmethod
    def _count(conn: sqlite3.Connection, index: str, condition: str, args: list[Any]) -> int:
        """Entries of an index that meet the condition and `k BETWEEN ? AND ?` (the last two args), up to the cap."""
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM spans INDEXED BY {index} WHERE {condition} "
            f"AND k BETWEEN ? AND ? LIMIT {_CANDIDATE_CAP})",
            args,
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _count_tag(
        conn: sqlite3.Connection, patterns: list[bytes], buckets: list[_Bucket], k_lo: int, k_hi: int
    ) -> int:
        """Spans with one of the hashes: postings of the closed buckets, a scan of the open ones."""
        closed = [bucket.b for bucket in buckets if bucket.closed]
        total = 0
        for chunk in _chunks(closed):
            row = conn.execute(
                f"SELECT coalesce(sum(n), 0) FROM tags WHERE b IN ({_marks(len(chunk))}) "
                f"AND h IN ({_marks(len(patterns))})",
                [*chunk, *patterns],
            ).fetchone()
            total += int(row[0])
        opened = [bucket for bucket in buckets if not bucket.closed]
        if opened:
            any_pattern = " OR ".join(["instr(tagset, ?)"] * len(patterns))
            row = conn.execute(
                f"SELECT count(*) FROM spans NOT INDEXED WHERE k BETWEEN ? AND ? AND ({any_pattern})",
                [max(k_lo, opened[0].lo), k_hi, *patterns],
            ).fetchone()
            total += int(row[0])
        return total

    @staticmethod
    def _buckets(conn: sqlite3.Connection, k_lo: int, k_hi: int) -> list[_Bucket]:
        """The buckets that can hold keys in [k_lo, k_hi], oldest first."""
        rows = conn.execute("SELECT b, start_k, closed FROM buckets ORDER BY b").fetchall()
        buckets = []
        for i, (b, start, closed) in enumerate(rows):
            lo = 0 if i == 0 else start
            end = rows[i + 1][1] if i + 1 < len(rows) else _INT64_MAX
            if end > k_lo and lo <= k_hi:
                buckets.append(_Bucket(b, start, lo, end, bool(closed)))
        return buckets

    def _all_resources(self, conn: sqlite3.Connection) -> dict[int, _Resource]:
        with self._cache_lock:
            seen = self._resources_seen
        rows = conn.execute("SELECT id, resource FROM resources WHERE id > ? ORDER BY id", (seen,)).fetchall()
        with self._cache_lock:
            for resource_id, blob in rows:
                if resource_id not in self._resources:
                    self._resources[resource_id] = self._decode_resource(blob)
                self._resources_seen = max(self._resources_seen, resource_id)
            return dict(self._resources)

    def _resource(self, conn: sqlite3.Connection, resource_id: int) -> _Resource:
        with self._cache_lock:
            cached = self._resources.get(resource_id)
        if cached is None:
            row = conn.execute("SELECT resource FROM resources WHERE id = ?", (resource_id,)).fetchone()
            cached = self._decode_resource(row[0] if row else b"")
            with self._cache_lock:
                self._resources[resource_id] = cached
        return cached

    @staticmethod
    def _decode_resource(blob: bytes) -> _Resource:
        resource = Resource.FromString(blob)
        attributes = _attributes(resource.attributes)
        strings = {}
        for key, value in attributes.items():
            text = _python_string_form(value)
            if text is not None:
                strings[key] = text
        nested = any(isinstance(value, list | dict) for value in attributes.values())
        return _Resource(_service_of(resource), attributes, strings, nested)

    def _scope(self, conn: sqlite3.Connection, scope_id: int) -> tuple[str, str]:
        with self._cache_lock:
            cached = self._scopes.get(scope_id)
        if cached is None:
            row = conn.execute("SELECT scope FROM scopes WHERE id = ?", (scope_id,)).fetchone()
            scope = InstrumentationScope.FromString(row[0] if row else b"")
            cached = (scope.name, scope.version)
            with self._cache_lock:
                self._scopes[scope_id] = cached
        return cached

    def _load_traces(self, conn: sqlite3.Connection, trace_ids: Sequence[bytes]) -> dict[bytes, list[StoredSpan]]:
        traces: dict[bytes, list[tuple[int, int, StoredSpan]]] = {}
        for chunk in _chunks(trace_ids):
            rows = conn.execute(
                "SELECT s.k, s.trace_id, s.resource_id, s.scope_id, d.span FROM spans s INDEXED BY spans_trace "
                f"CROSS JOIN span_data d ON d.k = s.k WHERE s.trace_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall()
            for k, trace_id, resource_id, scope_id, blob in rows:
                span = self._stored_span(conn, blob, resource_id, scope_id)
                traces.setdefault(trace_id, []).append((span.start_ns, k, span))
        return {
            trace_id: [entry[2] for entry in sorted(spans, key=lambda e: e[:2])] for trace_id, spans in traces.items()
        }

    def _stored_span(self, conn: sqlite3.Connection, blob: bytes, resource_id: int, scope_id: int) -> StoredSpan:
        span = Span.FromString(blob)
        resource = self._resource(conn, resource_id)
        scope_name, scope_version = self._scope(conn, scope_id)
        return StoredSpan(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            name=span.name,
            kind=span.kind,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            status_code=span.status.code,
            status_message=span.status.message,
            service=resource.service,
            attributes=_attributes(span.attributes),
            events=[
                {"time_ns": event.time_unix_nano, "name": event.name, "attributes": _attributes(event.attributes)}
                for event in span.events
            ],
            links=[
                {
                    "trace_id": link.trace_id.hex(),
                    "span_id": link.span_id.hex(),
                    "trace_state": link.trace_state,
                    "attributes": _attributes(link.attributes),
                }
                for link in span.links
            ],
            resource=_copy(resource.attributes) if resource.nested else dict(resource.attributes),
            scope_name=scope_name,
            scope_version=scope_version,
            trace_state=span.trace_state,
            flags=span.flags,
        )

    # -- retention ----------------------------------------------------------------------------------------

    def enforce_retention(self, now_ns: int | None = None) -> int:
        """Delete the spans that started more than `retention_secs` before `now_ns` (default: now), then the
        oldest spans until the database (page count x page size) is at most `max_bytes`, aiming a tenth lower
        so that it does not run at every call; returns how many spans were deleted.

        Freed pages go back to the file system (incremental vacuum, then a checkpoint). Not automatic: the
        viewer server calls it periodically.
        """
        now = time.time_ns() if now_ns is None else now_ns
        with self._write_lock:
            conn = self._writer
            deleted = self._delete_before(conn, now - math.ceil(self.retention_secs * 1e9))
            for _ in range(20):
                size = self._size(conn)
                if size <= self.max_bytes:
                    break
                spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
                if spans == 0:
                    break
                drop = min(spans, max(1, math.ceil((size - self.max_bytes * 0.9) / (size / spans))))
                row = conn.execute("SELECT k FROM spans ORDER BY k LIMIT 1 OFFSET ?", (drop,)).fetchone()
                deleted += self._delete_before(conn, _INT64_MAX if row is None else row[0])
            if deleted:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # a complete checkpoint truncates the file
            return deleted

    def _delete_before(self, conn: sqlite3.Connection, cutoff: int) -> int:
        """Delete the spans with key < cutoff and the dictionary entries no span uses any more.

        Buckets that end before the cutoff go whole; the one it falls in keeps its postings until it goes
        too (postings of deleted spans match no span row)."""
        conn.execute("BEGIN IMMEDIATE")
        deleted = 0
        try:
            deleted = conn.execute("DELETE FROM spans WHERE k < ?", (cutoff,)).rowcount
            if deleted:
                conn.execute("DELETE FROM span_data WHERE k < ?", (cutoff,))
                index = self._bucket_index(cutoff)
                if index:
                    bucket = self._bucket_ids[index]
                    conn.execute("DELETE FROM tags WHERE b < ?", (bucket,))
                    conn.execute("DELETE FROM buckets WHERE b < ?", (bucket,))
                conn.execute("DELETE FROM operation_kinds WHERE last_k < ?", (cutoff,))
                conn.execute("DELETE FROM operations WHERE id NOT IN (SELECT op_id FROM operation_kinds)")
                conn.execute("DELETE FROM resources WHERE last_k < ?", (cutoff,))
                conn.execute("DELETE FROM scopes WHERE last_k < ?", (cutoff,))
                conn.execute(
                    "DELETE FROM services WHERE id NOT IN (SELECT service_id FROM operations) "
                    "AND id NOT IN (SELECT service_id FROM resources)"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._load_writer_state()
            raise
        if deleted:
            self._load_writer_state()  # some dictionary ids and buckets are gone
            # It frees one page per step, and the sqlite3 module steps a statement without result columns once:
            # executescript steps it to the end.
            conn.executescript("PRAGMA incremental_vacuum;")
        return int(deleted)

    @staticmethod
    def _size(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * page_size)

    def stats(self) -> dict[str, int]:
        """{"spans": stored spans, "traces": distinct trace ids, "bytes": database size (pages, without the WAL)}."""
        with self._reader() as conn:
            conn.execute("BEGIN")
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            traces = conn.execute("SELECT count(*) FROM (SELECT DISTINCT trace_id FROM spans)").fetchone()[0]
            size = self._size(conn)
        return {"spans": int(spans), "traces": int(traces), "bytes": size}
