"""procmail ``lockfile(1)`` and ``mq`` share one lock directory (fault matrix 9, 10, 15, 20-22).

Legacy locks made by the real ``lockfile`` binary are real locks to ``mq``, an
``mq`` lock stops ``lockfile``, and ``-T`` reclaims are won by exactly one
waiter and never delete a successor's lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from conftest import LabFixture, as_user, run_mq, spawn_mq, ticket_pids, user_env, wait_for
from mq.engine import boardlock

LOCKFILE = shutil.which("lockfile") or "/usr/bin/lockfile"
pytestmark = pytest.mark.skipif(not os.access(LOCKFILE, os.X_OK), reason="procmail lockfile(1) not installed")


def key_of(lab: LabFixture, board: str) -> str | None:
    try:
        return lab.key(board).read_text().strip()
    except FileNotFoundError:
        return None


def owner_of(lab: LabFixture, board: str) -> int | None:
    try:
        return lab.lock(board).lstat().st_uid
    except FileNotFoundError:
        return None


def wait_expired(lab: LabFixture, board: str, timeout: int) -> None:
    """Sleep until the ``-T timeout`` lock on ``board`` has aged out (by its mtime)."""
    mtime = lab.lock(board).lstat().st_mtime
    wait_for(lambda: time.time() - mtime > timeout + 0.05, timeout=timeout + 5, what="lock expiry", step=0.02)


def blocked_on_flock(pid: int) -> bool:
    """True while ``pid`` waits for a flock (a ``->`` line of /proc/locks)."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in open("/proc/locks").read().splitlines() if "->" in line)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


# -- case 21: a legacy lock is a real lock ----------------------------------------------------
def test_legacy_lock_shown_held_waited_on_and_taken_after_removal(lab: LabFixture,
                                                                  procs: list[subprocess.Popen[str]]) -> None:
    subprocess.run([LOCKFILE, "-r0", str(lab.lock("b1"))], check=True)
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert info.startswith("Lock for b1 held by root since ")
    assert ", timeout 0 with key '0'" in info
    assert run_mq(lab, "sem", "-mr-info", "b1", check=True).stdout.startswith("b1 LOCKED root ")

    # same user as the legacy holder, so a key tells the jobs apart
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "job")
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab) or waiter.poll() is not None, what="waiter queued")
    time.sleep(0.2)
    assert waiter.poll() is None
    assert key_of(lab, "b1") is None

    subprocess.run(["rm", "-f", str(lab.lock("b1"))], check=True)
    removed = time.monotonic()
    wait_for(lambda: key_of(lab, "b1") == "job", timeout=5, what="mq to take the freed board")
    assert time.monotonic() - removed < 1.0
    out, _ = waiter.communicate(timeout=5)
    assert (waiter.returncode, out) == (0, "b1\n")
    assert lab.lock("b1").read_text() == "0\n"


def test_legacy_lock_of_another_user(shared_lab: LabFixture, test_users: tuple[str, ...],
                                     procs: list[subprocess.Popen[str]]) -> None:
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    subprocess.run([LOCKFILE, "-r0", str(lab.lock("b2"))], check=True, env=user_env(lab.env, alice),
                   **as_user(alice))
    assert f"held by {alice} since" in run_mq(lab, "sem", "-info", "b2", user=bob, check=True).stdout
    waiter = spawn_mq(lab, "sem", "-wait", "b2", user=bob)
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab) or waiter.poll() is not None, what="bob queued")
    # alice's own tool removes her legacy lock the way mq.sh does
    subprocess.run(["rm", "-f", str(lab.lock("b2"))], check=True, env=user_env(lab.env, alice), **as_user(alice))
    out, _ = waiter.communicate(timeout=5)
    assert (waiter.returncode, out) == (0, "b2\n")
    assert run_mq(lab, "sem", "-mr-info", "b2", check=True).stdout.startswith(f"b2 LOCKED {bob} ")


