"""Python SDK for Sentinel agents: agent protocol v2 (and v1) over Unix sockets (SPEC §5).

    from sentinel_agent_sdk import Agent, Decision, RequestHeaders, run_agent

    class Deny(Agent):
        name = "deny"

        async def on_request_headers(self, event: RequestHeaders) -> Decision:
            if event.path.startswith("/admin"):
                return Decision.block(403, "no")
            return Decision.allow()

    raise SystemExit(run_agent(Deny()))

The core is standard library only; `sentinel_agent_sdk.tracing` uses OpenTelemetry when it is installed.
"""

from sentinel_agent_sdk.cli import add_arguments, run_agent, serve
from sentinel_agent_sdk.decision import Decision
from sentinel_agent_sdk.events import (
    Metadata,
    RequestBody,
    RequestComplete,
    RequestHeaders,
    ResponseBody,
    ResponseHeaders,
)
from sentinel_agent_sdk.server import Agent, AgentServer

__all__ = [
    "Agent",
    "AgentServer",
    "Decision",
    "Metadata",
    "RequestBody",
    "RequestComplete",
    "RequestHeaders",
    "ResponseBody",
    "ResponseHeaders",
    "add_arguments",
    "run_agent",
    "serve",
]
