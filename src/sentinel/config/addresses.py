"""Parsing of `HOST:PORT` socket addresses and exporter endpoint URLs."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from sentinel.config.model import SocketAddress

# RFC 1123 host names: labels of letters, digits and hyphens.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class AddressError(ValueError):
    pass


def parse_socket_address(text: str, *, allow_port_zero: bool = False) -> SocketAddress:
    """`127.0.0.1:80`, `[::1]:80` or `example.com:80`; the port is required."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise AddressError(f'"{text}" is not HOST:PORT (IPv6 is written [::1]:8080)')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f'"{host}" in "{text}" is not an IPv6 address') from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise AddressError(f'"{text}" is not HOST:PORT, e.g. "127.0.0.1:8080"')
        if ":" in host:
            raise AddressError(f'"{text}": an IPv6 host is written in brackets, e.g. "[::1]:8080"')
        if not _is_ipv4(host) and not _HOSTNAME.match(host):
            raise AddressError(f'"{host}" in "{text}" is not a valid host name or IP address')
    if not port_text.isdigit():
        raise AddressError(f'"{text}": the port must be a number')
    port = int(port_text)
    if port > 65535 or (port == 0 and not allow_port_zero):
        raise AddressError(f'"{text}": the port must be between {0 if allow_port_zero else 1} and 65535')
    return SocketAddress(host, port)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def addresses_overlap(a: SocketAddress, b: SocketAddress) -> bool:
    """True when binding both would collide (same port, same host or one of them a wildcard)."""
    if a.port != b.port or a.port == 0:
        return False
    return a.host == b.host or is_wildcard(a.host) or is_wildcard(b.host)


def check_endpoint_url(text: str) -> str | None:
    """None if `text` is a usable http(s) endpoint URL, else the reason it is not."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f'"{text}" is not a valid URL ({exc})'
    if parts.scheme not in ("http", "https"):
        return f'"{text}" must start with http:// or https://'
    if not parts.hostname:
        return f'"{text}" has no host'
    if port == 0:
        return f'"{text}" has port 0'
    return None
