"""First-time commands started together: exactly one creates the demo lab and says so.

Real ``mq`` processes with a fresh HOME and no MQ_* variables (the autouse
``isolated_env`` fixture), released at once from a barrier so that they reach
``_create_demo_lab`` as close together as process start-up allows. The window
between "no lab.toml yet" and writing it is microseconds, so the second case
also slows the write (a ``sitecustomize`` in the children, nothing in mq):
without the lock every process that looked meanwhile would write the lab and
print the notice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mq.engine.host.demo import DEMO_INVENTORY

STARTERS = 6
SLOW_WRITE = 0.3  # seconds added before lab.toml is put in place


def _start_together(count: int, args: list[str], env: dict[str, str]) -> list[subprocess.Popen[str]]:
    """``count`` processes running ``args``, released together: each waits in a tiny shell
    until its stdin (one pipe shared by all) reaches end of file, then ``exec``s the command."""
    gate_read, gate_write = os.pipe()
    try:
        return [subprocess.Popen(["sh", "-c", 'read -r _ || true; exec "$@"', "sh", *args], stdin=gate_read,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(count)]
    finally:
        os.close(gate_read)
        os.close(gate_write)  # end of file for every waiting shell at once


def _slow_lab_write(hooks: Path, lab: Path) -> str:
    """A directory for PYTHONPATH whose ``sitecustomize`` delays ``os.replace`` onto ``lab``."""
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import os
        import time

        _replace = os.replace

        def _slow_replace(src, dst, *args, **kwargs):
            if os.fspath(dst) == {str(lab)!r}:
                time.sleep({SLOW_WRITE})
            return _replace(src, dst, *args, **kwargs)

        os.replace = _slow_replace
        """))
    return str(hooks)


@pytest.mark.parametrize("slow_write", [False, True], ids=["as-is", "slow-write"])
def test_simultaneous_first_commands_create_the_demo_lab_once(isolated_env: Path, tmp_path: Path,
                                                              slow_write: bool) -> None:
    data = isolated_env / ".local" / "share" / "mq"
    env = {name: value for name, value in os.environ.items() if not name.startswith("MQ_")}
    if slow_write:
        env["PYTHONPATH"] = os.pathsep.join([_slow_lab_write(tmp_path / "hooks", data / "lab.toml"),
                                             env["PYTHONPATH"]])
    procs = _start_together(STARTERS, [sys.executable, "-m", "mq", "sem", "-info", "odroidc4_1"], env)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out, err))

    assert [code for code, _, _ in results] == [0] * STARTERS, results
    noticed = [err for _, _, err in results if "created a demo lab" in err]
    assert len(noticed) == 1, f"{len(noticed)} of {STARTERS} processes printed the notice: {results}"
    assert all(err == "" for _, _, err in results if "created a demo lab" not in err), results
    assert all("odroidc4_1" in out for _, out, _ in results), results
    assert (data / "lab.toml").read_text(encoding="utf-8") == DEMO_INVENTORY
    assert not [p.name for p in data.iterdir() if ".tmp." in p.name], "no temporary inventory left behind"
