"""Contention and fairness under real concurrency: many processes, real lock files.

Fault matrix cases 1 (contention witness), 2 (pool of 3, 20 clients) and 3
(many waiters), plus the queue rules of ``walk_queue``: one shared arrival
order for board and pool waiters, and a free board no earlier waiter can
use goes to a later waiter at once.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import (
    PROMPT,
    LabFixture,
    Procs,
    as_user,
    engine,
    key_of,
    proc_state,
    queued,
    run_mq,
    settled,
    spawn_mq,
    ticket_pids,
    user_env,
    wait_for,
)

TRIO = ("b1", "b2", "b3")


# -- helpers -------------------------------------------------------------------------


def ticket_keys(lab: LabFixture) -> list[str]:
    """Keys of the queued tickets, in arrival order (read from the ticket files)."""
    queue = lab.base / ".mq" / "queue"
    keys = []
    for name in queued(lab):
        try:
            keys.append(json.loads((queue / name).read_text())["key"])
        except (FileNotFoundError, ValueError):
            continue
    return keys


def trio_held(lab: LabFixture) -> set[str]:
    return lab.held() & set(TRIO)


def leftovers(lab: LabFixture) -> list[str]:
    """Anything a finished run must not leave: locks, keys, tickets, grant records, temp files."""
    found = [p.name for p in lab.base.iterdir() if p.suffix in (".lock", ".key") or (p.name.startswith(".")
             and p.name != ".mq")]
    found += [f"queue/{n}" for n in os.listdir(lab.base / ".mq" / "queue")]
    found += [f"holders/{n}" for n in os.listdir(lab.base / ".mq" / "holders")]
    return sorted(found)


def spawn_waiter(lab: LabFixture, procs: list[subprocess.Popen[str]], target: str, key: str,
                 user: str | None = None) -> subprocess.Popen[str]:
    """Start ``mq sem -wait TARGET -k KEY`` and return once its ticket is queued."""
    proc = spawn_mq(lab, "sem", "-wait", target, "-k", key, user=user)
    procs.append(proc)
    wait_for(lambda: proc.pid in ticket_pids(lab) or proc.poll() is not None, what=f"ticket of {key}")
    assert proc.poll() is None, f"waiter {key} ended early: {proc.communicate()}"
    return proc


def finished(proc: subprocess.Popen[str], timeout: float = 20.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def grants(lab: LabFixture) -> list[dict[str, object]]:
    return [e for e in lab.audit() if e["event"] == "grant"]


# -- case 1: three users hammer one board ------------------------------------------------
WITNESS_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, loops = sys.argv[1], int(sys.argv[2])
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    witness = os.path.join(base, "witness")
    done = 0
    for _ in range(loops):
        eng.wait("b1", budget=None)
        try:
            fd = os.open(witness, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            print("COLLISION after", done, flush=True)
            sys.exit(3)
        os.close(fd)
        time.sleep(0.0005)  # hold the board a moment: a second holder would find the witness
        os.unlink(witness)
        eng.signal("b1")
        done += 1
    print("DONE", done, flush=True)
    """
)


