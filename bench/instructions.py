"""Instructions per proxied request, counted by valgrind: a measure of the request path that does not drift.

    .venv/bin/python bench/instructions.py [MODE ...]     # modes of bench/hotpath.py; default: all

Runs `bench/hotpath.py` under callgrind twice per mode (2,000 and 12,000 requests) and prints the
difference divided by 10,000: the instructions one more request costs, start-up and warm-up excluded.
On the VM this project is developed on, wall-clock timings of the same code moved by ±20% within
minutes; instruction counts repeat to within a few tens. They say nothing about cache misses, syscalls
or the kernel (for those, `./dev bench`), so use them to compare two versions of the request path.
Needs valgrind (Debian: `apt-get install valgrind`). Takes about 40 s per mode on two cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOTPATH = Path(__file__).with_name("hotpath.py")
MODES = ("off", "trace-0", "trace-0.1", "trace-1", "metrics", "access", "both")
SMALL, LARGE = 2_000, 12_000
_COLLECTED = re.compile(rb"Collected : (\d+)")


def instructions(mode: str, requests: int) -> int:
    """Instructions callgrind counts for a whole `hotpath.py` run of `requests` requests."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable]
        result = subprocess.run([*command, str(HOTPATH), str(requests), mode], check=False, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"hotpath.py {mode} failed under valgrind:\n{result.stderr.decode(errors='replace')}")
    match = _COLLECTED.search(result.stderr)
    if match is None:
        raise SystemExit(f"callgrind printed no total for {mode}:\n{result.stderr.decode(errors='replace')}")
    return int(match.group(1))


def per_request(mode: str) -> float:
    with ThreadPoolExecutor(2) as pool:
        small, large = pool.map(lambda n: instructions(mode, n), (SMALL, LARGE))
    return (large - small) / (LARGE - SMALL)


def main(modes: list[str]) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; modes: {', '.join(MODES)}")
    modes = ["off", *(m for m in modes if m != "off")]  # the others are compared with it
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every run
    base = 0.0
    for mode in modes:
        count = per_request(mode)
        if mode == "off":
            base = count
            print(f"{mode:8} {count:9,.0f} instructions per request")
        else:
            print(f"{mode:8} {count:9,.0f} instructions per request ({count - base:+,.0f}, {count / base - 1:+.1%})")


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODES))
