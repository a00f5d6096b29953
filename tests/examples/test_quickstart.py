"""The README's quick start (`./dev run` → examples/quickstart/run.py): it comes up, one request through it
produces one connected trace in the built-in viewer (proxy, both agents, the demo backend), and Ctrl-C
stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import EXAMPLES
from tests.support.process import wait_for


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_quickstart_gives_a_connected_trace(tmp_path: Path) -> None:
    directory = tmp_path / "qs"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "quickstart" / "run.py"), "--free-ports", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("quick start ready" in x for x in lines) or proc.poll() is not None,
            60,
            what="the quick start",
        )
        text = "".join(lines)
        assert "quick start ready" in text, text
        proxy = re.search(r"proxy +(http://127\.0\.0\.1:\d+)", text)
        viewer = re.search(r"trace viewer +(http://127\.0\.0\.1:\d+)", text)
        assert proxy is not None, text
        assert viewer is not None, text
        token = re.search(r"Authorization: Bearer (\S+)'", text)
        assert token is not None
        # The first curl command of the printed list.
        req = urllib.request.Request(
            f"{proxy.group(1)}/api/users", headers={"Authorization": f"Bearer {token.group(1)}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            trace_id = (resp.headers.get("traceresponse") or "").split("-")[1:2]
            correlation = resp.headers.get("x-correlation-id")
        assert correlation

        wanted = {"sentinel", "auth-agent", "ratelimit-agent", "api-backend"}

        def connected_trace() -> bool:
            traces = get_json(f"{viewer.group(1)}/api/traces?service=sentinel&limit=20")["data"]
            for trace in traces:
                services = {p["serviceName"] for p in trace["processes"].values()}
                if wanted <= services:
                    found.append(trace)
                    return True
            return False

        found: list[Any] = []
        wait_for(connected_trace, 60, interval=0.5, what="one trace with the proxy, both agents and the backend")
        trace = found[0]
        if trace_id:
            assert trace["traceID"] == trace_id[0]
        spans = {s["spanID"]: s for s in trace["spans"]}
        by_name = {s["operationName"]: s for s in trace["spans"]}
        parent = {s["spanID"]: (s["references"] or [{"spanID": ""}])[0]["spanID"] for s in trace["spans"]}
        # The agents' own spans hang under the proxy's agent-call spans; the backend under the CLIENT span.
        assert parent[by_name["auth.verify"]["spanID"]] == by_name["agent auth request_headers"]["spanID"]
        assert parent[by_name["ratelimit.check"]["spanID"]] == by_name["agent ratelimit request_headers"]["spanID"]
        backend = by_name["GET /api/users"]
        assert spans[parent[backend["spanID"]]]["operationName"] == "GET"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        code = proc.wait(60)
        reader.join(5)
    assert code == 0
    assert "quick start stopped" in "".join(lines)
