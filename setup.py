"""Build hook: compile the request path with mypyc (see src/sentinel/compiled.py).

SENTINEL_PURE_PYTHON=1 installs the same package without compiling anything.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import setup


def compiled_modules() -> list[str]:
    # Read the list without importing the package (its dependencies may not be installed yet).
    tree = ast.parse(Path("src/sentinel/compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "MODULES":
            return list(ast.literal_eval(node.value))
    raise SystemExit("src/sentinel/compiled.py: MODULES not found")


def ext_modules() -> list[object]:
    if os.environ.get("SENTINEL_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    paths = ["src/" + module.replace(".", "/") + ".py" for module in compiled_modules()]
    # The build environment has setuptools and mypy only: the runtime dependencies' types are unknown
    # there (they are Any to the compiled code, as they are untyped anyway), and modules the compiled
    # ones import are read for their types without being checked (`./dev test` runs mypy on all).
    flags = ["--ignore-missing-imports", "--follow-imports=silent"]
    return list(mypycify([*flags, *paths], opt_level="3", strip_asserts=False))


setup(ext_modules=ext_modules())
