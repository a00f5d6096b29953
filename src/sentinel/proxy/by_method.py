"""Values keyed by request method, with the method last asked for in front of the dict.

The parser hands over each request's method as a new bytes object, so a dict lookup hashes it and
compares it with the key (~400 instructions compiled); most requests to a route share a method, and
comparing with the last one asked for costs ~20. Used for the span pieces of a method
(`tracing/spans.py`) and a route's metrics per method (`metrics/recording.py`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")


class ByMethod(Generic[V]):
    __slots__ = ("_last", "_last_value", "_limit", "values")

    def __init__(self, limit: int = 1024) -> None:
        """At most `limit` methods are kept (llhttp accepts a fixed set; the bound is there all the same)."""
        self.values: dict[bytes, V] = {}
        self._limit = limit
        self._last = b""  # no method is empty
        self._last_value: V | None = None

    def get(self, method: bytes) -> V | None:
        if method == self._last:
            return self._last_value
        value = self.values.get(method)
        if value is not None:
            self._last = method
            self._last_value = value
        return value

    def put(self, method: bytes, value: V) -> V:
        """Keep `value` for `method` (unless `limit` methods are kept already) and return it."""
        if len(self.values) < self._limit:
            self.values[method] = value
        return value
