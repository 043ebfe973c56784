"""Fault-matrix cases (shared/reference/fault-matrix.md) against the real ``mq`` CLI.

Each test names its case number. Planted files are made the way an attacker
or a legacy tool would make them (``os.open``/``mkfifo``/``bind``/``touch -d``),
and every check looks at the real files afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LAB_TOML, LabFixture, make_lab, proc_state, queued, run_mq, spawn_mq, wait_for

ME = pwd.getpwuid(os.getuid()).pw_name
IS_ROOT = os.geteuid() == 0
STRANGER = "nobody"  # owner of planted files: someone other than the caller


# -- helpers -----------------------------------------------------------------------
def run_all(lab: LabFixture, *argvs: tuple[str, ...], user: str | None = None,
            timeout: float = 30) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``mq`` commands concurrently; each must end within ``timeout``."""
    procs = [spawn_mq(lab, *argv, user=user) for argv in argvs]
    done = []
    try:
        for argv, proc in zip(argvs, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(list(argv), proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``roots`` (not following links) with its type, size and mtime."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                seen[path] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return seen


def disown(path: Path) -> None:
    """Give a planted path to another user, so the caller is not its 'holder'."""
    if IS_ROOT:
        entry = pwd.getpwnam(STRANGER)
        os.lchown(path, entry.pw_uid, entry.pw_gid)


def plant_lock(lab: LabFixture, board: str, content: bytes, key: bytes | None = None) -> None:
    """A lock file as procmail ``lockfile`` (or a broken tool) leaves it."""
    fd = os.open(lab.lock(board), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.write(fd, content)
    os.close(fd)
    disown(lab.lock(board))
    if key is not None:
        lab.key(board).write_bytes(key)
        disown(lab.key(board))


def holder_name() -> str:
    return STRANGER if IS_ROOT else ME


def no_wait_key() -> tuple[str, ...]:
    """When not root the planted lock is ours: wait with a key, so it is a wait, not a re-take."""
    return () if IS_ROOT else ("-k", "probe")


# -- case 16: path traversal ------------------------------------------------------------
TRAVERSAL = ["../x", "/etc/x", "a/b", "..", ".", "", "b1\n", "b1/../b2", "../lab/b1", "x" * 4096, "-x", "--x",
             "b1.lock"]


def test_16_traversal_names_refused_and_nothing_created(lab: LabFixture) -> None:
    outside = lab.base.parent
    (outside / "x.lock").write_text("0\n")  # a would-be victim just outside the lock directory
    (outside / "x.key").write_text("victim\n")
    before = snapshot(outside)
    argvs = [("sem", "-wait", "-t", "0", "-k", "K", "--", name) for name in TRAVERSAL]
    argvs += [("sem", "-signal", "-f", "--", "../x"), ("sem", "-cancel", "--", "../x"),
              ("sem", "-info", "--", "/etc/x"), ("sem", "-mr-info", "--", "../lab/b1")]
    for proc in run_all(lab, *argvs):
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        assert proc.stderr.startswith("mq: Unknown system or pool '"), proc.stderr
        assert proc.stderr.count("\n") == 1, "the name is shown escaped on one line"
        assert len(proc.stderr) < 400, "a 4 KB name is not echoed in full"
    assert snapshot(outside) == before
    for path in ("/etc/x.lock", "/etc/x.key"):
        assert not os.path.lexists(path)
    assert not (lab.base / ".mq").exists(), "refused before any file-system call"


# -- case 17: injection ---------------------------------------------------------------
def test_17_hostile_keys_stored_literally_never_run(lab: LabFixture, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    keys = {
        "b1": f"$(touch {canary})",
        "b2": f"`touch {canary}`",
        "b3": f"k; touch {canary}; echo",
        "solo": "it's \"quoted\" \\ and $HOME",
        "x86a": "-x",
        "x86b": f"K {ME} 2020-01-01 00:00:00.000000000 +0000 fake",
    }
    waits = [("sem", "-wait", board, f"--key={key}", "-t", "0") for board, key in keys.items()]
    for proc in run_all(lab, *waits):
        assert proc.returncode == 0, proc
    for board, key in keys.items():
        assert lab.key(board).read_text() == key + "\n"
    info = run_mq(lab, "sem", "-info", "trio", check=True).stdout
    assert f"with key '$(touch {canary})'" in info
    dump = run_mq(lab, "sem", "dumpall", check=True).stdout.splitlines()
    assert len(dump) == 6, "one line per locked board, whatever the keys hold"
    assert all(line.split(" ")[2] == ME for line in dump)

    signals = [("sem", "-signal", board, f"--key={key}") for board, key in keys.items()]
    for proc in run_all(lab, *signals):
        assert proc.returncode == 0, proc
    assert lab.held() == set()
    assert not canary.exists(), "a key reached a shell"

    newline = run_mq(lab, "sem", "-wait", "b1", "-k", f"K\nb2 LOCKED {ME} fake", "-t", "0")
    assert newline.returncode == 5
    assert lab.held() == set() and not lab.key("b1").exists()


# -- case 18: planted symlink, FIFO, socket -------------------------------------------------
@contextlib.contextmanager
def _planted(kind: str, path: Path, target: Path) -> Iterator[None]:
    sock = None
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path, 0o644)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(1)
    disown(path)
    try:
        yield
    finally:
        if sock is not None:
            sock.close()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "socket"])
def test_18_planted_object_at_lock_path_is_held_never_followed(lab: LabFixture, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "precious"
    target.write_text("do not touch\n")
    target_before = os.stat(target)
    with _planted(kind, lab.lock("b1"), target):
        info, mr_info, wait = run_all(lab, ("sem", "-info", "b1"), ("sem", "-mr-info", "b1"),
                                      ("sem", "-wait", "b1", "-t", "0", *no_wait_key()), timeout=10)
        assert info.returncode == 0
        lines = info.stdout.splitlines()
        assert lines[0].startswith(f"Lock for b1 held by {holder_name()} since ")
        assert f"a {kind} sits at the lock path" in info.stdout
        assert mr_info.stdout.startswith(f"b1 LOCKED {holder_name()} ")
        assert wait.returncode == 2, wait
        assert "Failed to acquire lock for system (b1)" in wait.stderr
        assert not stat.S_ISREG(os.lstat(lab.lock("b1")).st_mode), "the planted object is left in place"
        assert not lab.key("b1").exists()
    assert target.read_text() == "do not touch\n"
    assert os.stat(target).st_mtime_ns == target_before.st_mtime_ns
    assert lab.tickets() == []


def test_18_planted_symlink_at_key_path_is_replaced_not_followed(lab: LabFixture, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("do not touch\n")
    lab.key("b1").symlink_to(target)
    run_mq(lab, "sem", "-wait", "b1", "-k", "mine", "-t", "0", check=True)
    assert target.read_text() == "do not touch\n"
    assert not lab.key("b1").is_symlink()
    assert lab.key("b1").read_text() == "mine\n"


# -- case 24: malformed lock and key files ------------------------------------------------
MALFORMED = {  # board: (lock content, key content or None)
    "b1": (b"", None),  # empty lock (crash between create and write)
    "b2": (b"\x00\xffgarbage\n", None),  # garbage lock
    "b3": (b"18", b""),  # truncated: no newline; empty key file
    "solo": (b"0\n", b"\xff\xfe\x00bin"),  # garbage key bytes
    "x86a": (b"0\n", b"K\nsolo FREE\n"),  # a key file that tries to forge a line
    "x86b": (b"-5\n" + b"9" * 5000, b"k" * 5000),  # oversized
}


def test_24_malformed_lock_and_key_files_shown_as_held(lab: LabFixture) -> None:
    for board, (content, key) in MALFORMED.items():
        plant_lock(lab, board, content, key)
    argvs = [("sem", "dumpall"), ("sem", "-info", "trio"), ("sem", "-info", "solo"), ("sem", "-info", "x86")]
    argvs += [("sem", "-wait", board, "-t", "0", *no_wait_key()) for board in MALFORMED]
    dump, *infos = results = run_all(lab, *argvs)
    for proc in results[:4]:
        assert proc.returncode == 0, proc
    lines = dump.stdout.splitlines()
    assert [line.split(" ")[:3] for line in lines] == [[b, "LOCKED", holder_name()] for b in MALFORMED]
    info_text = "".join(p.stdout for p in infos[:3])
    for board in MALFORMED:
        assert f"Lock for {board} held by {holder_name()}" in info_text
    assert "lock file content is not a timeout" in info_text
    assert "solo FREE" not in lines, "a key file cannot forge a line"
    assert "with key 'K\\nsolo FREE'" in info_text
    for proc in results[4:]:
        assert proc.returncode == 2, proc
    for board, (content, _) in MALFORMED.items():
        assert lab.lock(board).read_bytes() == content, "a malformed lock is never rewritten or reclaimed"


# -- case 12: clock jumps ----------------------------------------------------------------
def test_12_touched_locks_only_a_timeout_ages_out(lab: LabFixture) -> None:
    plant_lock(lab, "b1", b"0\n")  # no timeout, dated long ago: still held
    plant_lock(lab, "b2", b"5\n")  # -T 5, dated long ago: reclaimable
    plant_lock(lab, "b3", b"5\n")  # -T 5, dated in the future: fresh
    for board, when in (("b1", "2 days ago"), ("b2", "2 days ago"), ("b3", "tomorrow")):
        subprocess.run(["touch", "-d", when, str(lab.lock(board))], check=True)
    b1, b2, b3 = run_all(lab, *[("sem", "-wait", b, "-t", "0", "-k", "new") for b in ("b1", "b2", "b3")])
    assert b1.returncode == 2 and b3.returncode == 2
    assert (b2.returncode, b2.stdout) == (0, "b2\n")
    assert lab.lock("b2").stat().st_uid == os.getuid()
    assert lab.lock("b2").read_text() == "0\n"
    assert lab.key("b2").read_text() == "new\n"
    reclaims = [e for e in lab.audit() if e["event"] == "reclaim"]
    assert [(e["board"], e["previous_user"]) for e in reclaims] == [("b2", holder_name())]
    assert lab.lock("b1").read_text() == "0\n" and lab.lock("b3").read_text() == "5\n"


# -- case 13: disk or inodes full -----------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if not IS_ROOT or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=32,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path, what: str, spare: int) -> None:
    """Use up every block (or inode) of the file system, then free ``spare`` of them."""
    page = os.sysconf("SC_PAGE_SIZE")
    if what == "blocks":
        filler = path / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 1024)
                handle.flush()
        size = filler.stat().st_size
        os.truncate(filler, max(0, (size - spare * page) // page * page))
    else:
        made = []
        with contextlib.suppress(OSError):
            for number in range(10_000):
                (path / f"inode-{number}").touch()
                made.append(path / f"inode-{number}")
        for extra in made[len(made) - spare:] if spare else []:
            extra.unlink()


# spare = 0: the waiting ticket cannot be made; 1: the lock; 2: the key; 3: the grant record
@pytest.mark.parametrize(("what", "spare"), [("blocks", 0), ("blocks", 3), ("inodes", 0), ("inodes", 1),
                                             ("inodes", 2), ("inodes", 3)])
def test_13_disk_full_clear_error_nothing_left_release_works(tiny_fs: Path, tmp_path: Path, what: str,
                                                             spare: int) -> None:
    lab_toml = tmp_path / "lab.toml"
    lab_toml.write_text(LAB_TOML)
    lab = LabFixture(base=tiny_fs)
    env = {**lab.env, "MQ_LAB": str(lab_toml)}

    def mq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mq", *args], env=env, capture_output=True, text=True,
                              timeout=10, check=False)

    assert mq("sem", "-wait", "b2", "-k", "K").returncode == 0
    _fill(tiny_fs, what, spare)
    before = snapshot(tiny_fs)

    full = mq("sem", "-wait", "b1", "-t", "0", "-k", "K")
    assert full.returncode == 8, full  # a full disk (or inode table) is a disk error, at every step
    assert full.stdout == ""
    assert full.stderr.count("\n") == 1, full.stderr
    assert "No space left on device" in full.stderr
    step = ["create waiting ticket", "create lock", "store key", "record grant"][spare]
    assert f"cannot {step} (No space left on device): " in full.stderr, "says what failed"
    after = snapshot(tiny_fs)
    assert set(after) == set(before), "nothing half-made is left behind"
    assert not lab.lock("b1").exists() and not lab.key("b1").exists()
    assert lab.tickets() == []

    released = mq("sem", "-signal", "b2", "-k", "K")
    assert (released.returncode, released.stdout, released.stderr) == (0, "", "mq: Released lock for b2\n"), released
    assert lab.held() == set()
    assert not lab.key("b2").exists()


# -- case 14: lock directory not writable, or missing -------------------------------------
def test_14_lock_dir_not_writable_clear_error_no_retry(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    alice = test_users[0]
    os.chmod(shared_lab.base, 0o2755)
    started = time.monotonic()
    wait, force, info = run_all(shared_lab, ("sem", "-wait", "b1"), ("sem", "-signal", "b1", "-f"),
                                ("sem", "-info", "b1"), user=alice, timeout=5)
    assert time.monotonic() - started < 5
    for proc in (wait, force):
        assert proc.returncode == 7, proc
        assert proc.stderr.count("\n") == 1
        assert str(shared_lab.base) in proc.stderr and "not writable" in proc.stderr
    assert (info.returncode, info.stdout) == (0, "Lock for b1 currently free\n"), "reading needs no write access"
    assert sorted(p.name for p in shared_lab.base.iterdir()) == ["lab.toml"]


def test_14_lock_dir_missing_exit_7(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "inventory")
    missing = tmp_path / "gone"
    env = {**lab.env, "MQ_BASE": str(missing), "MQ_LAB": str(lab.inventory)}
    procs = [subprocess.Popen([sys.executable, "-m", "mq", "sem", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args in (("-wait", "b1"), ("-info", "b1"), ("-signal", "b1"), ("dumpall",))]
    for proc in procs:
        out, err = proc.communicate(timeout=5)
        assert proc.returncode == 7, (proc.args, err)
        assert out == ""
        assert "does not exist" in err and str(missing) in err
    assert not missing.exists()


# -- case 19: concurrent force-release ----------------------------------------------------
def _blocked_pids(inode: int) -> set[int]:
    """Processes waiting for a flock on ``inode`` (from /proc/locks)."""
    pids = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].endswith(f":{inode}"):
            pids.add(int(fields[-4]))
    return pids


@pytest.mark.parametrize("second", ["mqbob", "root"])
def test_19_concurrent_force_release_spares_the_waiters_fresh_lock(shared_lab: LabFixture,
                                                                   test_users: tuple[str, ...], second: str) -> None:
    """alice holds b1, carol waits for it; bob and root both force-release alice's lock.

    Both forces read alice's lock as the holder, then meet at the lab mutex
    (held here until both wait for it). The ``second`` forcer is then paused
    (SIGSTOP) while the other force runs and carol is granted b1; resumed, its
    force aimed at alice's lock must find it gone and spare carol's fresh lock.
    Two ways to get this wrong are covered: an inode number alone does not
    identify a lock (ext4 hands the freed inode of alice's lock straight to
    carol's), and putting back a renamed-aside lock with ``link`` fails for a
    user who does not own it (``second = mqbob``: fs.protected_hardlinks; root
    may). Both forces, the effective one and the one that found the lock
    changed, are in the audit log as "force" events.
    """
    if not IS_ROOT:
        pytest.skip("needs root to pause another user's process")
    alice, bob, carol = test_users
    lab = shared_lab
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", user=alice, check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "C", user=carol)
    forces: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, tuple[int, str, str]] = {}
    try:
        wait_for(lambda: len(lab.tickets()) == 1, timeout=10, what="carol's ticket")
        fd = os.open(lab.base / ".mq" / "mutex", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            forces = {bob: spawn_mq(lab, "sem", "-signal", "b1", "-f", user=bob),
                      "root": spawn_mq(lab, "sem", "-signal", "b1", "-f")}
            inode = os.fstat(fd).st_ino
            pids = {p.pid for p in forces.values()}
            wait_for(lambda: pids <= _blocked_pids(inode), timeout=10, what="both forces at the mutex")
            paused = forces[second].pid
            os.kill(paused, signal.SIGSTOP)
            # it must have left the flock queue (stopped), not be granted the mutex first
            wait_for(lambda: proc_state(paused) == "T" and paused not in _blocked_pids(inode), timeout=10, what="pause")
        finally:
            os.close(fd)
        out, err = waiter.communicate(timeout=10)
        first = next(name for name in forces if name != second)
        first_out, first_err = forces[first].communicate(timeout=10)
        results[first] = (forces[first].returncode, first_out, first_err)
        os.kill(forces[second].pid, signal.SIGCONT)
        second_out, second_err = forces[second].communicate(timeout=10)
        results[second] = (forces[second].returncode, second_out, second_err)
    finally:
        for proc in [waiter, *forces.values()]:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.communicate()
    assert (waiter.returncode, out) == (0, "b1\n"), err
    assert results[first] == (0, "", f"mq: Released lock for b1 (forced; was held by {alice})\n"), results
    assert results[second][:2] == (3, ""), results  # its holder changed while it waited: nothing removed
    assert "changed while releasing" in results[second][2], results
    assert lab.lock("b1").exists(), f"carol's fresh lock was removed by {second}'s force aimed at alice's"
    assert pwd.getpwuid(lab.lock("b1").stat().st_uid).pw_name == carol
    assert lab.key("b1").read_text() == "C\n"
    assert not list(lab.base.glob(".*mq-release*")), "nothing left aside"
    forced = [e for e in lab.audit() if e["event"] == "force"]
    assert sorted(str(e["user"]) for e in forced) == sorted([bob, "root"]), "both forces are logged"
    assert all(e["holder"] == alice for e in forced)


# -- case 23: a legacy `lockfile -l` breaks mq's lock ---------------------------------------
def test_23_lock_broken_behind_mqs_back(lab: LabFixture) -> None:
    """``lockfile -l 60`` (or an admin's ``rm``) removes a lock mq holds.

    Documented behaviour for ``sem``: the board is free from that moment
    (``-info``/``-mr-info`` say so); the old key file is left behind and
    ignored; the former holder's ``-signal`` exits 3 saying the lock is not
    held (it never removes anything); the next ``-wait`` takes the board with
    a new, higher grant number and its own key. (``mq run`` noticing mid-job is
    covered with ``run``.)
    """
    first = run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    old_grant = int(first.stderr.rsplit("#", 1)[1])
    lab.lock("b1").unlink()  # what `lockfile -l` does to a lock older than its limit
    info, mr_info, signal = run_all(lab, ("sem", "-info", "b1"), ("sem", "-mr-info", "b1"),
                                    ("sem", "-signal", "b1", "-k", "K"))
    assert info.stdout == "Lock for b1 currently free\n"
    assert mr_info.stdout == "b1 FREE\n"
    assert signal.returncode == 3 and "not held" in signal.stderr
    again = run_mq(lab, "sem", "-wait", "b1", "-k", "N", "-t", "0", check=True)
    assert int(again.stderr.rsplit("#", 1)[1]) > old_grant
    assert lab.key("b1").read_text() == "N\n"
    shown = run_mq(lab, "sem", "-info", "b1").stdout.splitlines()
    assert shown[0].endswith("with key 'N'")
    assert shown[1] == f"  grant #{old_grant + 1}, held 0s"


@pytest.mark.parametrize("damage", [b"", b"junk\n", b"\x00" * 21, b"9" * 26 + b"\n", b"5\n7\n"])
def test_damaged_counters_never_go_back(lab: LabFixture, damage: bytes) -> None:
    """An emptied or garbled counter file: arrival order and grant numbers still only go up."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "hold", check=True)
    run_mq(lab, "sem", "-signal", "b1", "-k", "hold", check=True)
    run_mq(lab, "sem", "-wait", "b1", "-k", "hold", check=True)  # grant #2
    first = spawn_mq(lab, "sem", "-wait", "b1", "-k", "first")
    wait_for(lambda: len(queued(lab)) == 1, what="the first waiter")
    for counter in ("seq", "grants"):
        (lab.base / ".mq" / counter).write_bytes(damage)
    second = spawn_mq(lab, "sem", "-wait", "b1", "-k", "second")
    wait_for(lambda: len(queued(lab)) == 2, what="the second waiter")
    assert queued(lab)[0].endswith(f"-{first.pid}")  # still first in line
    run_mq(lab, "sem", "-signal", "b1", "-k", "hold", check=True)
    assert first.wait(timeout=10) == 0
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert "grant #3" in info, info
    run_mq(lab, "sem", "-signal", "b1", "-k", "first", check=True)
    assert second.wait(timeout=10) == 0
    assert "grant #4" in run_mq(lab, "sem", "-info", "b1", check=True).stdout
    run_mq(lab, "sem", "-signal", "b1", "-k", "second", check=True)
    assert {e["counter"] for e in lab.audit() if e["event"] == "counter-recovered"} == {"seq", "grants"}


def test_18_force_release_of_a_planted_directory_leaves_nothing_aside(lab: LabFixture) -> None:
    (lab.base / "b1.lock").mkdir()
    assert run_mq(lab, "sem", "-signal", "b1", "-f").returncode == 0
    (lab.base / "b2.lock").mkdir()
    (lab.base / "b2.lock" / "content").write_text("not mq's")
    proc = run_mq(lab, "sem", "-signal", "b2", "-f")
    assert proc.returncode == 8 and "not empty" in proc.stderr
    assert (lab.base / "b2.lock" / "content").exists()  # put back as it was
    assert lab.held() == {"b2"}
    assert [p.name for p in lab.base.iterdir() if "mq-release" in p.name] == []


def test_14_lock_directory_removed_while_waiting(tmp_path: Path) -> None:
    """Waiters whose lock directory is deleted under them say so (exit 7), never spin."""
    lab = make_lab(tmp_path / "doomed")
    run_mq(lab, "sem", "-wait", "b1", "-k", "hold", check=True)
    head = spawn_mq(lab, "sem", "-wait", "b1", "-k", "head")
    wait_for(lambda: len(queued(lab)) == 1, what="the first waiter")
    second = spawn_mq(lab, "sem", "-wait", "b1", "-k", "second")
    wait_for(lambda: len(queued(lab)) == 2, what="the second waiter")
    gone = tmp_path / "gone"
    lab.base.rename(gone)  # the path vanishes at once; deleting its content wakes the waiters
    shutil.rmtree(gone)
    for proc in (head, second):
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 7, err
        assert "disappeared while waiting" in err, err
