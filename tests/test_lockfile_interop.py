"""procmail ``lockfile(1)`` and ``mq`` share one lock directory (fault matrix 9, 10, 15, 20-22).

Legacy locks made by the real ``lockfile`` binary are real locks to ``mq``, an
``mq`` lock stops ``lockfile``, and ``-T`` reclaims are won by exactly one
waiter and never delete a successor's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    PROMPT,
    LabFixture,
    Procs,
    as_user,
    child_named,
    engine,
    key_of,
    proc_state,
    processes_naming,
    run_mq,
    spawn_mq,
    ticket_pids,
    user_env,
    wait_for,
)
from mq.engine.lockdir import boardlock, legacy

LOCKFILE = shutil.which("lockfile") or "/usr/bin/lockfile"
pytestmark = pytest.mark.skipif(not os.access(LOCKFILE, os.X_OK), reason="procmail lockfile(1) not installed")


def owner_of(lab: LabFixture, board: str) -> int | None:
    try:
        return lab.lock(board).lstat().st_uid
    except FileNotFoundError:
        return None


def wait_expired(lab: LabFixture, board: str, timeout: int) -> None:
    """Sleep until the ``-T timeout`` lock on ``board`` has aged out (by its mtime)."""
    mtime = lab.lock(board).lstat().st_mtime
    wait_for(lambda: time.time() - mtime > timeout + 0.05, timeout=timeout + 5, what="lock expiry", step=0.02)


def asleep_between_tries(pid: int) -> bool:
    """True while ``pid`` (``lockfile -1``) sleeps out its second between two tries."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def blocked_on_flock(pid: int) -> bool:
    """True while ``pid`` waits for a flock (a ``->`` line of /proc/locks)."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in open("/proc/locks").read().splitlines() if "->" in line)


# -- case 21: a legacy lock is a real lock ----------------------------------------------------
def test_legacy_lock_shown_held_waited_on_and_taken_after_removal(lab: LabFixture,
                                                                  procs: list[subprocess.Popen[str]]) -> None:
    subprocess.run([LOCKFILE, "-r0", str(lab.lock("b1"))], check=True)
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert info.startswith("Lock for b1 held by root since ")
    assert info.splitlines()[0].endswith(", timeout 0")  # no key file: no key shown, as mq.sh
    assert run_mq(lab, "sem", "-mr-info", "b1", check=True).stdout.startswith("b1 LOCKED root ")

    # same user as the legacy holder, so a key tells the jobs apart
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "job")
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab) or waiter.poll() is not None, what="waiter queued")
    time.sleep(0.2)  # negative check: the waiter must not take the legacy-locked board
    assert waiter.poll() is None
    assert key_of(lab, "b1") is None

    subprocess.run(["rm", "-f", str(lab.lock("b1"))], check=True)
    removed = time.monotonic()
    wait_for(lambda: key_of(lab, "b1") == "job", timeout=2 * PROMPT, what="mq to take the freed board")
    assert time.monotonic() - removed < PROMPT
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
    assert f"held by {bob} since" in info and "with key" not in info.splitlines()[0], info
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
    wait_for(lambda: asleep_between_tries(legacy.pid) or legacy.poll() is not None,
             what="lockfile to find the board locked and sleep before its next try")
    assert legacy.poll() is None
    run_mq(lab, "sem", "-signal", "b1", "-k", "mine", check=True)
    legacy.communicate(timeout=10)
    assert legacy.returncode == 0
    assert lab.lock("b1").read_text() == "0"  # lockfile's own lock, no key file
    assert key_of(lab, "b1") is None


# -- case 20: many reclaimers of one expired lock --------------------------------------------------
@pytest.mark.slow
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


# -- sem -cancel ends mq.sh's own waiters too ------------------------------------------------
def mqsh_waiter(lab: LabFixture, board: str, key: str) -> str:
    """The shell mq.sh runs on the host for ``sem -wait BOARD -k KEY`` (as ``sh -c``)."""
    base = str(lab.base)
    return (f"umask 0111 && lockfile -'8'  -r '-1' '{base}/{board}.lock' && rm -f '{base}/{board}.key' && "
            f"printf '{key}' > '{base}/{board}.key' && chmod a-w,g+r '{base}/{board}.key' && echo granted")


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as gone: it can take no lock)."""
    return proc_state(pid) in ("Z", "X")


