"""``mq status``: boards, holders, waiters in queue order, and projected starts with their basis.

The projection is checked against figures known in advance: locks with a known
``-T`` and start, and an audit log with known hold times, so every ETA can be
computed by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import LabFixture, engine, queued, run_mq, spawn_mq, wait_for


@pytest.fixture
def waiters(lab: LabFixture) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def enqueue(lab: LabFixture, procs: list[subprocess.Popen[str]], target: str, key: str) -> None:
    count = len(queued(lab))
    procs.append(spawn_mq(lab, "sem", "-wait", target, "-k", key))
    wait_for(lambda: len(queued(lab)) == count + 1, what=f"{key} queued")


def hold_since(lab: LabFixture, board: str, key: str, timeout: int, age: float) -> float:
    """``board`` held with ``-T timeout``, its lock dated ``age`` seconds ago; that date."""
    engine(lab).wait(board, key=key, timeout=timeout, budget=0)
    since = time.time() - age
    os.utime(lab.lock(board), (since, since), follow_symlinks=False)
    return lab.lock(board).stat().st_mtime


def past_holds(lab: LabFixture, board: str, held: list[float], pool: str = "") -> None:
    with open(lab.base / "audit.jsonl", "a") as log:
        for seconds in held:
            log.write(json.dumps({"time": time.time() - 3600, "event": "release", "board": board, "held": seconds,
                                  "outcome": "released", "pool": pool, "user": "x"}) + "\n")


def status(lab: LabFixture, *names: str) -> list[dict[str, Any]]:
    proc = run_mq(lab, "status", *names, "--json", check=True)
    doc = json.loads(proc.stdout)
    assert (doc["mq"], doc["kind"]) == (1, "status")
    data: list[dict[str, Any]] = doc["data"]
    return data


def test_known_expiries_and_hold_times_give_known_etas(lab: LabFixture,
                                                       waiters: list[subprocess.Popen[str]]) -> None:
    b1 = hold_since(lab, "b1", "H1", timeout=600, age=100)  # frees at its -T expiry: b1 + 600
    b2 = hold_since(lab, "b2", "H2", timeout=0, age=30)  # frees after b2's median hold: b2 + 120
    b3 = hold_since(lab, "b3", "H3", timeout=0, age=10)  # no history of its own: pool trio's median, 1000
    hold_since(lab, "x86a", "H4", timeout=0, age=10)  # no history at all: unknown
    past_holds(lab, "b2", [60, 120, 300])
    past_holds(lab, "b1", [1000], pool="trio")  # b1's own median: 1000 (also trio's)
    enqueue(lab, waiters, "b1", "w1")  # gets b1 at b1 + 600
    enqueue(lab, waiters, "trio", "w2")  # trio frees first at b2 + 120 (b1 is w1's, b3 unknown)
    enqueue(lab, waiters, "b2", "w3")  # after w2's turn on b2: b2 + 120 + 120
    enqueue(lab, waiters, "b3", "w4")  # b3 + 1000 (trio's median)
    enqueue(lab, waiters, "x86a", "w5")  # unknown

    boards = {s["board"]: s for s in status(lab)}
    assert [s["board"] for s in status(lab)] == ["b1", "b2", "b3", "solo", "x86a", "x86b"]
    assert boards["solo"] == {"board": "solo", "state": "free", "holder": None, "offline_reason": None, "waiters": []}
    assert boards["b1"]["state"] == "held"
    assert boards["b1"]["holder"] == {"user": boards["b1"]["holder"]["user"], "key": "H1",
                                      "since": pytest.approx(b1, abs=0.01), "timeout": 600,
                                      "grant": boards["b1"]["holder"]["grant"]}
    etas = {w["key"]: w for s in boards.values() for w in s["waiters"]}
    assert etas["w1"]["eta"] == pytest.approx(b1 + 600, abs=0.01)
    assert "-T 600" in etas["w1"]["eta_basis"]
    assert etas["w2"]["eta"] == pytest.approx(b2 + 120, abs=0.01)
    assert "median hold of b2 (3 grants)" in etas["w2"]["eta_basis"]
    assert etas["w3"]["eta"] == pytest.approx(b2 + 240, abs=0.01)
    assert "after the waiters ahead" in etas["w3"]["eta_basis"]
    assert etas["w4"]["eta"] == pytest.approx(b3 + 1000, abs=0.01)
    assert "median hold in pool trio (1 grants)" in etas["w4"]["eta_basis"]
    assert etas["w5"]["eta"] is None and etas["w5"]["eta_basis"] == "no hold history for x86a"

    # positions per board, in queue order; a pool waiter is listed under each member it may get
    assert [(w["position"], w["key"]) for w in boards["b1"]["waiters"]] == [(1, "w1"), (2, "w2")]
    assert [(w["position"], w["key"]) for w in boards["b2"]["waiters"]] == [(1, "w2"), (2, "w3")]
    assert set(boards["b1"]["waiters"][0]) == {"position", "user", "key", "since", "target", "eta", "eta_basis",
                                               "priority", "effective_priority", "tool", "liveness",
                                               "lost_since"}


def test_an_expired_lock_and_a_free_board_mean_now(lab: LabFixture, waiters: list[subprocess.Popen[str]]) -> None:
    hold_since(lab, "solo", "old", timeout=10, age=1)
    enqueue(lab, waiters, "solo", "next")
    listed = status(lab, "solo")[0]["waiters"]
    if listed:  # still waiting (on a machine so busy that 9 s went by, it has taken the board already)
        assert listed[0]["eta"] == pytest.approx(lab.lock("solo").stat().st_mtime + 10, abs=0.01)
    wait_for(lambda: lab.key("solo").read_text() == "next\n", timeout=30, what="the take-over after -T 10")


def test_status_of_named_targets_and_the_table(lab: LabFixture, waiters: list[subprocess.Popen[str]]) -> None:
    hold_since(lab, "b3", "H", timeout=900, age=60)
    hold_since(lab, "solo", "S", timeout=0, age=5)
    enqueue(lab, waiters, "pair", "pw")
    assert [s["board"] for s in status(lab, "pair", "b1")] == ["b1", "b3", "solo"]
    table = run_mq(lab, "status", "pair", check=True).stdout.splitlines()
    assert table[0].split() == ["BOARD", "STATE", "HOLDER", "KEY", "SINCE", "-T", "GRANT"]
    assert table[1].split()[:4] == ["b3", "held", table[1].split()[2], "H"] and "(1m)" in table[1]
    assert table[2].startswith("    1. ") and "key 'pw' via pair" in table[2] and "ETA " in table[2]
    assert table[3].split()[:2] == ["solo", "held"]
    assert table[4].startswith("    1. ") and "key 'pw' via pair" in table[4]


def test_unknown_name_is_exit_1(lab: LabFixture) -> None:
    proc = run_mq(lab, "status", "nope")
    assert proc.returncode == 1 and proc.stderr.startswith("mq: Unknown system or pool 'nope'")


# -- the waiting line --------------------------------------------------------------------------
def read_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    """The next stderr line of ``proc`` (the test fails if none comes within ``timeout``)."""
    import select

    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "no line on stderr"
    return proc.stderr.readline()


def test_a_log_gets_plain_lines_when_the_wait_starts_and_when_the_place_changes(
        lab: LabFixture, waiters: list[subprocess.Popen[str]]) -> None:
    hold_since(lab, "b1", "H", timeout=0, age=60)
    enqueue(lab, waiters, "b1", "first")
    enqueue(lab, waiters, "b1", "second")
    first, second = waiters
    assert read_line(first).startswith("mq: waiting: position 1 of 1 for b1; b1 held by ")
    line = read_line(second)
    assert line.startswith("mq: waiting: position 2 of 2 for b1; b1 held by ") and "ETA unknown" in line
    assert "\x1b" not in line and "\r" not in line  # no terminal codes in a log
    engine(lab).signal("b1", key="H")
    out, err = first.communicate(timeout=15)
    assert (first.returncode, out) == (0, "b1\n")  # stdout: the board's name only
    assert err.startswith("mq: Acquired lock for b1")
    moved = read_line(second)
    assert moved.startswith("mq: queue moved: position 1 of 1 for b1; b1 held by ")


def test_a_terminal_gets_one_live_line_that_goes_when_the_board_comes(lab: LabFixture) -> None:
    import pexpect

    hold_since(lab, "b1", "H", timeout=900, age=5)
    child = pexpect.spawn(sys.executable, ["-m", "mq", "sem", "-wait", "b1", "-k", "tty"], env=lab.env,
                          encoding="utf-8", timeout=15, dimensions=(24, 200))
    try:
        child.expect(r"mq: waiting: position 1 of 1 for b1; b1 held by \S+ \(-T 900, \d+s, key H\); ETA ")
        child.expect(r"waited \d+s")
        engine(lab).signal("b1", key="H")
        child.expect("mq: Acquired lock for b1")
        child.expect("b1\r\n")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_hold_times_come_from_the_logs_tail_only(tmp_path: Any) -> None:
    """A waiter's ETA reads the last 2 MiB of the audit log, not years of it; a line cut by the
    tail is dropped, not misread."""
    from mq.engine.lockdir.history import read_events

    log = tmp_path / "audit.jsonl"
    lines = [json.dumps({"time": 1000.0 + i, "event": "release", "board": "b1", "held": float(i)}) for i in range(50)]
    log.write_text("\n".join(lines) + "\n")
    tail = len(lines[-1]) * 3 + 10  # the last three lines and a piece of the one before
    events, bad = read_events(str(log), tail=tail)
    assert [e["held"] for e in events] == [47.0, 48.0, 49.0] and bad == 0
    assert len(read_events(str(log))[0]) == 50


def test_a_waiting_line_closed_before_its_thread_started_ends_quietly() -> None:
    """A signal between making the log thread and starting it: close() must not raise
    (the chaos trials once saw "cannot join thread before it is started", exit 70)."""
    import io
    import threading

    from mq.views.waitline import WaitLine

    line = WaitLine(stream=io.StringIO(), tty=False)
    line._thread = threading.Thread(target=lambda: None)  # made, never started
    line.close()


def test_the_waiting_line_keeps_counting_and_says_overdue() -> None:
    """The holder's age goes on with the time since the event (it froze while ``waited`` counted
    on); an ETA that has passed is ``overdue by``, not ``ETA now`` for ever; the key is shown."""
    from mq.views.waitline import describe

    event = {"target": "b1", "position": 1, "total": 1, "now": 1000.0, "eta": 1030.0, "eta_basis": "median hold",
             "holders": [{"board": "b1", "user": "alice", "key": "ci-42", "since": 965.0, "timeout": None}]}
    fresh = describe(event, waited=0.0)
    assert "b1 held by alice (35s, key ci-42)" in fresh and "ETA " in fresh and "overdue" not in fresh
    later = describe(event, waited=90.0, since_event=90.0)
    assert "b1 held by alice (2m, key ci-42)" in later, later
    assert "overdue by 1m (median hold)" in later and "waited 1m" in later, later
    unkeyed = dict(event, holders=[dict(event["holders"][0], key="0")])  # no -k: no key shown
    assert "key" not in describe(unkeyed, waited=0.0).split(";")[1]


def test_status_mine_is_what_you_hold_and_wait_for(lab: LabFixture, waiters: list[subprocess.Popen[str]]) -> None:
    """``--mine``: the boards you hold (key, grant, how long, -T left) and the queues you wait
    in (position, ETA), across the lab, a wait for a pool once; ``--user NAME`` the same for
    NAME; in the table and in ``--json``."""
    import getpass

    me = getpass.getuser()
    hold_since(lab, "b3", "H", timeout=900, age=60)
    hold_since(lab, "solo", "S", timeout=0, age=5)
    enqueue(lab, waiters, "pair", "pw")
    doc = json.loads(run_mq(lab, "status", "--mine", "--json", check=True).stdout)
    assert (doc["mq"], doc["kind"]) == (1, "mine")
    mine = doc["data"]
    assert mine["user"] == me
    assert [(h["board"], h["key"], h["timeout"]) for h in mine["holding"]] == [("b3", "H", 900), ("solo", "S", None)]
    assert 835 < mine["holding"][0]["timeout_left"] <= 840
    assert [(w["target"], w["key"], w["position"]) for w in mine["waiting"]] == [("pair", "pw", 1)]
    lines = run_mq(lab, "status", "--mine", check=True).stdout.splitlines()
    assert lines[0] == f"{me} holds 2 boards:"
    assert lines[1].startswith("    b3 ") and "key 'H', held 1m" in lines[1] and "-T 900 (13m left)" in lines[1]
    assert lines[3] == f"{me} waits for 1:" and lines[4].startswith("    pair key 'pw': position 1 of 1 (on ")
    other = run_mq(lab, "status", "--user", "nobody-here", check=True).stdout.splitlines()
    assert other == ["nobody-here holds no board", "nobody-here waits for nothing"]
    assert run_mq(lab, "status", "--mine", "--user", me).returncode == 64
