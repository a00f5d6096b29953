"""The supervisor's heap settings (supervisor/heap.py): large buffers freed and allocated again, as the span
exporter does per batch, reuse memory instead of faulting in fresh pages. Run in child processes, so that each
starts from glibc's defaults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

# An exporter batch's pattern: a few buffers of 100 KiB or more alive together (workers' frames, the request),
# then all freed; 200 batches. Prints the minor page faults they took.
CHURN = """
import resource, sys
from sentinel.supervisor.heap import keep_large_blocks_in_heap
if sys.argv[1] == "tuned":
    assert keep_large_blocks_in_heap() == []
def batch():
    held = [b"x" * (100 * 1024 + i) for i in range(8)]
    del held
for _ in range(5):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    # Without the variables that would change the allocator's defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "PYTHONMALLOC"))}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, env=env
    ).stdout
    return int(out)


def test_large_buffers_stop_faulting_in_fresh_pages() -> None:
    # Every platform Sentinel ships on is glibc (Debian, the python:3.11-slim image): no skip elsewhere.
    assert platform.libc_ver()[0] == "glibc"
    # With glibc's defaults the freed top of the heap goes back to the kernel after every batch, and the
    # next batch faults its pages in again (about 100 per batch here).
    assert faults("default") > 200 * 20
    # Tuned, the heap keeps them: a handful of faults in all.
    assert faults("tuned") < 200
