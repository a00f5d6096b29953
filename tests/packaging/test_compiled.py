"""The request path runs compiled (mypyc) unless the build was asked not to compile it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel import compiled

REPO = Path(__file__).resolve().parents[2]


def test_every_listed_module_exists() -> None:
    for module in compiled.MODULES:
        assert (REPO / "src" / (module.replace(".", "/") + ".py")).is_file(), module


@pytest.mark.skipif(os.environ.get("SENTINEL_PURE_PYTHON") == "1", reason="built without compiling (asked for)")
def test_request_path_is_compiled_and_current() -> None:
    # ./dev rebuilds when a compiled module's source changes; a stale build would test old code.
    assert compiled.status() == "compiled", "the request path is not compiled: run ./dev test (it rebuilds)"
    assert compiled.stale() == [], "compiled modules older than their sources: run ./dev test (it rebuilds)"


def test_version_says_how_the_request_path_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"(request path {compiled.status()})" in out
