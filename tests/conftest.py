"""Shared fixtures: paths to the repository's files, a test upstream, an OTLP/gRPC receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.otlp_receivers import GrpcReceiver
from tests.support.threaded import LoopThread
from tests.support.upstream import UpstreamServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[LoopThread, GrpcReceiver]]:
    """An OTLP/gRPC receiver (official messages) on its own event-loop thread; `.port` to export to."""
    loop = LoopThread()
    grpc_receiver = loop.run(GrpcReceiver().start())
    yield loop, grpc_receiver
    loop.stop(grpc_receiver.stop)
