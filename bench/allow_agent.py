"""The benchmark's agent: the SDK's base Agent, which allows every request (`./dev bench --agents`).

python bench/allow_agent.py -s /tmp/allow.sock
"""

from __future__ import annotations

from sentinel_agent_sdk import Agent, Decision, RequestHeaders, run_agent


class AllowAgent(Agent):
    name = "allow"

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        return Decision.allow()


if __name__ == "__main__":
    raise SystemExit(run_agent(AllowAgent()))