def uid_of(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def start_waiter(lab: LabFixture, board: str, key: str, procs: Procs,
                 user: str | None = None) -> tuple[subprocess.Popen[str], int]:
    """Start a fake mq.sh waiter in a session of its own; (the shell, its lockfile child) once the child runs."""
    shell = procs.add_group(subprocess.Popen(["sh", "-c", mqsh_waiter(lab, board, key)], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                                             env=user_env(lab.env, user), **as_user(user)))
    child = wait_for(lambda: child_named(shell.pid, "lockfile") or shell.poll() is not None, timeout=10,
                     what="the waiter's lockfile child")
    assert shell.poll() is None, shell.communicate()
    assert isinstance(child, int)
    return shell, child


@contextlib.contextmanager
def paused(*shells: subprocess.Popen[str]) -> Iterator[None]:
    """The waiter shells stopped (SIGSTOP) for the block, continued after. A SIGTERM sent
    meanwhile is then acted on first when a shell resumes, so the shell cannot see its
    ``lockfile`` child end (exit 75) and exit by itself, whichever of the two mq signalled first."""
    for shell in shells:
        shell.send_signal(signal.SIGSTOP)
        wait_for(lambda shell=shell: proc_state(shell.pid) == "T", timeout=5, what="the shell stopped")
    try:
        yield
    finally:
        for shell in shells:
            shell.send_signal(signal.SIGCONT)


def test_cancel_ends_the_callers_mqsh_waiter_and_its_lockfile(lab: LabFixture, procs: Procs) -> None:
    key, other = "ci[1].* $(touch pwned)", "ci1-x $(touch pwned)"  # unescaped, the key would match `other`
    for board in ("b1", "b2"):
        subprocess.run([LOCKFILE, "-r0", str(lab.lock(board))], check=True)
    # mq's own waiter first: it is asleep by the time the cancel comes
    mq_waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", key)
    procs.append(mq_waiter)
    wait_for(lambda: mq_waiter.pid in ticket_pids(lab) or mq_waiter.poll() is not None, what="mq waiter queued")
    shell, child = start_waiter(lab, "b1", key, procs)
    other_key, other_key_child = start_waiter(lab, "b1", other, procs)
    other_board, other_board_child = start_waiter(lab, "b2", key, procs)

    with paused(shell):
        done = run_mq(lab, "sem", "-cancel", "b1", "-k", key)
    assert done.returncode == 0, done.stderr
    assert shell.wait(timeout=3) == -signal.SIGTERM  # mq ended the shell itself, not only its lockfile
    wait_for(lambda: gone(child), timeout=3, what="the cancelled waiter's lockfile child to end")
    _, err = mq_waiter.communicate(timeout=5)  # mq's own wait ends as before
    assert mq_waiter.returncode == 2, err
    assert "Failed to acquire lock for system (b1)" in err
    for proc, kid in ((other_key, other_key_child), (other_board, other_board_child)):
        assert proc.poll() is None and not gone(kid), "a waiter with another key or board was ended"
    assert not (lab.base / "pwned").exists() and not Path("pwned").exists()

    # nothing left that could take b1 behind everyone's back once it is free
    for proc in (other_key, other_board):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    wait_for(lambda: not processes_naming(lab.lock("b1")), timeout=3, what="no process waiting for b1.lock")
    lab.lock("b1").unlink()
    time.sleep(0.5)  # negative check: a leftover lockfile would have taken the free board by now
    assert not lab.lock("b1").exists()
    assert lab.key("b1").exists() is False


def test_cancel_counts_mq_and_mqsh_waiters_of_a_pool(lab: LabFixture, procs: Procs) -> None:
    """A pool name ends the waiters of every member; the count covers both tools."""
    for board in ("b1", "b2", "b3", "solo"):
        subprocess.run([LOCKFILE, "-r0", str(lab.lock(board))], check=True)
    mq_waiter = spawn_mq(lab, "sem", "-wait", "trio", "-k", "K")
    procs.append(mq_waiter)
    wait_for(lambda: mq_waiter.pid in ticket_pids(lab) or mq_waiter.poll() is not None, what="mq waiter queued")
    first, first_child = start_waiter(lab, "b1", "K", procs)
    second, second_child = start_waiter(lab, "b3", "K", procs)
    spared, spared_child = start_waiter(lab, "solo", "K", procs)  # not in the pool
    with paused(first, second):
        assert engine(lab).cancel("trio", "K") == 3
    for proc, kid in ((first, first_child), (second, second_child)):
        assert proc.wait(timeout=3) == -signal.SIGTERM
        wait_for(lambda kid=kid: gone(kid), timeout=3, what="lockfile child to end")
    mq_waiter.communicate(timeout=5)
    assert mq_waiter.returncode == 2
    assert spared.poll() is None and not gone(spared_child)


def test_cancel_spares_another_users_mqsh_waiter(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                 procs: Procs) -> None:
    lab = shared_lab
    alice = test_users[0]
    subprocess.run([LOCKFILE, "-r0", str(lab.lock("b1"))], check=True)
    hers, her_child = start_waiter(lab, "b1", "K", procs, user=alice)
    mine, my_child = start_waiter(lab, "b1", "K", procs)
    with paused(mine):
        done = run_mq(lab, "sem", "-cancel", "b1", "-k", "K")
    assert done.returncode == 0, done.stderr
    assert mine.wait(timeout=3) == -signal.SIGTERM
    wait_for(lambda: gone(my_child), timeout=3, what="my lockfile child to end")
    time.sleep(0.2)  # negative check: a signal sent to her waiter too would have ended it by now
    assert hers.poll() is None and not gone(her_child), "another user's waiter was signalled"
    assert uid_of(hers.pid) == pwd.getpwnam(alice).pw_uid


@pytest.mark.parametrize("key", ["it's", "a\nb", "$(rm -rf /)", "x.*", "\\1 ' > '", "0"])
def test_waiter_pattern_takes_the_key_literally(key: str) -> None:
    base, board = "/var/cache/machinelocks", "b1"
    line = f"sh -c umask 0111 && lockfile -8 ... && printf '{key}' > '{base}/{board}.key' && chmod".encode()
    pattern = legacy.waiter_pattern(base, [board], key)
    assert pattern.search(line)
    assert not pattern.search(line.replace(b"lockfile", b"lockfyle"))
    assert not legacy.waiter_pattern(base, [board], key + "z").search(line)
    assert not legacy.waiter_pattern(base, ["b2"], key).search(line)
    assert not legacy.waiter_pattern("/var/cache", [board], key).search(line)


# -- locks of mq's taken over by another tool are closed in the audit log ----------------------------
def grant_of(lab: LabFixture, board: str) -> int:
    grants = [e["grant"] for e in lab.audit() if e["event"] == "grant" and e["board"] == board]
    assert isinstance(grants[-1], int)
    return grants[-1]


def taken_over(lab: LabFixture) -> list[dict[str, object]]:
    return [e for e in lab.audit() if e["event"] == "taken-over"]


def test_forced_removal_by_mqsh_is_recorded_once(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    grant = grant_of(lab, "b1")
    subprocess.run(["rm", "-f", str(lab.key("b1")), str(lab.lock("b1"))], check=True)  # mq.sh -signal -f
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert info == "Lock for b1 currently free\n"
    records = taken_over(lab)
    assert len(records) == 1, records
    record = records[0]
    assert (record["board"], record["grant"], record["holder"], record["holder_key"], record["taken_by"]) == \
        ("b1", grant, "root", "K", None)
    assert record["noticed"] == "info" and record["pool"] == ""
    assert isinstance(record["held"], float) and 0 <= record["held"] < 30
    run_mq(lab, "sem", "-info", "b1", check=True)
    run_mq(lab, "sem", "dumpall", check=True)
    assert len(taken_over(lab)) == 1
    assert not (lab.base / ".mq" / "holders" / "b1.json").exists()


def test_lockfile_l_takeover_is_recorded_with_the_new_holder(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", "-T", "1", check=True)
    grant = grant_of(lab, "b1")
    mtime = lab.lock("b1").lstat().st_mtime
    wait_for(lambda: time.time() - mtime > 2.1, timeout=5, what="the lock to be old enough for lockfile -l 1")
    broke = subprocess.run([LOCKFILE, "-l", "1", "-s", "0", "-r", "0", str(lab.lock("b1"))], capture_output=True,
                           text=True)
    assert broke.returncode == 0 and "Forcing lock" in broke.stderr, broke.stderr
    assert taken_over(lab) == []  # nobody has looked yet
    assert "held by root since" in run_mq(lab, "sem", "-info", "b1", check=True).stdout
    records = taken_over(lab)
    assert [(r["grant"], r["taken_by"], r["holder_key"]) for r in records] == [(grant, "root", "K")]
    run_mq(lab, "sem", "-info", "b1", check=True)
    assert len(taken_over(lab)) == 1


def test_concurrent_noticers_write_one_record(lab: LabFixture, procs: list[subprocess.Popen[str]]) -> None:
    """Both see the stale grant record, then queue at the lab mutex (held here): the
    re-check under the mutex lets only the first write."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    grant = grant_of(lab, "b1")
    lab.lock("b1").unlink()
    mutex = os.open(lab.base / ".mq" / "mutex", os.O_RDWR)
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        lookers = [spawn_mq(lab, "sem", "-info", "b1") for _ in range(3)]
        procs.extend(lookers)
        for looker in lookers:
            wait_for(lambda looker=looker: blocked_on_flock(looker.pid) or looker.poll() is not None,
                     what="noticer at the mutex")
    finally:
        os.close(mutex)
    for looker in lookers:
        out, err = looker.communicate(timeout=10)
        assert (looker.returncode, out) == (0, "Lock for b1 currently free\n"), err
    assert [r["grant"] for r in taken_over(lab)] == [grant]


def test_takeover_noticed_by_signal_and_by_the_next_grant(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", check=True)
    first = grant_of(lab, "b1")
    lab.lock("b1").unlink()
    run_mq(lab, "sem", "-signal", "b1", "-k", "A")  # finds nothing to release, notices why
    run_mq(lab, "sem", "-wait", "b2", "-k", "B", check=True)
    second = grant_of(lab, "b2")
    lab.lock("b2").unlink()
    assert run_mq(lab, "sem", "-wait", "b2", "-k", "C", "-t", "0", check=True).stdout == "b2\n"
    assert [(r["grant"], r["noticed"]) for r in taken_over(lab)] == [(first, "signal"), (second, "wait")]
    assert [e["event"] for e in lab.audit()] == ["grant", "taken-over", "grant", "taken-over", "grant"]


def test_reclaim_names_the_reclaimed_grant(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "jobA", "-T", "1", check=True)
    first = grant_of(lab, "b1")
    wait_expired(lab, "b1", 1)
    run_mq(lab, "sem", "-wait", "b1", "-k", "jobB", "-t", "0", check=True)
    reclaims = [e for e in lab.audit() if e["event"] == "reclaim"]
    assert [r["grant"] for r in reclaims] == [first]
    assert taken_over(lab) == []


def test_info_in_a_directory_it_cannot_write_notices_nothing(shared_lab: LabFixture,
                                                             test_users: tuple[str, ...]) -> None:
    lab = shared_lab
    alice, bob = test_users[0], test_users[1]
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", user=alice, check=True)
    lab.lock("b1").unlink()
    mode = lab.base.stat().st_mode
    os.chmod(lab.base, 0o2755)  # bob may look but not change anything
    try:
        assert run_mq(lab, "sem", "-info", "b1", user=bob, check=True).stdout == "Lock for b1 currently free\n"
        assert run_mq(lab, "sem", "dumpall", user=bob, check=True).stdout == ""
    finally:
        os.chmod(lab.base, mode & 0o7777)
    assert taken_over(lab) == []
    run_mq(lab, "sem", "-info", "b1", user=bob, check=True)
    assert [(r["holder"], r["user"]) for r in taken_over(lab)] == [(alice, bob)]
