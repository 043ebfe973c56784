"""The engine runs on the lab host: standard library only, and Python 3.9 works.

``src/mq/engine`` is shipped to hosts that may have nothing but an old
``python3``, so it may import only the standard library and itself.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import LAB_TOML, SRC

ENGINE = Path(SRC) / "mq" / "engine"
PYTHON39 = next((p for p in ("/root/.pyenv/versions/3.9.18/bin/python3", shutil.which("python3.9"))
                 if p and os.access(p, os.X_OK)), None)


def imported_modules(path: Path, package: str = "mq.engine") -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path`` (a module of ``package``);
    relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level > 1:
                    parts = parts[: -(node.level - 1)]
                base = ".".join(parts)
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def test_engine_imports_only_stdlib_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "tomli"}  # tomli: shipped with it (transport/bundle.py)
    modules = sorted(ENGINE.rglob("*.py"))
    assert len(modules) >= 5, f"engine modules not found under {ENGINE}"
    offenders = []
    for path in modules:
        package = ".".join(path.relative_to(SRC).parent.parts)
        for line, name in imported_modules(path, package):
            top = name.split(".")[0]
            if name == "mq.engine" or name.startswith("mq.engine."):
                continue
            if top not in allowed:
                offenders.append(f"{path.relative_to(SRC)}:{line}: {name}")
    assert offenders == [], "engine must import only the standard library and mq.engine"


def test_import_checker_catches_escapes(tmp_path: Path) -> None:
    """The checker itself: relative imports leaving the engine and third-party ones are seen."""
    sample = tmp_path / "sample.py"
    sample.write_text("from .. import render\nfrom ..cli import app\nimport typer\nfrom . import names\n")
    assert [name for _, name in imported_modules(sample)] == ["mq", "mq.cli", "typer", "mq.engine"]


@pytest.mark.skipif(PYTHON39 is None, reason="python3.9 not installed")
def test_engine_runs_on_python39(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.toml").write_text(LAB_TOML)
    script = textwrap.dedent(
        """
        import json, os, sys
        assert sys.version_info[:2] == (3, 9), sys.version
        from mq.engine.core.inventory import load_inventory
        from mq.engine.lockdir.semaphore import Engine
        base = sys.argv[1]
        engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
        grant = engine.wait("trio", key="py39", timeout=30, budget=0)
        held = [s.board for s in engine.info("trio") if s.holder is not None]
        released = [r.board for r in engine.signal("trio", key="py39")]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("typer", "click", "rich", "paramiko"))
        print(json.dumps({"board": grant.board, "grant": grant.grant, "held": held, "released": released,
                          "third_party": loaded, "left": sorted(os.listdir(base))}))
        """
    )
    from mq.transport.bundle import engine_zip  # what is shipped: the engine and tomli, nothing else

    zipfile.ZipFile(io.BytesIO(engine_zip()[1])).extractall(tmp_path / "bundle")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "bundle"), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([PYTHON39, "-S", "-c", script, str(lab)], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["board"] == "b1" and result["grant"] == 1
    assert result["held"] == ["b1"] and result["released"] == ["b1"]
    assert result["third_party"] == []
    assert "b1.lock" not in result["left"] and "b1.key" not in result["left"]
    events = [json.loads(line)["event"] for line in (lab / "audit.jsonl").read_text().splitlines()]
    assert events == ["grant", "release"]


def test_protocol_mismatch_is_a_host_error(tmp_path: Path) -> None:
    """A client and host engine of different protocol versions: exit 10 (host), clearly worded."""
    from mq.engine.core.errors import EXIT_HOST, ProtocolMismatch
    from mq.engine.host.agent import Agent

    with pytest.raises(ProtocolMismatch) as caught:
        Agent(str(tmp_path), None, out_fd=-1, in_fd=-1)._hello(protocol_version=999)
    assert caught.value.exit_code == EXIT_HOST
    assert "protocol mismatch" in caught.value.message
