"""Agents (SPEC §5): the proxy side of the agent protocol, per worker."""
