"""``mq offline`` / ``mq online`` end to end: the real CLI, real users, the real ``lockfile(1)``.

A board out of service is skipped by pool waits, refused to a wait for it
alone (exit 16) and to ``run``, shown with its reason, and kept from old tools
by its maintenance lock; a holder's release leaves that lock in its place; a
waiter queued for the board keeps its place and is served after ``mq online``.
The engine's own promises (every engine kind) are in test_engine_conformance.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import test_mqsh
import test_run
from conftest import (
    LabFixture,
    Procs,
    as_user,
    engine,
    events,
    key_of,
    proc_stat,
    queued,
    run_mq,
    settled,
    spawn_mq,
    ticket_pids,
    user_env,
    wait_for,
)
from mq.engine.core.errors import ExitCode
from test_mqsh import run_sh
from test_run import PASS_IMG, SUCCESS, RunLab, jobs_left

rl = test_run.rl  # a local lab whose boards boot the simulator, as test_run sets it up
mqsh = test_mqsh.mqsh  # a program named mq.sh, as test_mqsh makes it

LOCKFILE = shutil.which("lockfile") or "/usr/bin/lockfile"
needs_lockfile = pytest.mark.skipif(not os.access(LOCKFILE, os.X_OK), reason="procmail lockfile(1) not installed")
REASON = "new firmware; back at 15:00"
MAINTENANCE_KEY = f"offline: {REASON}"


def mq_json(lab: LabFixture, *args: str, user: str | None = None) -> dict[str, object]:
    proc = run_mq(lab, *args, "--json", user=user)
    envelope: dict[str, object] = json.loads(proc.stdout)
    assert set(envelope) == {"mq", "kind", "data"} and envelope["mq"] == 1, proc.stdout
    return envelope


def lockfile(lab: LabFixture, board: str, user: str | None = None) -> int:
    """One try of the real ``lockfile -r0`` on the board's lock (0: it took the lock)."""
    return subprocess.run([LOCKFILE, "-r0", str(lab.lock(board))], capture_output=True,
                          env=user_env(lab.env, user), **as_user(user)).returncode


# -- the commands and their JSON ----------------------------------------------------------------
def test_offline_and_online_a_free_board(lab: LabFixture) -> None:
    proc = run_mq(lab, "offline", "b1", "--reason", REASON)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == f"mq: b1 is offline: {REASON} (its maintenance lock keeps lockfile(1) and mq.sh off it)\n"
    assert lab.lock("b1").read_text() == "0\n" and oct(lab.lock("b1").stat().st_mode & 0o777) == "0o444"
    assert key_of(lab, "b1") == f"offline: {REASON}"
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert info.startswith("Lock for b1 held by root since ") and f"with key 'offline: {REASON}'" in info

    proc = run_mq(lab, "online", "b1")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr.startswith("mq: b1 is back in service, after ")
    assert proc.stderr.endswith(f"by root: {REASON})\n")
    assert lab.held() == set() and key_of(lab, "b1") is None
    assert run_mq(lab, "sem", "-wait", "b1", check=True).stdout == "b1\n"


