"""Bearer-token authentication agent for Sentinel (SPEC §5).

    python examples/agents/auth.py -s /var/run/sentinel/auth.sock --token s3cret:alice --token other

A request without `Authorization: Bearer <known token>` is answered 401 with a `WWW-Authenticate`
challenge (RFC 6750); a known token is let through with `x-auth-subject` set for the upstream. Tokens come
from `--token TOKEN[:SUBJECT]` and from the proxy's `config { tokens "TOKEN[:SUBJECT]" ... }` block.
Each call is traced as `auth.verify`, a child of the proxy's agent-call span.
"""

from __future__ import annotations

import argparse
import hmac
import json
from typing import Any

from sentinel_agent_sdk import Agent, Decision, RequestHeaders, run_agent
from sentinel_agent_sdk.tracing import child_span

REALM = 'Bearer realm="sentinel"'
UNAUTHORIZED_BODY = json.dumps({"error": "unauthorized"}, separators=(",", ":"))


def parse_tokens(specs: list[str]) -> dict[str, str]:
    """`TOKEN[:SUBJECT]` → {token: subject}; the subject defaults to the token itself."""
    tokens: dict[str, str] = {}
    for spec in specs:
        token, _, subject = spec.partition(":")
        if not token:
            raise ValueError(f"empty token in {spec!r}")
        tokens[token] = subject or token
    return tokens


class AuthAgent(Agent):
    name = "auth"
    version = "0.1.0"

    def __init__(self, tokens: dict[str, str]) -> None:
        self._cli_tokens = dict(tokens)
        self._tokens = dict(tokens)

    async def on_configure(self, config: dict[str, Any]) -> bool:
        specs = config.get("tokens", [])
        if isinstance(specs, str):
            specs = [specs]  # KDL `tokens "t1"` (one argument) arrives as a string, not a list
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            return False
        try:
            pushed = parse_tokens(specs)
        except ValueError:
            return False
        # The pushed set replaces the previous push; tokens given on the command line always stay.
        self._tokens = {**pushed, **self._cli_tokens}
        return True

    def verify(self, authorization: str | None) -> tuple[str, str | None]:
        """("ok", subject) | ("missing", None) | ("invalid", None)."""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing", None
        subject = None
        for known, known_subject in self._tokens.items():
            # Compare against every token, in constant time, so timing does not reveal a prefix.
            if hmac.compare_digest(known.encode(), token.encode()):
                subject = known_subject
        return ("ok", subject) if subject is not None else ("invalid", None)

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        with child_span("sentinel-auth-agent", "auth.verify", event.metadata.traceparent) as span:
            result, subject = self.verify(event.header("authorization"))
            span.set_attribute("auth.result", result)
        if subject is not None:
            return Decision.allow().set_request_header("x-auth-subject", subject).tag("auth:ok")
        challenge = REALM if result == "missing" else f'{REALM}, error="invalid_token"'
        headers = {"WWW-Authenticate": challenge, "Content-Type": "application/json"}
        return Decision.block(401, UNAUTHORIZED_BODY, headers).tag("auth:denied")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="auth-agent", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--token", action="append", default=[], metavar="TOKEN[:SUBJECT]", help="an accepted bearer token (repeatable)"
    )
    return run_agent(lambda args: AuthAgent(parse_tokens(args.token)), argv, parser=parser)


if __name__ == "__main__":
    raise SystemExit(main())
