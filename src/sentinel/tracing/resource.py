"""The OpenTelemetry Resource of this proxy's spans (SPEC §6.4).

`service.name` comes from the config's `service-name` when it is set there, else from
`OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else "sentinel": the config wins over the
environment, and the environment over the default.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from urllib.parse import unquote

from sentinel import __version__
from sentinel.tracing.otlp import AttrValue

DEFAULT_SERVICE_NAME = "sentinel"
INSTANCE_ID = str(uuid.uuid4())  # one per supervisor process, shared by its spans


def parse_resource_attributes(text: str) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES`: comma-separated key=value pairs, values percent-decoded; malformed
    pairs are skipped (the OpenTelemetry SDKs do the same)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = unquote(value.strip())
    return out


def resource_attributes(
    configured_service_name: str | None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, AttrValue]]:
    env = os.environ if environ is None else environ
    attrs: dict[str, AttrValue] = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": INSTANCE_ID,
        "host.name": socket.gethostname(),
        "telemetry.sdk.name": "sentinel",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    attrs.update(parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    if env.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = env["OTEL_SERVICE_NAME"]
    if configured_service_name is not None:
        attrs["service.name"] = configured_service_name
    return list(attrs.items())