def test_json_shapes(lab: LabFixture) -> None:
    offline = mq_json(lab, "offline", "b1", "--reason", REASON)
    data = offline["data"]
    assert offline["kind"] == "offline" and isinstance(data, dict)
    assert set(data) == {"board", "reason", "user", "since", "maintenance_lock", "held_by"}
    assert (data["board"], data["reason"], data["user"], data["maintenance_lock"], data["held_by"]) == \
        ("b1", REASON, "root", True, None)
    assert isinstance(data["since"], float) and abs(data["since"] - time.time()) < 60

    run_mq(lab, "sem", "-wait", "b2", "-k", "ci", check=True)
    pending = mq_json(lab, "offline", "b2", "--reason", "flaky UART")["data"]
    assert isinstance(pending, dict) and (pending["maintenance_lock"], pending["held_by"]) == (False, "root")

    online = mq_json(lab, "online", "b1")
    assert online == {"mq": 1, "kind": "online",
                      "data": {"board": "b1", "was_offline": {"reason": REASON, "user": "root",
                                                              "since": data["since"]}}}
    again = run_mq(lab, "online", "b1", "--json")
    assert again.returncode == 0 and again.stderr == "mq: b1 was not offline; nothing changed\n"
    assert json.loads(again.stdout)["data"] == {"board": "b1", "was_offline": None}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["offline", "nosuch", "--reason", "x"], ExitCode.UNKNOWN_TARGET, "Unknown system or pool 'nosuch'"),
    (["offline", "trio", "--reason", "x"], ExitCode.BAD_INPUT, "mq offline takes a board, not a pool: trio"),
    (["online", "trio"], ExitCode.BAD_INPUT, "mq online takes a board, not a pool: trio"),
    (["online", "nosuch"], ExitCode.UNKNOWN_TARGET, "Unknown system or pool 'nosuch'"),
    (["offline", "b1", "--reason", " "], ExitCode.BAD_INPUT, "--reason must say why"),
    (["offline", "b1", "--reason", "two\nlines"], ExitCode.BAD_INPUT, "control characters"),
    (["offline", "b1"], ExitCode.USAGE, "--reason"),
], ids=["unknown", "pool", "online-pool", "online-unknown", "empty-reason", "newline", "no-reason"])
def test_what_is_refused(lab: LabFixture, args: list[str], code: int, message: str) -> None:
    proc = run_mq(lab, *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and proc.stdout == ""
    assert lab.held() == set()
    assert events(lab, "offline") == []


def test_who_and_why_are_audited(lab: LabFixture) -> None:
    run_mq(lab, "offline", "b1", "--reason", "first", check=True)
    run_mq(lab, "offline", "b1", "--reason", REASON, check=True)
    run_mq(lab, "online", "b1", check=True)
    offline = events(lab, "offline")
    assert [(e["board"], e["user"], e["reason"], e["state"], e["previous_reason"]) for e in offline] == \
        [("b1", "root", "first", "locked", None), ("b1", "root", REASON, "locked", "first")]
    [online] = events(lab, "online")
    assert (online["board"], online["user"], online["reason"], online["offline_by"]) == ("b1", "root", REASON, "root")
    assert online["offline_since"] == offline[0]["since"]


# -- waits: a single board, a pool, a queued waiter --------------------------------------------
def test_a_wait_for_the_board_alone_fails_at_once_and_a_pool_goes_on(lab: LabFixture) -> None:
    run_mq(lab, "offline", "b1", "--reason", REASON, check=True)
    started = time.monotonic()
    proc = run_mq(lab, "sem", "-wait", "b1", "-k", "me")
    assert proc.returncode == ExitCode.BOARD_OFFLINE == 16
    assert time.monotonic() - started < 10
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"mq: b1 is offline: {REASON} (by root since ")
    refused = json.loads(run_mq(lab, "sem", "-wait", "b1", "--json").stdout)
    assert refused["data"]["error"] == "BoardOfflineError" and refused["data"]["exit_code"] == 16
    assert queued(lab) == []
    assert run_mq(lab, "sem", "-wait", "trio", "-k", "P", check=True).stdout == "b2\n"
    # a release of the maintenance lock is refused too: only `mq online` ends it
    proc = run_mq(lab, "sem", "-signal", "b1", "-f")
    assert proc.returncode == 16 and "b1 is offline" in proc.stderr
    assert key_of(lab, "b1") == f"offline: {REASON}"


def test_as_mqsh_a_wait_fails_as_mqsh_reports_trouble(mqsh: Path, lab: LabFixture) -> None:
    run_mq(lab, "offline", "b1", "--reason", REASON, check=True)
    proc = run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "k")
    assert proc.returncode == 1  # mq.sh's "other trouble": its sem exits only 0, 1 or 2
    assert proc.stdout.startswith(f"b1 is offline: {REASON} (by root since ")
    assert run_sh(mqsh, lab, "sem", "-wait", "trio", "-k", "k").stdout == "b2\n"


