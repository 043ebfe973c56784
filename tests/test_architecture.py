"""The tree shows the architecture (issue 22): the import-linter contract in pyproject.toml
holds, no import cycle anywhere (``TYPE_CHECKING`` imports included), no module over 400
lines, and every package says its job and what it may import."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC
from mq.engine.core import tomlparse

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(SRC) / "mq"
MAX_LINES = 400


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    proc = subprocess.run([*command, "--no-cache", str(REPO / "pyproject.toml")], cwd=SRC,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _imports() -> dict[str, set[str]]:
    """Every mq module and the mq modules it imports (anywhere in it: ``TYPE_CHECKING`` blocks
    and function bodies included), a ``from P import m`` of a submodule counted as ``P.m``."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in modules else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a path), or [] when there is none."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_no_import_cycle_anywhere() -> None:
    graph = _imports()
    # a package's __init__ importing its own modules is how a package is made, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycle = _cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_package_says_its_job_and_what_it_may_import() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init.relative_to(SRC)} has no docstring"
        assert "import" in doc, f"{init.relative_to(SRC)} does not say what it may import"
    packages = {p.parent for p in PACKAGE.rglob("*.py")} - {PACKAGE}
    missing = sorted(str(p.relative_to(SRC)) for p in packages if not (p / "__init__.py").exists()
                     and p.name != "__pycache__")
    assert not missing, f"packages without an __init__.py: {missing}"


def test_the_architecture_page_draws_the_contract() -> None:
    """docs/architecture.md's diagram has the contract's layers, in its order, each imported
    only by the one above it in the chain (``a --> b --> ...``)."""
    contract = tomlparse.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contract if c["type"] == "layers")
    page = (REPO / "docs" / "architecture.md").read_text()
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    labels = dict(re.findall(r'^\s*(\w+)\["(mq(?:\.\w+)+)<br/>', diagram, re.M))
    chain = next(line for line in diagram.splitlines() if "-->" in line)
    drawn = [labels[node.strip()] for node in chain.split("-->")]
    assert drawn == layers
