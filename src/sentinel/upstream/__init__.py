"""Upstreams: target state, load balancing, connection pools and health (SPEC §4)."""