def test_stale_key_of_a_broken_lock_is_not_the_new_holders(shared_lab: LabFixture,
                                                           test_users: tuple[str, ...]) -> None:
    """Alice's mq lock is broken behind mq's back (``lockfile -l`` style) and bob takes
    b1 with lockfile(1): alice's leftover key is not shown as bob's, and bob's own
    release and wait agree that he holds b1 with no key."""
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    run_mq(lab, "sem", "-wait", "b1", "-k", "OLD", user=alice, check=True)
    lab.lock("b1").unlink()
    subprocess.run([LOCKFILE, "-r0", str(lab.lock("b1"))], check=True, env=user_env(lab.env, bob), **as_user(bob))
    info = run_mq(lab, "sem", "-info", "b1", user=bob, check=True).stdout
    assert f"held by {bob} since" in info and "with key '0'" in info, info
    assert run_mq(lab, "sem", "-wait", "b1", "-t", "0", user=bob).returncode == 4
    assert run_mq(lab, "sem", "-signal", "b1", user=bob).returncode == 0
    assert lab.held() == set()


# -- case 22: an mq lock stops lockfile ----------------------------------------------------------
def test_lockfile_gives_up_on_an_mq_lock(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "mine", check=True)
    before = lab.lock("b1").lstat()
    legacy = subprocess.run([LOCKFILE, "-1", "-r2", str(lab.lock("b1"))], capture_output=True, text=True,
                            timeout=30)
    assert legacy.returncode == 73, legacy.stderr
    after = lab.lock("b1").lstat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert key_of(lab, "b1") == "mine"


