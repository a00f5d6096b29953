"""`listeners { listener "ID" { ... } }`."""

from __future__ import annotations

from sentinel.config.addresses import AddressError, parse_socket_address
from sentinel.config.model import ListenerConfig, ListenerProtocol, SocketAddress, TlsConfig
from sentinel.config.reader import Block, ConfigNode, read_entries

_PROTOCOLS = {"http": ListenerProtocol.HTTP, "https": ListenerProtocol.HTTPS}
_REFUSED_PROTOCOLS = {
    "h2": "is not supported yet (HTTP/1.1 only: use http or https)",
    "h3": "is not supported yet (HTTP/1.1 only: use http or https)",
}


def read_address(
    b: Block, key: str, *, required: str | None = None, allow_port_zero: bool = False
) -> SocketAddress | None:
    text = b.string(key, None, required=required)
    node = b.get(key)
    if text is None or node is None:
        return None
    try:
        return parse_socket_address(text, allow_port_zero=allow_port_zero)
    except AddressError as exc:
        node.error(f"{key}: {exc}")
        return None


def read_listeners(node: ConfigNode) -> list[ListenerConfig]:
    return read_entries(node, "listener", _read_listener)


def _read_listener(node: ConfigNode) -> ListenerConfig | None:
    listener_id = node.id_arg()
    node.no_properties()
    b = Block(
        node,
        ["address", "protocol", "request-timeout-secs", "keepalive-timeout-secs", "default-route", "tls"],
    )
    address = read_address(b, "address", required='address "0.0.0.0:8080"', allow_port_zero=True)
    protocol = b.choice("protocol", _PROTOCOLS, ListenerProtocol.HTTP, extra=_REFUSED_PROTOCOLS)
    d = ListenerConfig("", SocketAddress("", 0))
    tls_node = b.block("tls")
    tls = _read_tls(tls_node) if tls_node is not None else None
    if protocol is ListenerProtocol.HTTPS and tls_node is None:
        node.error('protocol "https" needs a tls { cert-file "..."; key-file "..." } block')
    if protocol is ListenerProtocol.HTTP and tls_node is not None:
        tls_node.error('tls is set but the protocol is "http"; write protocol "https"')
    config = ListenerConfig(
        id=listener_id or "",
        address=address or d.address,
        protocol=protocol,
        request_timeout_secs=b.number("request-timeout-secs", d.request_timeout_secs, minimum=0.001),
        keepalive_timeout_secs=b.number("keepalive-timeout-secs", d.keepalive_timeout_secs, minimum=0),
        default_route=b.string("default-route", None),
        tls=tls,
    )
    return config if listener_id is not None and address is not None else None


def _read_tls(node: ConfigNode) -> TlsConfig | None:
    b = Block(node, ["cert-file", "key-file", "ca-file"])
    cert = b.string("cert-file", None, required='cert-file "/etc/sentinel/cert.pem"')
    key = b.string("key-file", None, required='key-file "/etc/sentinel/key.pem"')
    ca = b.string("ca-file", None)
    if cert is None or key is None:
        return None
    return TlsConfig(cert_file=cert, key_file=key, ca_file=ca)
