"""Each command imports only what it uses (start-up time: ``benchmarks/startup.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LabFixture

PROBE = """
import json, sys
from mq.cli.main import main
args, prog = sys.argv[2:], "mq"
if args[0] == "mq.sh":  # invoked as mq.sh
    args, prog = args[1:], "mq.sh"
code = main(args, prog=prog)
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

NEVER = {"rich", "zipfile", "filelock"}  # the progress bar of `mq run`, the bundle, the demo lab's creation
SSH = {"paramiko", "mq.transport.bundle", "mq.transport.sshconfig", "mq.transport.paramiko_ssh"}
RUN = {"mq.client.run_client", "mq.transport.keyboard", "mq.client.console", "mq.engine.host.run_host",
       "mq.engine.host.boot", "mq.engine.host.jobdir"}
LAB = {"mq.client.service", "mq.settings.config", "mq.transport", "mq.engine.core.results", "mq.engine.core.inventory",
       "tomllib", "tomli"}


def modules(lab: LabFixture, tmp_path: Path, *args: str) -> set[str]:
    """The modules loaded by ``mq ARGS`` (``mq.sh ...``: invoked as mq.sh) on a local lab."""
    out = tmp_path / "modules.json"
    argv = [sys.executable, "-c", PROBE, str(out), *args]
    proc = subprocess.run(argv, env=lab.env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["code"] == 0, proc.stderr
    return set(result["modules"]) | {name.split(".")[0] for name in result["modules"]}


@pytest.mark.parametrize("args", [("--help",), ("sem", "--help"), ("--version",)])
def test_help_loads_no_lab(lab: LabFixture, tmp_path: Path, args: tuple[str, ...]) -> None:
    loaded = modules(lab, tmp_path, *args)
    assert "typer" in loaded
    assert loaded & (NEVER | SSH | RUN | LAB) == set()


def test_local_sem_loads_no_ssh_and_no_run(lab: LabFixture, tmp_path: Path) -> None:
    loaded = modules(lab, tmp_path, "sem", "-info", "b1")
    assert {"mq.client.service", "mq.engine.core.inventory"} <= loaded
    assert loaded & (NEVER | SSH | RUN | {"mq.cli.mqsh"}) == set()


def test_mqsh_sem_loads_no_cli_framework(lab: LabFixture, tmp_path: Path) -> None:
    loaded = modules(lab, tmp_path, "mq.sh", "sem", "-info", "b1")
    assert loaded & (NEVER | SSH | RUN | {"typer", "click", "mq.cli.app"}) == set()
