"""Fixtures for data-plane tests: a real `sentinel` process in front of the test upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import proxy_config
from tests.support.process import SentinelProcess, sentinel
from tests.support.upstream import UpstreamServer

__all__ = ["proxy_config"]


@pytest.fixture
def proxy(tmp_path: Path, upstream: UpstreamServer) -> Iterator[SentinelProcess]:
    with sentinel(tmp_path, proxy_config(upstream.address, limits="limits {\n    max-body-size 1000000\n}\n")) as p:
        yield p
