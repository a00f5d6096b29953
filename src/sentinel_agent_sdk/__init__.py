"""Python SDK for Sentinel agents (agent protocol v2 over Unix sockets).

The SDK is filled in by the agents work (SPEC §5); this package already ships so that agent authors
can depend on its name.
"""

__all__: list[str] = []
