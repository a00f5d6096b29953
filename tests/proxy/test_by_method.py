"""The per-method cache with the last method in front (proxy/by_method.py)."""

from __future__ import annotations

from sentinel.proxy.by_method import ByMethod
from sentinel.tracing.spans import SpanStart


def test_span_starts_by_method_follow_the_method_asked_for() -> None:
    starts = ByMethod[SpanStart]()
    get, post = SpanStart(b"get", b""), SpanStart(b"post", b"")
    assert starts.get(b"GET") is None
    assert starts.put(b"GET", get) is get
    assert starts.put(b"POST", post) is post
    # Methods arrive as new bytes objects: equal content finds the entry, through the dict or the last one.
    for method, expected in [(b"GET", get), (b"GET", get), (b"POST", post), (b"GET", get), (b"PUT", None)]:
        assert starts.get(bytes(bytearray(method))) is expected
    assert starts.get(b"POST") is post  # after a miss, the last hit still answers right
