"""Scraping a running Sentinel's metrics endpoint in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Response, request


def scrape(port: int, accept: str | None = None) -> Response:
    return request(port, path="/metrics", headers={"Accept": accept} if accept else None)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when it is absent)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)
