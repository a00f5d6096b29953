"""An agent's AgentResponse, read into what the proxy acts on (SPEC §5, Rust notes §2.4)."""

from __future__ import annotations

from typing import Any

from sentinel_agent_sdk.protocol import ProtocolError

# How a header op is kept: ("set" | "add" | "remove", lower-case name, value), as `headers.apply_ops` takes it.
HeaderOps = tuple[tuple[str, bytes, bytes], ...]

ALLOW = "allow"
BLOCK = "block"
REDIRECT = "redirect"
CHALLENGE = "challenge"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A block answer carries a body: 1xx, 204 and 304 cannot (RFC 9110), so they are not accepted.
_BLOCK_STATUSES = frozenset(range(200, 600)) - {204, 304}
_NO_OPS: HeaderOps = ()


class AgentReply:
    """One answer. `decision` is allow/block/redirect/challenge; `status`, `body` and `headers` are what
    the client gets for anything but allow."""

    __slots__ = ("body", "decision", "headers", "request_ops", "response_ops", "rule_ids", "status", "tags")

    def __init__(self) -> None:
        self.decision = ALLOW
        self.status = 0
        self.body = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.request_ops: HeaderOps = _NO_OPS
        self.response_ops: HeaderOps = _NO_OPS
        self.tags: list[str] = []
        self.rule_ids: list[str] = []


ALLOWED = AgentReply()  # the plain allow: shared, never modified


def read_reply(message: dict[str, Any]) -> AgentReply:
    """Raises ProtocolError for an answer without a usable decision (the SDK answers a failed handler
    that way): the call failed, and the agent's failure mode applies."""
    if "decision" not in message:
        custom = _dict(message.get("audit")).get("custom")
        error = _dict(custom).get("error")
        raise ProtocolError(f"answer without a decision{f' ({error})' if error else ''}")
    reply = AgentReply()
    decision = message["decision"]
    if decision in (ALLOW, {ALLOW: None}, {ALLOW: {}}):
        pass
    elif isinstance(decision, dict) and len(decision) == 1:
        ((kind, params),) = decision.items()
        params = _dict(params)
        if kind == BLOCK:
            reply.decision = BLOCK
            reply.status = _status(params.get("status", 403), _BLOCK_STATUSES)
            body = params.get("body")
            reply.body = body.encode() if isinstance(body, str) else b""
            reply.headers = _header_map(params.get("headers"))
        elif kind == REDIRECT:
            url = params.get("url")
            if not isinstance(url, str) or not url:
                raise ProtocolError("redirect without a url")
            reply.decision = REDIRECT
            reply.status = _status(params.get("status", 302), _REDIRECT_STATUSES)
            reply.headers = [(b"location", _header_value(url))]
        elif kind == CHALLENGE:
            # SPEC §5: a 403 that carries the challenge's parameters as headers.
            reply.decision = CHALLENGE
            reply.status = 403
            challenge_type = params.get("challenge_type")
            reply.headers = [(b"x-challenge-type", _header_value(challenge_type or "challenge"))]
            for name, value in _dict(params.get("params")).items():
                reply.headers.append((_header_name(f"x-challenge-{name}"), _header_value(value)))
        else:
            raise ProtocolError(f"unknown decision {kind!r}")
    else:
        raise ProtocolError(f"unreadable decision {decision!r}")
    request_ops = message.get("request_headers")
    if request_ops:
        reply.request_ops = _header_ops(request_ops)
    response_ops = message.get("response_headers")
    if response_ops:
        reply.response_ops = _header_ops(response_ops)
    audit = message.get("audit")
    if audit:
        audit = _dict(audit)
        reply.tags = [_text(t) for t in _list(audit.get("tags"))]
        reply.rule_ids = [_text(r) for r in _list(audit.get("rule_ids"))]
    return reply


def _header_ops(ops: Any) -> HeaderOps:
    out: list[tuple[str, bytes, bytes]] = []
    for op in _list(ops):
        if not isinstance(op, dict) or len(op) != 1:
            raise ProtocolError(f"unreadable header op {op!r}")
        ((kind, params),) = op.items()
        params = _dict(params)
        if kind not in ("set", "add", "remove"):
            raise ProtocolError(f"unknown header op {kind!r}")
        name = _header_name(params.get("name"))
        value = b"" if kind == "remove" else _header_value(params.get("value"))
        out.append((kind, name, value))
    return tuple(out)


def _header_map(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(_header_name(name), _header_value(value)) for name, value in _dict(headers).items()]


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# Framing and connection headers belong to the proxy: an agent setting them would corrupt the message.
_MANAGED = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer"}
)


def _header_name(name: Any) -> bytes:
    """A header name an agent asked for, lower-cased; anything that is not an RFC 9110 token, or a
    header the proxy manages, is refused."""
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"bad header name {name!r}")
    raw = name.encode("latin-1", "replace")
    if not _TOKEN.issuperset(raw):
        raise ProtocolError(f"bad header name {name!r}")
    lower = raw.lower()
    if lower in _MANAGED:
        raise ProtocolError(f"header {name} is managed by the proxy")
    return lower


def _header_value(value: Any) -> bytes:
    raw = _text(value).encode("latin-1", "replace")
    if raw.find(b"\r") >= 0 or raw.find(b"\n") >= 0 or raw.find(b"\0") >= 0:  # not `in`: see Exchange.start
        raise ProtocolError("header value with CR, LF or NUL")
    return raw


def _status(value: Any, allowed: range | frozenset[int]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise ProtocolError(f"bad status {value!r}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
