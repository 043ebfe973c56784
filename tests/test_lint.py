"""The codebase stays ruff- and mypy-clean (both are in the test extras, so CI checks them).

Both run as ``python -m TOOL`` with the interpreter running the tests, so they are found in
the same environment as pytest whatever PATH says; a missing tool fails, it does not skip.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(module: str) -> list[str]:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed for {sys.executable}; it is in the test extras: "
                    "python3 -m pip install -e '.[test]'", pytrace=False)
    return [sys.executable, "-m", module]


def test_ruff_clean() -> None:
    done = subprocess.run([*_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_clean() -> None:
    done = subprocess.run([*_tool("mypy"), "--cache-dir", "/dev/null"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
