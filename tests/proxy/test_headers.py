"""The Host field's parts (server.address and server.port of SERVER spans, host routing)."""

from __future__ import annotations

import pytest

from sentinel.proxy.headers import host_port, host_without_port


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [
        ("example.com", "example.com", None),
        ("example.com:8080", "example.com", 8080),
        ("example.com:", "example.com", None),
        ("example.com:http", "example.com", None),
        ("example.com:65536", "example.com", None),
        ("example.com:²", "example.com", None),
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("[::1]", "::1", None),
        ("[::1]:8443", "::1", 8443),
        ("[::1]:", "::1", None),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
    ],
)
def test_host_parts(host: str, address: str, port: int | None) -> None:
    assert host_without_port(host) == address
    assert host_port(host) == port
