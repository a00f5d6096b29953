"""`system` (alias `server`) and `limits`."""

from __future__ import annotations

from sentinel.config.model import LimitsConfig, SystemConfig, TraceIdFormat
from sentinel.config.reader import Block, ConfigNode

_TRACE_ID_FORMATS = {
    "tinyflake": TraceIdFormat.TINYFLAKE,
    "uuid": TraceIdFormat.UUID,
    "uuid4": TraceIdFormat.UUID,
    "uuidv4": TraceIdFormat.UUID,
}


def read_system(node: ConfigNode) -> SystemConfig:
    node.no_values()
    b = Block(
        node,
        [
            "worker-threads",
            "trace-id-format",
            "graceful-shutdown-timeout-secs",
            "max-connections",
            "pid-file",
        ],
    )
    d = SystemConfig()
    return SystemConfig(
        worker_threads=b.integer("worker-threads", d.worker_threads, minimum=0, maximum=1024),
        trace_id_format=b.choice("trace-id-format", _TRACE_ID_FORMATS, d.trace_id_format),
        graceful_shutdown_timeout_secs=b.integer(
            "graceful-shutdown-timeout-secs", d.graceful_shutdown_timeout_secs, minimum=0
        ),
        max_connections=b.integer("max-connections", d.max_connections, minimum=1),
        pid_file=b.string("pid-file", d.pid_file),
    )


def read_limits(node: ConfigNode) -> LimitsConfig:
    node.no_values()
    b = Block(
        node,
        ["max-header-size", "max-header-count", "max-body-size"],
        aliases={"max-header-size-bytes": "max-header-size", "max-body-size-bytes": "max-body-size"},
    )
    d = LimitsConfig()
    return LimitsConfig(
        max_header_size=b.integer("max-header-size", d.max_header_size, minimum=256),
        max_header_count=b.integer("max-header-count", d.max_header_count, minimum=1),
        max_body_size=b.integer("max-body-size", d.max_body_size, minimum=0),
    )
