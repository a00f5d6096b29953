"""What an agent answers: a decision plus header operations and audit data (reference notes §2.4).

`to_json` writes the Rust `AgentResponse` shape exactly: allow as the bare string `"allow"` (the only
unit-variant form serde reads), the other decisions externally tagged, every defaulted field present.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Self, cast

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Decision:
    """Build with `Decision.allow()` / `block()` / `redirect()` / `challenge()`, then chain the extras:

    `Decision.allow().set_request_header("x-user", "alice").tag("auth:ok")`
    """

    __slots__ = (
        "_audit_custom",
        "_decision",
        "_reason_codes",
        "_request_ops",
        "_response_ops",
        "_routing",
        "_rule_ids",
        "_tags",
    )

    def __init__(self, decision: str | dict[str, Any] = "allow") -> None:
        self._decision = decision
        self._request_ops: list[dict[str, Any]] = []
        self._response_ops: list[dict[str, Any]] = []
        self._routing: dict[str, str] = {}
        self._tags: list[str] = []
        self._rule_ids: list[str] = []
        self._reason_codes: list[str] = []
        self._audit_custom: dict[str, Any] = {}

    @classmethod
    def allow(cls) -> Self:
        return cls("allow")

    @classmethod
    def block(cls, status: int, body: str | None = None, headers: dict[str, str] | None = None) -> Self:
        return cls({"block": {"status": status, "body": body, "headers": dict(headers) if headers else None}})

    @classmethod
    def redirect(cls, url: str, status: int = 302) -> Self:
        if status not in _REDIRECT_STATUSES:
            raise ValueError(f"redirect status must be one of {sorted(_REDIRECT_STATUSES)}, got {status}")
        return cls({"redirect": {"url": url, "status": status}})

    @classmethod
    def challenge(cls, challenge_type: str, params: dict[str, str]) -> Self:
        return cls({"challenge": {"challenge_type": challenge_type, "params": dict(params)}})

    @property
    def is_allow(self) -> bool:
        return self._decision == "allow"

    # Header operations are applied by the proxy in list order (SPEC §5).
    def set_request_header(self, name: str, value: str) -> Self:
        self._request_ops.append({"set": {"name": name, "value": value}})
        return self

    def add_request_header(self, name: str, value: str) -> Self:
        self._request_ops.append({"add": {"name": name, "value": value}})
        return self

    def remove_request_header(self, name: str) -> Self:
        self._request_ops.append({"remove": {"name": name}})
        return self

    def set_response_header(self, name: str, value: str) -> Self:
        self._response_ops.append({"set": {"name": name, "value": value}})
        return self

    def add_response_header(self, name: str, value: str) -> Self:
        self._response_ops.append({"add": {"name": name, "value": value}})
        return self

    def remove_response_header(self, name: str) -> Self:
        self._response_ops.append({"remove": {"name": name}})
        return self

    def tag(self, *tags: str) -> Self:
        self._tags.extend(tags)
        return self

    def rule(self, *rule_ids: str) -> Self:
        self._rule_ids.extend(rule_ids)
        return self

    def reason(self, *codes: str) -> Self:
        self._reason_codes.extend(codes)
        return self

    def routing(self, key: str, value: str) -> Self:
        self._routing[key] = value
        return self

    def audit(self, key: str, value: Any) -> Self:
        """Extra JSON in `audit.custom` (`correlation_id` is reserved: the server writes it)."""
        self._audit_custom[key] = value
        return self

    def to_json(self, correlation_id: str, *, version: int = 2) -> dict[str, Any]:
        """The AgentResponse; v2 proxies match it to the call through `audit.custom.correlation_id`."""
        return {
            "version": version,
            "decision": self._decision,
            "request_headers": list(self._request_ops),
            "response_headers": list(self._response_ops),
            "routing_metadata": dict(self._routing),
            "audit": {
                "tags": list(self._tags),
                "rule_ids": list(self._rule_ids),
                "confidence": None,
                "reason_codes": list(self._reason_codes),
                "custom": {**self._audit_custom, "correlation_id": correlation_id},
            },
            "needs_more": False,
        }

    def encode(self, correlation_id: str, *, version: int = 2) -> bytes:
        """`to_json` as JSON bytes; a plain allow (the common answer) is two constant pieces around the id."""
        if (
            self._decision == "allow"
            and version == 2
            and not (self._request_ops or self._response_ops or self._routing or self._tags or self._rule_ids)
            and not (self._reason_codes or self._audit_custom)
        ):
            return ALLOW_HEAD + _quote(correlation_id).encode() + ALLOW_TAIL
        return _dumps(self.to_json(correlation_id, version=version)).encode()

    def __repr__(self) -> str:
        return f"Decision({self._decision!r})"


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_quote: Callable[[str], str] = cast("Any", json.encoder).encode_basestring_ascii
# A plain allow around its correlation id; the proxy recognises answers laid out exactly so without parsing.
ALLOW_HEAD, ALLOW_TAIL = _dumps(Decision.allow().to_json("@ID@")).encode().split(b'"@ID@"')


def error_response(correlation_id: str, error: str, *, version: int = 2) -> dict[str, Any]:
    """An AgentResponse without `decision`: the proxy cannot deserialise it as a decision, so it counts the
    call as an agent error and applies its failure mode (the correlation id still routes it to the call)."""
    return {"version": version, "audit": {"custom": {"correlation_id": correlation_id, "error": error}}}