def test_a_queued_waiter_keeps_its_place_and_gets_the_board_after_online(lab: LabFixture, procs: Procs) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "holder", check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "W")
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab), what="the waiter queued")
    proc = run_mq(lab, "offline", "b1", "--reason", REASON)
    assert proc.returncode == 0
    assert proc.stderr == (f"mq: b1 is offline: {REASON}; root still holds it, and its maintenance lock takes "
                           "its place when released\n")
    run_mq(lab, "sem", "-signal", "b1", "-k", "holder", check=True)
    assert key_of(lab, "b1") == f"offline: {REASON}"  # the maintenance lock, at once
    time.sleep(0.3)  # negative check: the waiter must not take the board
    assert waiter.poll() is None
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert "waiting 1: root key 'W'" in info
    # asleep, not spinning, while it waits for an offline board
    ticks = lambda: sum(int(f) for f in proc_stat(waiter.pid)[11:13])  # noqa: E731 - utime + stime
    wait_for(settled(ticks, quiet=1.0), what="the waiter to sleep")
    run_mq(lab, "online", "b1", check=True)
    out, _ = waiter.communicate(timeout=10)
    assert (waiter.returncode, out) == (0, "b1\n")
    assert key_of(lab, "b1") == "W"
    kinds = [e["event"] for e in lab.audit() if e.get("board") == "b1"]
    assert kinds == ["grant", "offline", "release", "maintenance-lock", "online", "grant"]


def test_a_pool_wait_on_offline_members_restores_a_removed_maintenance_lock(lab: LabFixture,
                                                                             procs: Procs) -> None:
    """An old tool removes the maintenance locks (``rm``, ``mq.sh sem -signal -f``): a waiter
    puts them back rather than taking an offline board, and does not spin."""
    run_mq(lab, "offline", "b3", "--reason", "rack move", check=True)
    run_mq(lab, "offline", "solo", "--reason", "rack move", check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "pair", "-k", "W")
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab), what="the waiter queued")
    lab.lock("solo").unlink()
    wait_for(lambda: lab.lock("solo").exists(), timeout=5, what="the maintenance lock to be put back")
    assert key_of(lab, "solo") == "offline: rack move"
    # the audit record follows the lock it tells of (under the lab mutex, which this test does not take)
    wait_for(lambda: events(lab, "maintenance-lock"), timeout=5, what="the maintenance-lock record")
    [restored] = events(lab, "maintenance-lock")
    assert (restored["board"], restored["after"]) == ("solo", "restored")
    ticks = lambda: sum(int(f) for f in proc_stat(waiter.pid)[11:13])  # noqa: E731
    wait_for(settled(ticks, quiet=1.0), what="the waiter to sleep")
    assert waiter.poll() is None
    run_mq(lab, "online", "b3", check=True)
    out, _ = waiter.communicate(timeout=10)
    assert (waiter.returncode, out) == (0, "b3\n")


def test_an_expired_holder_is_replaced_by_the_maintenance_lock_not_handed_on(lab: LabFixture,
                                                                            procs: Procs) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "T", "-T", "1", check=True)
    run_mq(lab, "offline", "b1", "--reason", REASON, check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "trio", "-k", "W")  # takes b2: b1 is offline
    out, _ = waiter.communicate(timeout=10)
    assert out == "b2\n"
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "W")
    assert waiter.wait(timeout=10) == 16  # a new wait for b1 alone is refused
    engine(lab).wait("b3", key="H", budget=0)
    pool = spawn_mq(lab, "sem", "-wait", "trio", "-k", "P")
    procs.append(pool)
    wait_for(lambda: key_of(lab, "b1") == f"offline: {REASON}", what="the maintenance lock after the -T")
    [reclaim] = events(lab, "reclaim")
    assert (reclaim["board"], reclaim["reason"], reclaim["previous_key"], reclaim["maintenance"]) == \
        ("b1", "expired", "T", True)
    assert pool.poll() is None


