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


def _mq(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    return subprocess.run([sys.executable, "-m", "mq", *args], env={**env, "MQ_CONFIG": os.devnull},
                          capture_output=True, text=True, timeout=120)


def test_the_demo_boards_power_off() -> None:
    """The README says the demo run powers the board off: it does (the demo boards have a power_off)."""
    import json

    proc = _mq("run", "-s", "odroidc4_pool", "-f", str(Path(__file__).resolve().parent.parent / "examples" /
                                                         "sel4test-pass.img"), "-c", "All is well", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"]["powered_off"] is True
    assert DEMO_INVENTORY.count("power_off = ") == DEMO_INVENTORY.count("[systems.")


def test_demo_traffic_makes_a_history_the_views_show(tmp_path: Path) -> None:
    """``mq demo traffic --days 3``: records before the lab's own, in time order, grants numbered
    from the lab's counter on (unique; the next real grant comes after them); ``mq stats`` and
    ``mq status`` ETAs see them. A configured lab is refused."""
    import json

    first = _mq("sem", "-wait", "sabre", "-k", "real")
    assert first.returncode == 0, first.stderr
    assert _mq("sem", "-signal", "sabre", "-k", "real").returncode == 0
    made = _mq("demo", "traffic", "--days", "3")
    assert made.returncode == 0 and "records (3 days of generated use)" in made.stderr, made.stderr
    log = Path(os.path.expanduser("~/.local/share/mq/audit.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    times = [r["time"] for r in records]
    assert times == sorted(times)
    generated = [r for r in records if r.get("generated")]
    assert len(generated) > 100 and records[-1]["key"] == "real" and not records[-1].get("generated")
    grants = [r["grant"] for r in records if r["event"] == "grant"]
    assert len(grants) == len(set(grants))
    assert _mq("sem", "-wait", "sabre", "-k", "after").returncode == 0
    after = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert after["event"] == "grant" and after["grant"] > max(grants)
    stats = _mq("stats", "--json")
    boards = json.loads(stats.stdout)["data"]["boards"]
    assert stats.returncode == 0 and sum(b["grants"] for b in boards) > 100, stats.stdout
    refused = subprocess.run([sys.executable, "-m", "mq", "demo", "traffic"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "MQ_HOST": "local", "MQ_BASE": str(tmp_path)})
    assert refused.returncode == 5 and "only into the built-in demo lab" in refused.stderr
