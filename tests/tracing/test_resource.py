"""Resource attributes: config over environment over defaults (SPEC §6.4)."""

from __future__ import annotations

from sentinel import __version__
from sentinel.tracing.resource import parse_resource_attributes, resource_attributes


def test_defaults() -> None:
    attrs = dict(resource_attributes(None, {}))
    assert attrs["service.name"] == "sentinel"
    assert attrs["service.version"] == __version__
    assert attrs["telemetry.sdk.language"] == "python"
    assert attrs["service.instance.id"]
    assert attrs["host.name"]


def test_environment_then_config() -> None:
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=from-attrs,team=a%2Cb",
        "OTEL_SERVICE_NAME": "from-env",
    }
    attrs = dict(resource_attributes(None, env))
    assert attrs["service.name"] == "from-env"
    assert attrs["deployment.environment"] == "prod"
    assert attrs["team"] == "a,b"
    assert dict(resource_attributes("from-config", env))["service.name"] == "from-config"
    only_attrs = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"}
    assert dict(resource_attributes(None, only_attrs))["service.name"] == "from-attrs"


def test_malformed_pairs_are_skipped() -> None:
    assert parse_resource_attributes("a=1,,b,=2, c = 3 ") == {"a": "1", "c": "3"}
