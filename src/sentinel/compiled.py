"""Which modules are compiled to C with mypyc, and whether this installation runs them compiled.

The request path is plain typed Python; `setup.py` compiles the modules listed here with mypyc when the
package is installed (set SENTINEL_PURE_PYTHON=1 to skip it). Compiled, the same code runs about 1.5x
faster per request (docs/performance.md); interpreted, it behaves the same.
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The data plane's request path, and what it calls per request (tracing, access log, metrics). One list,
# read by setup.py too.
MODULES: tuple[str, ...] = (
    "sentinel.ipc.batch",
    "sentinel.logging.access",
    "sentinel.logging.timestamps",
    "sentinel.metrics.recording",
    "sentinel.proxy.by_method",
    "sentinel.proxy.errors",
    "sentinel.proxy.exchange",
    "sentinel.proxy.headers",
    "sentinel.proxy.listener",
    "sentinel.proxy.router",
    "sentinel.tracing.context",
    "sentinel.tracing.correlation",
    "sentinel.tracing.otlp",
    "sentinel.tracing.policy",
    "sentinel.tracing.propagators",
    "sentinel.tracing.recorder",
    "sentinel.tracing.sampling",
    "sentinel.tracing.spans",
    "sentinel.upstream.balancer",
    "sentinel.upstream.cluster",
    "sentinel.upstream.connection",
    "sentinel.upstream.target",
)


def is_compiled(module: str) -> bool:
    path = getattr(importlib.import_module(module), "__file__", None) or ""
    return path.endswith(tuple(EXTENSION_SUFFIXES))


def status() -> str:
    """`compiled`, `interpreted`, or `partly compiled (...)`, for --version and the start-up log."""
    compiled = [m for m in MODULES if is_compiled(m)]
    if len(compiled) == len(MODULES):
        return "compiled"
    if not compiled:
        return "interpreted"
    return f"partly compiled ({len(compiled)} of {len(MODULES)} modules)"


def stale() -> list[str]:
    """Compiled modules whose source changed after they were built (an in-place, editable build)."""
    out = []
    for module in MODULES:
        if not is_compiled(module):
            continue
        built = Path(importlib.import_module(module).__file__ or "")
        source = built.parent / (module.rsplit(".", 1)[1] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            out.append(module)
    return out
