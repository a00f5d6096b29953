"""A worker's agents: one client per configured agent, and each route's agents per event, resolved once
per config so the request path only walks a tuple."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sentinel.agents.client import AgentClient
from sentinel.agents.events import route_members
from sentinel.agents.round import AgentBinding
from sentinel.config.model import AgentEvent, Config, FailureMode, RouteConfig
from sentinel.metrics.recording import WorkerMetrics
from sentinel_agent_sdk import protocol

# Configured event → (v2 message type, protocol event name).
_WIRE = {
    AgentEvent.REQUEST_HEADERS: (protocol.REQUEST_HEADERS, "request_headers"),
    AgentEvent.REQUEST_BODY: (protocol.REQUEST_BODY_CHUNK, "request_body_chunk"),
    AgentEvent.RESPONSE_HEADERS: (protocol.RESPONSE_HEADERS, "response_headers"),
    AgentEvent.RESPONSE_BODY: (protocol.RESPONSE_BODY_CHUNK, "response_body_chunk"),
    AgentEvent.LOG: (protocol.REQUEST_COMPLETE, "request_complete"),
}


@dataclass(frozen=True, slots=True)
class RouteAgents:
    """The agents a route calls, per event, in route order."""

    request_headers: tuple[AgentBinding, ...]
    request_body: tuple[AgentBinding, ...]
    response_headers: tuple[AgentBinding, ...]
    response_body: tuple[AgentBinding, ...]
    log: tuple[AgentBinding, ...]
    metadata: bytes  # the route's constant members of RequestHeaders metadata (events.route_members)


class AgentManager:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, metrics: WorkerMetrics | None) -> None:
        self.config = config
        self.metrics = metrics
        used = {ra.agent_id for route in config.routes for ra in route.agents}
        # Only agents some route calls get a connection.
        self.clients = {aid: AgentClient(a, loop) for aid, a in config.agents.items() if aid in used}

    def start(self) -> None:
        for client in self.clients.values():
            client.start()

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()

    def for_route(self, route: RouteConfig) -> RouteAgents | None:
        if not route.agents:
            return None
        per_event: dict[AgentEvent, list[AgentBinding]] = {event: [] for event in AgentEvent}
        for ra in route.agents:
            client = self.clients[ra.agent_id]
            agent = client.config
            mode = ra.failure_mode or agent.failure_mode
            timeout_ms = ra.timeout_ms or agent.timeout_ms
            for event in agent.events:
                kind, event_type = _WIRE[event]
                per_event[event].append(
                    AgentBinding(
                        client=client,
                        agent_id=agent.id,
                        event=event.value,
                        kind=kind,
                        event_type=event_type,
                        timeout=timeout_ms / 1000,
                        fail_closed=mode is FailureMode.CLOSED,
                        failure_mode=mode.value,
                        metrics=self.metrics.agent(agent.id, event.value) if self.metrics is not None else None,
                    )
                )
        return RouteAgents(
            request_headers=tuple(per_event[AgentEvent.REQUEST_HEADERS]),
            request_body=tuple(per_event[AgentEvent.REQUEST_BODY]),
            response_headers=tuple(per_event[AgentEvent.RESPONSE_HEADERS]),
            response_body=tuple(per_event[AgentEvent.RESPONSE_BODY]),
            log=tuple(per_event[AgentEvent.LOG]),
            metadata=route_members(route.id, route.upstream),
        )
