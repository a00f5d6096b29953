"""Sentinel: a reverse proxy with distributed tracing done right."""

__version__ = "0.1.0"
