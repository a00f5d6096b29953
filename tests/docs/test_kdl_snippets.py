"""Every KDL snippet in docs/ and the READMEs, and every .kdl file in examples/ and deploy/, is a valid
configuration (what `sentinel test` checks), so that a reader who copies one gets no surprise.

Snippets that show one part of a config are completed the way a reader would: children of
`observability` are put inside it, a config without listeners gets one, and upstreams a route names
without defining are given a target.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config import ConfigError, load_config_text
from tests.conftest import REPO

_FENCE = re.compile(r"^```kdl\n(.*?)^```", re.M | re.S)
_OBSERVABILITY_CHILDREN = ("tracing", "logging", "metrics")
_TOP_LEVEL = re.compile(r"^([a-z-]+)\s*\{", re.M)


def markdown_files() -> list[Path]:
    files = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
    files += sorted(p for d in ("examples", "deploy") for p in (REPO / d).rglob("*.md"))
    return files


def snippets() -> list[tuple[str, str]]:
    out = []
    for path in markdown_files():
        for n, match in enumerate(_FENCE.finditer(path.read_text()), 1):
            out.append((f"{path.relative_to(REPO)}#{n}", match.group(1)))
    return out


def complete(snippet: str) -> str:
    top = set(_TOP_LEVEL.findall(snippet))
    text = snippet
    if top and top <= set(_OBSERVABILITY_CHILDREN):
        text = "observability {\n" + text + "\n}\n"
    if not re.search(r"^(listeners)\s*\{", text, re.M):
        text += '\nlisteners {\n    listener "http" {\n        address "127.0.0.1:8080"\n    }\n}\n'
    if not re.search(r"^upstreams\s*\{", text, re.M):
        names = sorted(set(re.findall(r'^\s*upstream "([^"]+)"\s*$', text, re.M)))
        if names:
            text += (
                "upstreams {\n"
                + "".join(f'    upstream "{n}" {{\n        target "127.0.0.1:3000"\n    }}\n' for n in names)
                + "}\n"
            )
    return text


SNIPPETS = snippets()


def test_the_docs_have_snippets() -> None:
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize(("where", "snippet"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_is_a_valid_config(where: str, snippet: str) -> None:
    try:
        load_config_text(complete(snippet), where)
    except ConfigError as exc:
        pytest.fail(f"{where}:\n" + "\n".join(str(i) for i in exc.issues))


KDL_FILES = sorted(p for d in ("examples", "deploy") for p in (REPO / d).rglob("*.kdl"))


@pytest.mark.parametrize("path", KDL_FILES, ids=[str(p.relative_to(REPO)) for p in KDL_FILES])
def test_kdl_file_passes_sentinel_test(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", "test", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stdout
