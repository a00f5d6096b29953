"""Header rules of the proxy (SPEC §3): hop-by-hop removal, forwarding headers, policies, framing."""

from __future__ import annotations

from typing import Final

from sentinel.config.model import HeaderOp

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard Proxy-Connection.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the proxy itself on the upstream request; an incoming copy is replaced.
REPLACED_UPSTREAM: Final = frozenset(
    {b"x-forwarded-proto", b"x-forwarded-host", b"x-correlation-id", b"content-length", b"expect"}
)
REPLACED_DOWNSTREAM: Final = frozenset({b"x-correlation-id"})


_EMPTY: Final[frozenset[bytes]] = frozenset()
_token_cache: Final[dict[bytes, frozenset[bytes]]] = {}


def connection_tokens(value: bytes | None) -> frozenset[bytes]:
    """The header names listed in a Connection header, lower-cased, beyond the hop-by-hop ones.

    Peers send a handful of distinct values ("keep-alive", "close", "Upgrade"), so results are cached.
    """
    if not value:
        return _EMPTY
    tokens = _token_cache.get(value)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in value.split(b",") if t.strip()) - HOP_BY_HOP
        if len(_token_cache) < 1024:
            _token_cache[value] = tokens
    return tokens


def compile_ops(ops: tuple[HeaderOp, ...]) -> tuple[tuple[str, bytes, bytes], ...]:
    """Header ops as bytes, ready for `apply_ops`."""
    return tuple((op.op, op.name.encode("latin-1"), (op.value or "").encode("latin-1")) for op in ops)


def apply_ops(headers: list[tuple[bytes, bytes]], ops: tuple[tuple[str, bytes, bytes], ...]) -> None:
    """Apply set/add/remove in list order; names compare case-insensitively."""
    for op, name, value in ops:
        if op == "add":
            headers.append((name, value))
            continue
        headers[:] = [(n, v) for n, v in headers if n.lower() != name]
        if op == "set":
            headers.append((name, value))


def field_lines(fields: list[tuple[bytes, bytes]]) -> bytes:
    """`name: value\r\n` for each field. Compiled, a `%` with a literal format is a plain concatenation:
    about 40 ns a field, against 70 for `b": ".join` mapped over the list and 110 for `%` interpreted."""
    if len(fields) == 1:  # a request with only its Host field: no list, no join
        name, value = fields[0]
        return b"%s: %s\r\n" % (name, value)
    return b"".join([b"%s: %s\r\n" % (name, value) for name, value in fields])


def host_without_port(host: str) -> str:
    """`example.com:8080` → `example.com`, `[::1]:8080` → `::1` (a Host header's host part)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def host_port(host: str) -> int | None:
    """`example.com:8080` → 8080, `[::1]:8080` → 8080 (a Host header's port); None when there is none, or
    when it is not a port number."""
    tail = host[host.rfind("]") + 1 :] if host.startswith("[") else host
    _, colon, port = tail.rpartition(":")
    if colon and port.isascii() and port.isdigit() and int(port) <= 65535:
        return int(port)
    return None


def chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body, as pieces for writelines."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


LAST_CHUNK: Final = b"0\r\n\r\n"
