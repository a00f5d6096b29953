"""Which `headers { ... }` of a tracing backend can be sent, per protocol: checked when the config is
loaded (so that `sentinel -t` names the node) and again by the exporter's transports."""

from __future__ import annotations

import re
from typing import Final

TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 §5.1)
_GRPC_KEY: Final = re.compile(r"[0-9a-z_.-]+")  # an ASCII metadata key (gRPC PROTOCOL-HTTP2)
# Set by the HTTP/1.1 exporter itself, or hop-by-hop.
_RESERVED_HTTP: Final = frozenset(
    {
        "host",
        "user-agent",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "keep-alive",
        "trailer",
        "proxy-connection",
    }
)
# Set by the gRPC client itself, or not allowed in HTTP/2 (RFC 9113 §8.2.2).
_RESERVED_GRPC: Final = frozenset(
    {
        "te",
        "content-type",
        "user-agent",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def header_problem(name: str, value: str, grpc: bool) -> str | None:
    """Why the header `name: value` cannot be sent over OTLP/gRPC (`grpc`) or HTTP; None if it can."""
    if not name.isascii():
        return "is not an ASCII name"
    lower = name.lower()
    if grpc:
        if lower.endswith("-bin"):
            return "is binary (-bin) metadata, which the exporter does not send"
        if not _GRPC_KEY.fullmatch(lower):
            return "is not a gRPC metadata key (letters, digits, '_', '.', '-')"
        if lower.startswith("grpc-") or lower in _RESERVED_GRPC:
            return "is set by the gRPC client itself"
        if not (value.isascii() and value.isprintable()):
            return "must be printable ASCII for gRPC metadata"
        return None
    if not TOKEN.fullmatch(name):
        return "is not a valid HTTP field name"
    if not all(c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff" for c in value):
        return "must be Latin-1 text without control characters (but tab) in its value"
    if lower in _RESERVED_HTTP:
        return "is set by the exporter itself"
    return None