def test_three_users_never_share_a_board(shared_lab: LabFixture, test_users: tuple[str, ...],
                                         procs: list[subprocess.Popen[str]]) -> None:
    lab, loops = shared_lab, 200
    for user in test_users:
        procs.append(subprocess.Popen([sys.executable, "-c", WITNESS_WORKER, str(lab.base), str(loops)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=user_env(lab.env, user), **as_user(user)))
    for user, proc in zip(test_users, procs, strict=True):
        code, out, err = finished(proc, timeout=120)
        assert (code, out.strip()) == (0, f"DONE {loops}"), f"{user}: {out}\n{err}"
    assert not (lab.base / "witness").exists()
    assert leftovers(lab) == []
    assert lab.tickets() == []
    granted = grants(lab)
    assert len(granted) == 3 * loops
    numbers = [int(e["grant"]) for e in granted]  # type: ignore[call-overload]
    assert all(a < b for a, b in itertools.pairwise(numbers)), "grant numbers must strictly increase"
    assert {e["user"] for e in granted} == set(test_users)
    assert len([e for e in lab.audit() if e["event"] == "release"]) == 3 * loops
    users = [e["user"] for e in granted]
    # the board really was contended: the three users took turns (the queue is fair)
    assert sum(a != b for a, b in itertools.pairwise(users)) >= 200


# -- pools: first come, first served ----------------------------------------------------
def test_pool_waiters_served_in_arrival_order(lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    eng = engine(lab)
    for board in TRIO:
        eng.wait(board, key="hold", budget=0)
    waiters = [spawn_waiter(lab, procs, "trio", f"w{i}") for i in range(10)]
    assert ticket_pids(lab) == [w.pid for w in waiters]

    held = {board: "hold" for board in TRIO}  # board -> key of its holder
    release_order = list(TRIO)  # oldest holder first
    for i, waiter in enumerate(waiters):
        board = release_order.pop(0)
        eng.signal(board, key=held[board])
        code, out, err = finished(waiter)
        assert (code, out.strip()) == (0, board), f"w{i}: {err}"
        assert key_of(lab, board) == f"w{i}"
        assert len(trio_held(lab)) <= 3
        # nobody behind w{i} was served: all later waiters still queued, in order
        assert [w.poll() for w in waiters[i + 1:]] == [None] * (9 - i)
        assert ticket_pids(lab) == [w.pid for w in waiters[i + 1:]]
        held[board] = f"w{i}"
        release_order.append(board)

    assert [e["key"] for e in grants(lab)][3:] == [f"w{i}" for i in range(10)]
    for board in TRIO:
        eng.signal(board, key=held[board])
    assert leftovers(lab) == []


def test_board_waiter_before_pool_waiter_gets_its_board(lab: LabFixture,
                                                       procs: list[subprocess.Popen[str]]) -> None:
    """A b3 waiter that arrived first is served b3 before a later trio waiter."""
    eng = engine(lab)
    for board in TRIO:
        eng.wait(board, key="hold", budget=0)
    board_waiter = spawn_waiter(lab, procs, "b3", "solo-first")
    pool_waiter = spawn_waiter(lab, procs, "trio", "pool-second")

    eng.signal("b3", key="hold")
    assert finished(board_waiter)[:2] == (0, "b3\n")
    assert key_of(lab, "b3") == "solo-first"
    assert pool_waiter.poll() is None

    eng.signal("b1", key="hold")
    assert finished(pool_waiter)[:2] == (0, "b1\n")
    assert lab.tickets() == []


def test_pool_waiter_before_board_waiter_gets_the_shared_member(lab: LabFixture,
                                                               procs: list[subprocess.Popen[str]]) -> None:
    """A trio waiter that arrived first takes b3 when it frees, although a b3 waiter waits behind it."""
    eng = engine(lab)
    for board in TRIO:
        eng.wait(board, key="hold", budget=0)
    pool_waiter = spawn_waiter(lab, procs, "trio", "pool-first")
    board_waiter = spawn_waiter(lab, procs, "b3", "solo-second")

    eng.signal("b3", key="hold")
    assert finished(pool_waiter)[:2] == (0, "b3\n")
    assert key_of(lab, "b3") == "pool-first"
    time.sleep(0.2)  # negative check: give a wrongly woken b3 waiter the chance to misbehave
    assert board_waiter.poll() is None
    assert key_of(lab, "b3") == "pool-first"

    eng.signal("b3", key="pool-first")
    assert finished(board_waiter)[:2] == (0, "b3\n")
    assert key_of(lab, "b3") == "solo-second"
    assert lab.tickets() == []


def test_free_board_no_earlier_waiter_can_use_goes_to_later_waiter(
        lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    eng = engine(lab)
    for board in (*TRIO, "solo"):
        eng.wait(board, key="hold", budget=0)
    trio_waiter = spawn_waiter(lab, procs, "trio", "first")
    pair_waiter = spawn_waiter(lab, procs, "pair", "second")  # pair = b3 + solo

    released = time.monotonic()
    eng.signal("solo", key="hold")
    assert finished(pair_waiter)[:2] == (0, "solo\n")
    assert time.monotonic() - released < PROMPT
    assert key_of(lab, "solo") == "second"
    assert trio_waiter.poll() is None
    assert ticket_pids(lab) == [trio_waiter.pid]

    eng.signal("b2", key="hold")
    assert finished(trio_waiter)[:2] == (0, "b2\n")


# -- case 2: 20 clients on a pool of 3 ----------------------------------------------------
POOL_CLIENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    base, key = sys.argv[1], sys.argv[2]
    mq = [sys.executable, "-m", "mq", "sem"]
    got = subprocess.run([*mq, "-wait", "trio", "-k", key], capture_output=True, text=True)
    if got.returncode:
        print("WAIT-FAILED", got.returncode, got.stderr, flush=True)
        sys.exit(2)
    board = got.stdout.strip()
    witness = os.path.join(base, "inside-" + board)
    try:
        fd = os.open(witness, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        print("COLLISION", board, flush=True)
        sys.exit(3)
    os.close(fd)
    inside = len([n for n in os.listdir(base) if n.startswith("inside-")])
    time.sleep(0.05)  # hold the board a moment, so that holders overlap
    os.unlink(witness)
    rel = subprocess.run([*mq, "-signal", board, "-k", key], capture_output=True, text=True)
    print(board, inside, rel.returncode, flush=True)
    sys.exit(0 if rel.returncode == 0 else 4)
    """
)


def overtakes(arrival: list[str], granted: list[str]) -> dict[str, int]:
    """For each client, how many earlier arrivals it was granted before."""
    position = {key: n for n, key in enumerate(granted)}
    return {key: sum(1 for earlier in arrival[:i] if position[earlier] > position[key])
            for i, key in enumerate(arrival)}


@pytest.mark.slow
def test_twenty_clients_on_pool_of_three(lab: LabFixture, procs: Procs) -> None:
    eng = engine(lab)
    for board in TRIO:
        eng.wait(board, key="hold", budget=0)
    arrival = [f"c{i:02d}" for i in range(20)]
    for n, key in enumerate(arrival):  # serialized arrivals: each queued before the next starts
        procs.add_group(subprocess.Popen([sys.executable, "-c", POOL_CLIENT, str(lab.base), key],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env,
                                         start_new_session=True))
        wait_for(lambda n=n: len(queued(lab)) == n + 1, what=f"ticket of {key}")
    assert ticket_keys(lab) == arrival

    for board in TRIO:
        eng.signal(board, key="hold")
    peaks = [0]

    def all_done() -> bool:  # samples the number of holders while the clients run
        peaks.append(len(trio_held(lab)))
        return all(p.poll() is not None for p in procs)

    wait_for(all_done, timeout=90, what="the clients to finish", step=0.005)
    peak = max(peaks)
    for key, proc in zip(arrival, procs, strict=True):
        code, out, err = finished(proc)
        assert code == 0, f"{key}: {out}{err}"
        board, inside, _ = out.split()
        assert board in TRIO
        assert int(inside) <= 3, f"{key} saw {inside} holders of trio at once"
    assert peak <= 3

    granted = [str(e["key"]) for e in grants(lab) if str(e["key"]).startswith("c")]
    assert sorted(granted) == arrival
    # The queue hands each freed member to the earliest waiter; a later waiter can be
    # recorded first only while an earlier one is taking a member reserved for it
    # at the same moment, so at most (pool size - 1) earlier clients are overtaken.
    assert max(overtakes(arrival, granted).values()) <= 2, granted
    assert leftovers(lab) == []


# -- case 3: many waiters --------------------------------------------------------------
MANY_WORKER = textwrap.dedent(
    """
    import os, sys
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, key = sys.argv[1], sys.argv[2]
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    grant = eng.wait("trio", key=key, budget=None)
    print(grant.board, grant.grant, flush=True)
    eng.signal(grant.board, key=key)
    """
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_many_waiters(lab: LabFixture, procs: list[subprocess.Popen[str]], count: int,
                     users: Sequence[str | None]) -> dict[str, float]:
    """``count`` Engine-API waiters (one process each, as ``users`` in turn) queue on trio while the
    test holds it; returns their idle CPU seconds and wake-ups over one second, then
    releases trio and checks every waiter is served in queue order, leaving nothing."""
    eng = engine(lab)
    for board in TRIO:
        eng.wait(board, key="hold", budget=0)
    for i in range(count):
        user = users[i % len(users)]
        procs.append(subprocess.Popen([sys.executable, "-c", MANY_WORKER, str(lab.base), f"m{i:03d}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=user_env(lab.env, user), **as_user(user)))
    wait_for(lambda: len(queued(lab)) == count, timeout=90, what=f"{count} tickets")
    arrival = ticket_keys(lab)  # concurrent arrivals: the queue's own order is the reference
    assert sorted(arrival) == [f"m{i:03d}" for i in range(count)]

    wait_asleep([p.pid for p in procs])  # the last arrivals' wake-ups have settled
    cpu, woken = sum(cpu_seconds(p.pid) for p in procs), sum(wakeups(p.pid) for p in procs)
    time.sleep(1.0)  # the idle second under test: the waiters' CPU time and wake-ups in it are measured
    idle = {"cpu": sum(cpu_seconds(p.pid) for p in procs) - cpu, "wakeups": sum(wakeups(p.pid) for p in procs) - woken}

    for board in TRIO:
        eng.signal(board, key="hold")
    for proc in procs:
        code, _, err = finished(proc, timeout=120)
        assert code == 0, err
    granted = [str(e["key"]) for e in grants(lab) if str(e["key"]).startswith("m")]
    assert sorted(granted) == sorted(arrival)
    assert max(overtakes(arrival, granted).values()) <= 2
    assert leftovers(lab) == []
    assert lab.held() == set()
    assert [e for e in lab.audit() if e["event"] == "dead-waiter"] == []
    return idle


@pytest.mark.slow
def test_three_hundred_waiters_all_served_in_order(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                   procs: list[subprocess.Popen[str]]) -> None:
    """Fault matrix case 3: 300 concurrent waiters of three users all served in queue
    order, nothing left behind, idle waiters asleep."""
    idle = run_many_waiters(shared_lab, procs, 300, test_users)
    assert idle["cpu"] <= 0.05 and idle["wakeups"] <= 5, f"300 idle waiters in one second: {idle}"


def inotify_instance_limit() -> int:
    return int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())


@pytest.mark.slow
def test_waiters_beyond_the_inotify_instance_limit_still_sleep(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                               procs: list[subprocess.Popen[str]]) -> None:
    """One user (a CI account) with more waiters than fs.inotify.max_user_instances
    (128 by default): the extra waiters must not fall back to polling ten times a second."""
    count = inotify_instance_limit() + 8
    if count > 300:
        pytest.skip(f"fs.inotify.max_user_instances is {count - 8}: too many processes for this test")
    idle = run_many_waiters(shared_lab, procs, count, test_users[:1])
    assert idle["cpu"] <= 0.05 and idle["wakeups"] <= 5, f"{count} idle waiters in one second: {idle}"


OVERLAP_WORKER = textwrap.dedent(
    """
    import os, sys
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, target, key, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    for _ in range(rounds):
        grant = eng.wait(target, key=key, budget=60)
        eng.signal(grant.board, key=key)
    """
)


def test_overlapping_pools_and_board_waiters_churn(lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    """Waiters of two overlapping pools and of their shared board, all churning at once:
    every wait is served (tickets ahead leave in every order, sometimes ringing twice)."""
    for i in range(12):
        target = ("trio", "pair", "b3")[i % 3]
        procs.append(subprocess.Popen([sys.executable, "-c", OVERLAP_WORKER, str(lab.base), target, f"w{i}", "30"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env))
    for proc in procs:
        code, _, err = finished(proc, timeout=120)
        assert code == 0, err
    assert leftovers(lab) == []
    assert lab.held() == set()


def test_pool_holders_never_exceed_members_with_cli_waiters(lab: LabFixture,
                                                           procs: list[subprocess.Popen[str]]) -> None:
    """Six CLI waiters on trio at once, nothing held: three win, three stay queued."""
    for i in range(6):
        procs.append(spawn_mq(lab, "sem", "-wait", "trio", "-k", f"k{i}"))
    wait_for(lambda: sum(p.poll() is not None for p in procs) == 3 and len(queued(lab)) == 3,
             what="three grants and three queued")
    winners = [p for p in procs if p.poll() is not None]
    boards = sorted(finished(p)[1].strip() for p in winners)
    assert boards == list(TRIO)
    assert all(p.returncode == 0 for p in winners)
    time.sleep(0.3)  # negative check: no fourth waiter may be granted
    assert sum(p.poll() is not None for p in procs) == 3
    info = run_mq(lab, "sem", "-info", "trio", check=True).stdout
    assert info.count("waiting") == 3 * 3  # each member lists the three pool waiters


# -- promise 8: no herd of waiters waking on each release ------------------------------------
TAKE_AND_KEEP = textwrap.dedent(
    """
    import os, sys
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, target, key = sys.argv[1], sys.argv[2], sys.argv[3]
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    print(eng.wait(target, key=key, budget=None).board, flush=True)
    """
)


def wakeups(pid: int) -> int:
    """Voluntary context switches: each time a sleeping waiter was woken."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for {pid}")


def wait_asleep(pids: list[int]) -> None:
    """Until every one of ``pids`` is asleep and none has woken for 0.2 s (their start-up and
    the wake-ups of later arrivals are over; what follows is the idle state)."""
    woken = settled(lambda: sum(wakeups(pid) for pid in pids))
    wait_for(lambda: all(proc_state(pid) == "S" for pid in pids) and woken(), timeout=60,
             what=f"{len(pids)} waiters asleep", step=0.05)


def test_releases_do_not_wake_every_waiter(lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    """Ten hand-offs on trio: a waiter for another board, and the waiter at the back
    of the trio queue, are not woken by each of them (fault matrix promise 8)."""
    eng = engine(lab)
    for board in (*TRIO, "solo"):
        eng.wait(board, key="hold", budget=0)

    def start(target: str, key: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", TAKE_AND_KEEP, str(lab.base), target, key],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env)
        procs.append(proc)
        wait_for(lambda: proc.pid in ticket_pids(lab), what=f"ticket of {key}")
        return proc

    bystander = start("solo", "bystander")
    front = [start("trio", f"f{i}") for i in range(10)]
    tail = start("trio", "tail")
    wait_asleep([p.pid for p in procs])  # every waiter settled into its sleep
    before = {p.pid: wakeups(p.pid) for p in (bystander, tail)}

    held = dict.fromkeys(TRIO, "hold")
    woken: dict[str, int] = {}
    for i, waiter in enumerate(front):  # ten hand-offs, one at a time
        board = next(b for b in TRIO if held[b] == ("hold" if i < 3 else f"f{i - 3}"))
        eng.signal(board, key=held[board])
        assert finished(waiter)[:2] == (0, board + "\n")
        held[board] = f"f{i}"
        if i == len(front) - 2:  # f9 still waits ahead of the tail: nothing concerned it so far
            time.sleep(0.2)  # negative check: a wrongly woken tail would have woken by now
            woken["tail"] = wakeups(tail.pid) - before[tail.pid]
    time.sleep(0.2)  # negative check: as for the tail, a wake-up of the bystander would have shown
    woken["bystander"] = wakeups(bystander.pid) - before[bystander.pid]
    assert tail.poll() is None and bystander.poll() is None
    # A waiter for another board has no reason to wake at all; the last trio waiter
    # not while a waiter ahead of it still wants every board it wants (it wakes once
    # f9, the last one ahead, leaves, and then does its own work at the head).
    assert woken["bystander"] <= 2 and woken["tail"] <= 2, f"wake-ups during trio hand-offs: {woken}"


def test_pool_wait_prefers_a_free_member_to_an_expired_lock(lab: LabFixture) -> None:
    """-T lets a waiter take over an expired lock; with a member free, it takes that instead."""
    eng = engine(lab)
    eng.wait("b1", key="old", timeout=1, budget=0)
    lock = lab.base / "b1.lock"
    os.utime(lock, ns=(lock.stat().st_atime_ns, lock.stat().st_mtime_ns - 5_000_000_000), follow_symlinks=False)
    proc = run_mq(lab, "sem", "-wait", "trio", "-k", "new", "-t", "0", check=True)
    assert proc.stdout.strip().splitlines()[-1] == "b2"
    assert key_of(lab, "b1") == "old"  # not taken over
    assert [e for e in lab.audit() if e["event"] == "reclaim"] == []


def test_an_expiry_that_passes_while_the_waiter_is_awake_is_not_missed(lab: LabFixture) -> None:
    """Woken for something else (over SSH: a keepalive) just before the holder's -T runs out,
    the waiter must still take the lock once it expires, not sleep on until its budget ends."""
    holder = engine(lab)
    holder.wait("b1", key="old", timeout=1, budget=0)
    expires = (lab.base / "b1.lock").stat().st_mtime + 1
    read_end, write_end = os.pipe()

    def busy(fd: int) -> None:  # the wake-up is handled until the expiry has passed
        os.read(fd, 16)
        time.sleep(max(0.0, expires - time.time()) + 0.2)

    def nudge() -> None:
        time.sleep(max(0.0, expires - time.time() - 0.3))
        os.write(write_end, b"x")

    threading.Thread(target=nudge, daemon=True).start()
    try:
        grant = engine(lab).wait("b1", key="new", budget=8, extra_fds=[read_end], on_extra=busy)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (grant.board, grant.reclaimed_from) == ("b1", holder.user)
    assert time.time() - expires < 3


SESSION_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, key, session = sys.argv[1], sys.argv[2], sys.argv[3] == "session"
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    grant = eng.wait("b1", key=key, budget=None, session=session)  # no tick: only events wake it
    print(grant.board, flush=True)
    if session:
        time.sleep(60)  # until killed
    else:
        eng.signal("b1", key=key)
    """
)


def test_a_killed_run_holder_is_noticed_at_once_every_time(lab: LabFixture, procs: Procs) -> None:
    """inotify reports the session file's close before the kernel drops the flock on it; a waiter
    that looked on that event alone could find it still held and sleep on. It is woken by a
    doorbell on the flock itself: twenty rounds, each noticed within a few seconds."""
    for round_ in range(20):
        holder = procs.add_group(subprocess.Popen([sys.executable, "-c", SESSION_CHILD, str(lab.base), f"h{round_}",
                                                   "session"], stdout=subprocess.PIPE, text=True, env=lab.env,
                                                  start_new_session=True))
        assert holder.stdout is not None and holder.stdout.readline().strip() == "b1"
        waiter = procs.add_group(subprocess.Popen([sys.executable, "-c", SESSION_CHILD, str(lab.base), f"w{round_}",
                                                   "plain"], stdout=subprocess.PIPE, text=True, env=lab.env,
                                                  start_new_session=True))
        wait_for(lambda waiter=waiter: waiter.pid in ticket_pids(lab), what="the waiter queued")
        time.sleep(0.05)  # asleep in select
        os.killpg(holder.pid, 9)
        assert waiter.stdout is not None
        ready, _, _ = select.select([waiter.stdout], [], [], 5.0)
        assert ready, f"round {round_}: the holder's death went unnoticed"
        assert waiter.stdout.readline().strip() == "b1"
        assert waiter.wait(timeout=10) == 0  # released b1 for the next round
        holder.wait()
        wait_for(lambda: not ticket_pids(lab), what="the queue empty")