# -- old tools ----------------------------------------------------------------------------------
@needs_lockfile
def test_lockfile_cannot_take_an_offline_board_until_it_is_online(lab: LabFixture) -> None:
    run_mq(lab, "offline", "b1", "--reason", REASON, check=True)
    assert lockfile(lab, "b1") != 0
    assert key_of(lab, "b1") == f"offline: {REASON}"
    run_mq(lab, "online", "b1", check=True)
    assert lockfile(lab, "b1") == 0
    assert run_mq(lab, "sem", "-mr-info", "b1", check=True).stdout.startswith("b1 LOCKED root ")


@needs_lockfile
def test_lockfile_cannot_slip_in_when_the_holder_releases(shared_lab: LabFixture,
                                                         test_users: tuple[str, ...]) -> None:
    """Alice takes b2 offline while bob holds it; bob's release puts the maintenance lock in
    place (his, as he put it there); carol's lockfile(1) cannot take it; bob's online ends it."""
    lab = shared_lab
    alice, bob, carol = test_users
    run_mq(lab, "sem", "-wait", "b2", "-k", "job", user=bob, check=True)
    proc = run_mq(lab, "offline", "b2", "--reason", REASON, user=alice)
    assert proc.returncode == 0 and f"{bob} still holds it" in proc.stderr
    run_mq(lab, "sem", "-signal", "b2", "-k", "job", user=bob, check=True)
    assert lockfile(lab, "b2", user=carol) != 0
    info = run_mq(lab, "sem", "-info", "b2", user=carol, check=True).stdout
    assert info.startswith(f"Lock for b2 held by {bob} since ") and f"'offline: {REASON}'" in info
    status = json.loads(run_mq(lab, "sem", "-info", "b2", "--json", user=carol, check=True).stdout)
    assert status["data"][0]["state"] == "locked"
    was = mq_json(lab, "online", "b2", user=carol)["data"]
    assert isinstance(was, dict) and was["was_offline"]["user"] == alice  # type: ignore[index]
    assert lockfile(lab, "b2", user=carol) == 0
    [online] = events(lab, "online")
    assert (online["user"], online["offline_by"]) == (carol, alice)


# -- run ----------------------------------------------------------------------------------------
def test_run_refuses_an_offline_board_and_a_pool_run_skips_it(rl: RunLab) -> None:
    rl.mq_ok("offline", "b1", "--reason", REASON)
    proc = rl.mq("run", "-s", "b1", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 16, proc.stderr
    assert f"mq: b1 is offline: {REASON} (by root since " in proc.stderr
    assert proc.stdout == ""
    assert rl.lab.held() == {"b1"} and key_of(rl.lab, "b1") == f"offline: {REASON}"
    assert events(rl.lab, "grant") == [] and queued(rl.lab) == []
    assert jobs_left(rl.home) == []  # nothing uploaded
    assert not rl.powered_off("b1")
    reserve = rl.mq("run", "-s", "b1", "-r")
    assert reserve.returncode == 16, reserve.stderr
    held = rl.mq("run", "-n", "-s", "b1", "-k", MAINTENANCE_KEY, "-c", SUCCESS, "-f", str(PASS_IMG))
    assert held.returncode == 16, held.stderr

    pool = rl.mq("run", "-s", "trio", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert pool.returncode == 0, pool.stderr
    assert "mq: running on b2" in pool.stderr
    assert [e["board"] for e in events(rl.lab, "grant")] == ["b2"]
    assert rl.lab.held() == {"b1"}
    rl.mq_ok("online", "b1")
    ok = rl.mq("run", "-s", "b1", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert ok.returncode == 0, ok.stderr
    rl.assert_clean("b1")
