"""The agent SDK (sentinel_agent_sdk) and the example agents, over real Unix sockets."""