def test_lockfile_gets_the_board_after_mq_releases(lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "mine", check=True)
    legacy = subprocess.Popen([LOCKFILE, "-1", "-r20", str(lab.lock("b1"))], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    procs.append(legacy)
    time.sleep(1.5)
    assert legacy.poll() is None
    run_mq(lab, "sem", "-signal", "b1", "-k", "mine", check=True)
    legacy.communicate(timeout=10)
    assert legacy.returncode == 0
    assert lab.lock("b1").read_text() == "0"  # lockfile's own lock, no key file
    assert key_of(lab, "b1") is None


# -- case 20: many reclaimers of one expired lock --------------------------------------------------
def test_ten_reclaimers_of_an_expired_lock_one_wins(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                     procs: list[subprocess.Popen[str]]) -> None:
    lab = shared_lab
    alice = test_users[0]
    others = [u for u in test_users if u != alice]
    run_mq(lab, "sem", "-wait", "b1", "-k", "old", "-T", "1", user=alice, check=True)
    wait_expired(lab, "b1", 1)
    reclaimers = []
    for i in range(10):
        user = others[i % len(others)]
        proc = spawn_mq(lab, "sem", "-wait", "b1", "-T", "0", "-t", "1", "-w", "5", "-k", f"r{i}", user=user)
        procs.append(proc)
        reclaimers.append((user, f"r{i}", proc))
    results = [(user, key, *proc.communicate(timeout=30), proc.returncode) for user, key, proc in reclaimers]

    winners = [(user, key) for user, key, out, _, code in results if code == 0]
    assert len(winners) == 1, results
    assert all(code == 2 and "Failed to acquire lock for system (b1)" in err
               for _, _, _, err, code in results if code != 0), results
    user, key = winners[0]
    assert key_of(lab, "b1") == key
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert f"held by {user} since" in info and "timeout 0" in info
    reclaims = [e for e in lab.audit() if e["event"] == "reclaim"]
    assert len(reclaims) == 1, reclaims
    assert (reclaims[0]["previous_user"], reclaims[0]["previous_key"], reclaims[0]["user"]) == (alice, "old", user)
    assert lab.tickets() == []
    assert not [p for p in os.listdir(lab.base) if ".mq-release." in p]


# -- case 15: a sticky lock directory ------------------------------------------------------
def test_sticky_directory_reclaim_is_permission_denied(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    os.chmod(lab.base, 0o1777)  # the sticky, world-writable /tmp-style directory of case 15
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", "-T", "1", user=alice, check=True)
    lock = lab.lock("b1").lstat()
    wait_expired(lab, "b1", 1)

    started = time.monotonic()
    done = run_mq(lab, "sem", "-wait", "b1", "-k", "B", "-t", "1", "-w", "5", user=bob)
    elapsed = time.monotonic() - started
    assert done.returncode == 7, done.stderr
    assert "permission denied" in done.stderr.lower()
    assert str(lab.lock("b1")) in done.stderr
    assert elapsed < 3.0, f"took {elapsed:.1f} s: spun instead of failing"
    assert done.stdout == ""
    # nothing changed: alice's lock and key stand, no ticket, no half-moved file
    after = lab.lock("b1").lstat()
    assert (after.st_ino, after.st_uid) == (lock.st_ino, lock.st_uid)
    assert key_of(lab, "b1") == "A"
    assert lab.tickets() == []
    assert not [p for p in os.listdir(lab.base) if ".mq-release." in p]
    # alice can still release her own lock
    run_mq(lab, "sem", "-signal", "b1", "-k", "A", user=alice, check=True)
    assert lab.held() == set()


# -- case 10: the old holder's late release -------------------------------------------------
def test_old_holders_release_after_reclaim_spares_the_new_lock(shared_lab: LabFixture,
                                                              test_users: tuple[str, ...]) -> None:
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", "-T", "1", user=alice, check=True)
    wait_expired(lab, "b1", 1)
    got = run_mq(lab, "sem", "-wait", "b1", "-k", "B", "-t", "0", user=bob, check=True)
    assert got.stdout == "b1\n"
    new = lab.lock("b1").lstat()

    late = run_mq(lab, "sem", "-signal", "b1", "-k", "A", user=alice)
    assert late.returncode == 3, late.stderr
    assert "nothing released" in late.stderr
    after = lab.lock("b1").lstat()
    assert (after.st_ino, after.st_uid) == (new.st_ino, new.st_uid)
    assert key_of(lab, "b1") == "B"
    assert [e["event"] for e in lab.audit()] == ["grant", "reclaim", "grant"]


def test_stale_release_by_identity_spares_a_successor(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    """The check behind every release: a holder read before a reclaim no longer
    matches the lock at the path, so removing it removes nothing."""
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", "-T", "1", user=alice, check=True)
    stale = boardlock.read_holder(str(lab.base), "b1")
    assert stale is not None and stale.key == "A"
    wait_expired(lab, "b1", 1)
    run_mq(lab, "sem", "-wait", "b1", "-k", "B", "-t", "0", user=bob, check=True)
    new = lab.lock("b1").lstat()

    reused = " (the new lock reused the old inode number)" if new.st_ino == stale.ino else ""
    assert boardlock.remove_checked(str(lab.base), stale) is False, f"removed the successor's lock{reused}"
    after = lab.lock("b1").lstat()
    assert (after.st_ino, after.st_uid) == (new.st_ino, new.st_uid)
    boardlock.drop_key(str(lab.base), "b1", stale.key)
    assert key_of(lab, "b1") == "B"
    assert not [p for p in os.listdir(lab.base) if ".mq-release." in p]


def test_same_user_new_key_reclaims_and_old_key_release_refused(lab: LabFixture) -> None:
    """One user, two CI jobs: job A's lock expires, job B reclaims it, A's cleanup fails."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "jobA", "-T", "1", check=True)
    wait_expired(lab, "b1", 1)
    assert run_mq(lab, "sem", "-wait", "b1", "-k", "jobB", "-t", "0", check=True).stdout == "b1\n"
    late = run_mq(lab, "sem", "-signal", "b1", "-k", "jobA")
    assert late.returncode == 3
    assert key_of(lab, "b1") == "jobB"
    assert lab.held() == {"b1"}


def test_force_release_racing_a_legacy_relock_spares_it(lab: LabFixture,
                                                        procs: list[subprocess.Popen[str]]) -> None:
    """``-signal -f`` looks at the lock, then waits its turn for the lab mutex (held here,
    as any concurrent mq command holds it for a moment). Meanwhile a legacy user frees
    the board and takes it with lockfile(1). The force must not delete that new lock."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", check=True)
    old = lab.lock("b1").lstat()
    mutex = os.open(lab.base / ".mq" / "mutex", os.O_RDWR)
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        forcer = spawn_mq(lab, "sem", "-signal", "b1", "-f")
        procs.append(forcer)
        wait_for(lambda: blocked_on_flock(forcer.pid) or forcer.poll() is not None, what="forcer at the mutex")
        subprocess.run(["rm", "-f", str(lab.lock("b1"))], check=True)
        subprocess.run([LOCKFILE, "-r0", str(lab.lock("b1"))], check=True)
        legacy = lab.lock("b1").lstat()
    finally:
        os.close(mutex)
    out, err = forcer.communicate(timeout=10)
    reused = " (the new lock reused the old lock's inode number)" if legacy.st_ino == old.st_ino else ""
    assert lab.lock("b1").exists(), f"the force release deleted a lock made after it looked{reused}: {out}{err}"
    assert lab.lock("b1").lstat().st_ino == legacy.st_ino
