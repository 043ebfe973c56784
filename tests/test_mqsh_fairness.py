"""Fair turns between ``mq.sh`` and ``mq`` waiters on one lab (issue 19, item 4).

An ``mq.sh`` waiter is started on the host exactly as ``mq.sh`` starts it (a
shell with a ``lockfile -W -r -1 BASE/NAME.lock`` child, ``mq-sh.md``); an
``mq`` waiter is a real ``mq sem -wait``. Whichever arrived first gets the
board first; an ``mq.sh`` waiter's turn lasts its retry period, then the board
passes on. ``benchmarks/mqsh_fairness.py`` runs the 10 trials with mq.sh's
default period of 8 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import (
    LabFixture,
    Procs,
    child_named,
    engine,
    events,
    key_of,
    run_mq,
    spawn_mq,
    ticket_pids,
    wait_for,
)
from mq.engine.lockdir.legacy_waiters import Scan
from test_run import needs_lockfile


def mqsh_shell(base: Path, board: str, key: str, period: int) -> str:
    """The command line mq.sh runs on the host for ``sem -wait BOARD -k KEY -w PERIOD`` (``mq-sh.md``)."""
    return (f"umask 0111 && lockfile -'{period}'  -r '-1' '{base}/{board}.lock' && rm -f '{base}/{board}.key' && "
            f"printf '{key}' > '{base}/{board}.key' && chmod a-w,g+r '{base}/{board}.key' && "
            f"chmod u+w {base}/{board}.lock && printf '0' > {base}/{board}.lock && chmod a-w {base}/{board}.lock")


def start_mqsh_waiter(lab: LabFixture, board: str, key: str, procs: Procs, period: int = 1) -> subprocess.Popen[str]:
    shell = procs.add_group(subprocess.Popen(["sh", "-c", mqsh_shell(lab.base, board, key, period)],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                             start_new_session=True, env=lab.env))
    wait_for(lambda: child_named(shell.pid, "lockfile") or shell.poll() is not None, what="lockfile started")
    assert shell.poll() is None, shell.communicate()
    return shell


@needs_lockfile
def test_scan_sees_an_mqsh_waiter(lab: LabFixture, procs: Procs) -> None:
    engine(lab).wait("b1", key="holder")
    shell = start_mqsh_waiter(lab, "b1", "ci 7", procs, period=3)
    found = Scan(str(lab.base)).waiters()
    assert [(w.board, w.key, w.period) for w in found] == [("b1", "ci 7", 3.0)]
    assert abs(found[0].since - Path(f"/proc/{shell.pid}").stat().st_mtime) < 5  # its arrival: the process start


@needs_lockfile
def test_earlier_mqsh_waiter_gets_the_board_first(lab: LabFixture, procs: Procs) -> None:
    """mq.sh's waiter came first: the mq waiter, woken in milliseconds, leaves it the board."""
    eng = engine(lab)
    eng.wait("b1", key="holder")
    shell = start_mqsh_waiter(lab, "b1", "legacy", procs)
    later = spawn_mq(lab, "sem", "-wait", "b1", "-k", "mq-later")
    procs.append(later)
    wait_for(lambda: later.pid in ticket_pids(lab), what="the mq waiter queued")
    info = run_mq(lab, "sem", "-info", "b1").stdout
    assert "(mq.sh)" in info, info  # listed with the waiters, first
    eng.signal("b1", key="holder")
    wait_for(lambda: shell.poll() is not None, what="the mq.sh waiter to take the board")
    assert key_of(lab, "b1") == "legacy"
    assert later.poll() is None  # still waiting, behind it
    (lab.base / "b1.lock").chmod(0o644)
    (lab.base / "b1.key").unlink()
    (lab.base / "b1.lock").unlink()  # mq.sh's release
    assert later.wait(timeout=30) == 0
    assert key_of(lab, "b1") == "mq-later"


@needs_lockfile
def test_earlier_mq_waiter_gets_the_board_first(lab: LabFixture, procs: Procs) -> None:
    eng = engine(lab)
    eng.wait("b1", key="holder")
    earlier = spawn_mq(lab, "sem", "-wait", "b1", "-k", "mq-first")
    procs.append(earlier)
    wait_for(lambda: earlier.pid in ticket_pids(lab), what="the mq waiter queued")
    shell = start_mqsh_waiter(lab, "b1", "legacy", procs)
    eng.signal("b1", key="holder")
    assert earlier.wait(timeout=30) == 0
    assert key_of(lab, "b1") == "mq-first" and shell.poll() is None


@needs_lockfile
def test_a_turn_not_taken_passes_on(lab: LabFixture, procs: Procs) -> None:
    """An mq.sh waiter that does not take its turn (stopped) keeps the board for its period only."""
    eng = engine(lab)
    eng.wait("b1", key="holder")
    shell = start_mqsh_waiter(lab, "b1", "legacy", procs, period=2)
    lockfile = child_named(shell.pid, "lockfile")
    assert lockfile is not None
    later = spawn_mq(lab, "sem", "-wait", "b1", "-k", "mq-later")
    procs.append(later)
    wait_for(lambda: later.pid in ticket_pids(lab), what="the mq waiter queued")
    os.kill(lockfile, signal.SIGSTOP)  # it will not try again
    try:
        eng.signal("b1", key="holder")
        assert later.wait(timeout=30) == 0  # after the turn: its period and a margin
        grant = events(lab, "grant")[-1]
        assert grant["key"] == "mq-later" and grant["waited"] >= 2
    finally:
        os.kill(lockfile, signal.SIGCONT)


@needs_lockfile
def test_status_lists_the_mqsh_waiter(lab: LabFixture, procs: Procs) -> None:
    engine(lab).wait("b1", key="holder")
    start_mqsh_waiter(lab, "b1", "legacy", procs)
    text = run_mq(lab, "status", "b1").stdout
    assert " (mq.sh) key 'legacy', waiting since" in text, text
    data = json.loads(run_mq(lab, "status", "b1", "--json").stdout)
    waiters = data["data"][0]["waiters"]
    assert [(w["tool"], w["key"]) for w in waiters] == [("mq.sh", "legacy")]
