"""An SDK agent whose answers the test chooses per request, through request headers.

    python -m tests.support.scripted_agent -s PATH --name NAME [--record FILE] [--otlp-endpoint URL] [--protocol v1]

On request headers, `x-agent-NAME` says what to do (absent or `allow`: allow):
  block       block 403, body `blocked by NAME`, header `x-blocked-by: NAME`
  redirect    redirect to https://login.example.com/?from=NAME (302)
  challenge   challenge `captcha` with params {"site-key": "k-NAME"}
  sleep:MS    wait MS milliseconds, then allow
  headers     allow with request ops set x-from-NAME: 1, add x-added: NAME, remove x-remove-me and response
              ops set x-resp-NAME: 1, remove x-upstream-secret
  tags        allow with tag t-NAME and rule r-1
  error       the handler raises (the answer has no decision)
  crash       the process exits at once with status 3
Later events of the same request (matched by correlation id):
  response headers: `x-agent-NAME-response: block` → block 502 `response blocked`;
                    `headers` → allow, set response header x-resp-hdr-NAME: 1
  request body containing b"forbidden" → block 403 `body rejected`
  response body containing b"secret"  → block 451 `response body rejected`
A request-headers call cancelled by the proxy is recorded as event `cancelled`.
Configure: rejected when the config has `"reject": true`, accepted otherwise.
`--record FILE` appends `{"event": NAME, "payload": RAW}` per event received, one JSON line each.
Each request-headers call makes a span `NAME.process` under the proxy's agent-call span.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
from collections import OrderedDict
from typing import Any

from sentinel_agent_sdk import (
    Agent,
    Decision,
    RequestBody,
    RequestComplete,
    RequestHeaders,
    ResponseBody,
    ResponseHeaders,
    run_agent,
)
from sentinel_agent_sdk.tracing import child_span

_MAX_REMEMBERED = 10_000  # requests whose complete event never comes must not grow the map forever


class ScriptedAgent(Agent):
    version = "0.0.1"

    def __init__(self, name: str, record: str | None = None) -> None:
        self.name = name
        self._record_path = record
        self._record_lock = threading.Lock()
        self._response_actions: OrderedDict[str, str] = OrderedDict()

    def _record(self, event: str, payload: dict[str, Any]) -> None:
        if self._record_path is None:
            return
        line = json.dumps({"event": event, "payload": payload}) + "\n"
        with self._record_lock, open(self._record_path, "a") as f:
            f.write(line)
            f.flush()

    async def on_configure(self, config: dict[str, Any]) -> bool:
        self._record("configure", {"config": config})
        return config.get("reject") is not True

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        self._record("request_headers", event.raw)
        name = self.name
        response_action = event.header(f"x-agent-{name}-response")
        if response_action is not None:
            self._response_actions[event.correlation_id] = response_action
            while len(self._response_actions) > _MAX_REMEMBERED:
                self._response_actions.popitem(last=False)
        action = event.header(f"x-agent-{name}") or "allow"
        with child_span("sentinel-scripted-agent", f"{name}.process", event.metadata.traceparent) as span:
            span.set_attribute("agent.action", action)
            try:
                return await self._act(action)
            except asyncio.CancelledError:
                # The proxy sent Cancel (its client went away, or the call timed out): tests look for this.
                self._record("cancelled", {"correlation_id": event.correlation_id})
                raise

    async def _act(self, action: str) -> Decision:
        name = self.name
        if action.startswith("sleep:"):
            await asyncio.sleep(int(action.removeprefix("sleep:")) / 1000)
            return Decision.allow()
        if action == "block":
            return Decision.block(403, f"blocked by {name}", {"x-blocked-by": name})
        if action == "redirect":
            return Decision.redirect(f"https://login.example.com/?from={name}", 302)
        if action == "challenge":
            return Decision.challenge("captcha", {"site-key": f"k-{name}"})
        if action == "headers":
            return (
                Decision.allow()
                .set_request_header(f"x-from-{name}", "1")
                .add_request_header("x-added", name)
                .remove_request_header("x-remove-me")
                .set_response_header(f"x-resp-{name}", "1")
                .remove_response_header("x-upstream-secret")
            )
        if action == "tags":
            return Decision.allow().tag(f"t-{name}").rule("r-1")
        if action == "error":
            raise RuntimeError("scripted failure")
        if action == "crash":
            os._exit(3)
        return Decision.allow()

    async def on_request_body(self, event: RequestBody) -> Decision:
        self._record("request_body_chunk", event.raw)
        if b"forbidden" in event.data:
            return Decision.block(403, "body rejected")
        return Decision.allow()

    async def on_response_headers(self, event: ResponseHeaders) -> Decision:
        self._record("response_headers", event.raw)
        action = self._response_actions.get(event.correlation_id)
        if action == "block":
            return Decision.block(502, "response blocked")
        if action == "headers":
            return Decision.allow().set_response_header(f"x-resp-hdr-{self.name}", "1")
        return Decision.allow()

    async def on_response_body(self, event: ResponseBody) -> Decision:
        self._record("response_body_chunk", event.raw)
        if b"secret" in event.data:
            return Decision.block(451, "response body rejected")
        return Decision.allow()

    async def on_request_complete(self, event: RequestComplete) -> None:
        self._record("request_complete", event.raw)
        self._response_actions.pop(event.correlation_id, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripted_agent")
    parser.add_argument("--name", required=True, help="the agent's name; it reads the x-agent-NAME header")
    parser.add_argument("--record", default=None, help="append every event received to this file (JSON lines)")
    return run_agent(lambda args: ScriptedAgent(args.name, args.record), argv, parser=parser)


if __name__ == "__main__":
    raise SystemExit(main())
