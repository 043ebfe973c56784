"""The audit log's order is the real order of what happened to each board.

Every record that changes who holds a board (a grant; a release, force,
reclaim or taken-over that ends one) is written while the lab mutex is held,
so in ``audit.jsonl`` a board's records alternate between a grant and the
end of that grant, and their times never go backwards: history, statistics
and ETAs read the log in file order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import LabFixture, Procs, wait_for

# Closes a grant (the lock it made is gone); "release" with another outcome ("changed":
# nothing removed, "gone": the lock was already taken from it) closes nothing.
ENDS = {"release", "force", "reclaim", "taken-over"}

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from mq.engine.lockdir.audit import AuditLog
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, rounds, key, lag = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    record = AuditLog.record

    def late_release(log, event, **fields):  # the releaser is descheduled just before it logs
        if event == "release":
            time.sleep(lag)
        record(log, event, **fields)

    AuditLog.record = late_release
    engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for _ in range(rounds):
        engine.wait("b1", key, budget=60)
        engine.signal("b1", key)
    """
)


def board_sequence(lab: LabFixture, board: str) -> list[str]:
    """``grant`` and ``end`` for the board's records that change its holder, in file order."""
    sequence = []
    for record in lab.audit():
        if record.get("board") != board:
            continue
        if record["event"] == "grant":
            sequence.append("grant")
        elif record["event"] in ENDS and record.get("outcome", "released") == "released":
            sequence.append("end")
    return sequence


@pytest.mark.parametrize("lag", [0.0, 0.005])
def test_hand_offs_are_logged_in_the_order_they_happen(lab: LabFixture, procs: Procs, lag: float) -> None:
    """Two processes hand one board back and forth 200 times (each waits while the other
    holds it): in the log every grant is followed by its release before the next grant,
    and no record is stamped earlier than the one before it. With ``lag``, every release
    is logged that much later (as when the releasing process is descheduled right after
    removing the lock): the log's order must still be the real order."""
    rounds = 100
    workers = [procs.add_group(subprocess.Popen(
        [sys.executable, "-c", WORKER, str(lab.base), str(rounds), f"k{n}", str(lag)], env=lab.env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))
        for n in range(2)]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err

    sequence = board_sequence(lab, "b1")
    assert sequence.count("grant") == 2 * rounds
    disorder = [i for i, event in enumerate(sequence) if event != ("grant" if i % 2 == 0 else "end")]
    assert not disorder, f"{len(disorder)} records out of order, first at {disorder[0]}: " \
                         f"{sequence[max(0, disorder[0] - 3):disorder[0] + 3]}"
    times = [float(record["time"]) for record in lab.audit()]
    backwards = [i for i in range(1, len(times)) if times[i] < times[i - 1]]
    assert not backwards, f"{len(backwards)} records stamped before the record above them"
    wait_for(lambda: not lab.held(), what="the board released at the end")


@pytest.mark.parametrize(("ahead", "kept"), [(2.0, True), (120.0, False)])
def test_a_clock_stepped_back_does_not_make_times_go_backwards(lab: LabFixture, ahead: float, kept: bool) -> None:
    """The wall clock stepped back a little (the last record is 2 s "in the future"): the
    next record takes the last one's time, so the log's times still never go backwards. A
    time far ahead (a forged record, or a clock that was wrong then) is not followed."""
    from mq.engine.lockdir.audit import AuditLog
    from mq.engine.lockdir.labpaths import LabPaths

    future = round(time.time() + ahead, 3)
    (lab.base / "audit.jsonl").write_text(json.dumps({"event": "grant", "time": future, "user": "x"}) + "\n")
    AuditLog(LabPaths(str(lab.base))).record("online", board="b1")
    last = lab.audit()[-1]
    assert last["event"] == "online"
    if kept:
        assert last["time"] == future
    else:
        assert float(str(last["time"])) < future - ahead / 2
