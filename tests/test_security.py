"""A shared lab as a hostile member would try it (issue 18), with real Unix users:
``mqalice`` is the victim, ``mqbob`` plays mallory. Each test is one of the review's
attacks, and fails on the code before its fix.

1. An inventory any member could replace runs no command: ``mq run`` refuses it before
   locking (one line, exit 6), ``sem`` and listings keep working and warn,
   ``mq check --host`` fails on it.
2. Tickets, grant records and offline marks are judged by their file's owner: one that
   claims another user is set aside in ``.mq/forged`` and audited once as ``forged``, and
   mq signals no pid a file names unless it is an mq process of the file's owner older
   than the file.
3. No planted file hangs or exhausts the engine: FIFOs, devices and hard links where mq
   keeps its files are one clear error or a notice, never a hang; a long wait for the lab's
   mutex says who holds it; a client whose host did not confirm an abort does not claim
   that nothing is left held.
4. An audit record that cannot be written is said at once and fails ``mq check --host``;
   a partial line cannot swallow a record; ``history`` says what it skipped; ``[audit]
   syslog = true`` sends records to syslog.
5. The engine shipped over SSH runs from the cache only when no one else could have
   changed it; otherwise from a private copy, and ``--debug`` says why.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    LAB_TOML,
    PROMPT,
    TEST_GROUP,
    LabFixture,
    Procs,
    SshLab,
    as_user,
    engine,
    events,
    spawn_mq,
    ticket_pids,
    user_env,
    wait_for,
)
from mq.engine.core.errors import ExitCode

ALICE, MALLORY = "mqalice", "mqbob"
SUCCESS = "All is well in the universe"


def evil_inventory(marker: Path) -> str:
    """The test inventory with a boot command that leaves proof of who ran it."""
    boot = f'boot = "sh -c \'id -un > {marker}; {sys.executable} -m mq.engine.host.simboard {{system}} {{files}}\'"\n'
    return LAB_TOML.replace('[systems.b1]\n', '[systems.b1]\n' + boot)


def plant_over(target: Path, text: str, user: str) -> None:
    """``user`` writes a file of their own and renames it over ``target``, as any member of
    a group-writable directory without the sticky bit can."""
    script = (f"import os; p = {str(target)!r} + '.mine'; open(p, 'w').write({text!r}); "
              f"os.chmod(p, 0o644); os.rename(p, {str(target)!r})")
    assert subprocess.run([sys.executable, "-c", script], **as_user(user)).returncode == 0  # type: ignore[call-overload]
    assert target.stat().st_uid != 0


@pytest.fixture
def work(shared_lab: LabFixture) -> Path:
    """A directory every test user can write, beside the shared lab."""
    path = shared_lab.base.parent / "work"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    return path


@pytest.fixture
def image(work: Path) -> Path:
    path = work / "pass.img"
    path.write_text("print Test suite passed.\npass\n")
    os.chmod(path, 0o644)
    return path


def no_mq_lab(lab: LabFixture) -> dict[str, str]:
    """The lab's environment with the default inventory (``BASE/lab.toml``), as a lab set up
    before this issue has it."""
    env = dict(lab.env)
    env.pop("MQ_LAB", None)
    return env


def test_a_replaced_inventory_in_the_lock_directory_runs_nothing(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                                  image: Path, work: Path) -> None:
    marker = work / "ran-as"
    plant_over(shared_lab.base / "lab.toml", evil_inventory(marker), MALLORY)
    env = no_mq_lab(shared_lab)
    proc = _run_as(env, ALICE, "run", "-s", "b1", "-c", SUCCESS, "-f", str(image))
    assert proc.returncode == ExitCode.CONFIG, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "mq run will not run its commands" in lines[0], proc.stderr
    assert f"owned by {MALLORY}" in lines[0] and "/etc/mq/lab.toml" in lines[0], lines
    assert not marker.exists(), "mallory's boot command ran"
    assert shared_lab.held() == set() and shared_lab.tickets() == []  # refused before locking


def test_a_root_owned_inventory_in_a_group_writable_directory_is_refused_too(shared_lab: LabFixture,
                                                                              test_users: tuple[str, ...],
                                                                              image: Path) -> None:
    """Root's own file, but in a directory any member could rename another file into."""
    (shared_lab.base / "lab.toml").write_text(evil_inventory(Path("/nonexistent/x")))
    proc = _run_as(no_mq_lab(shared_lab), ALICE, "run", "-s", "b1", "-c", SUCCESS, "-f", str(image))
    assert proc.returncode == ExitCode.CONFIG, proc
    assert "is writable by its group (mode 2775)" in proc.stderr, proc.stderr
    assert shared_lab.held() == set()


def test_a_shared_lab_reads_etc_mq_lab_toml_when_none_is_named(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                                image: Path, work: Path) -> None:
    etc = Path("/etc/mq")
    if (etc / "lab.toml").exists():
        pytest.skip("this machine has an /etc/mq/lab.toml of its own")
    marker = work / "ran-as"
    made = not etc.exists()
    etc.mkdir(mode=0o755, exist_ok=True)
    try:
        (etc / "lab.toml").write_text(evil_inventory(marker).replace("[systems.b1]", "[systems.b1]\ncpu = \"etc-cpu\""))
        os.chmod(etc / "lab.toml", 0o644)
        plant_over(shared_lab.base / "lab.toml", evil_inventory(work / "planted"), MALLORY)  # ignored
        env = no_mq_lab(shared_lab)
        listing = _run_as(env, ALICE, "system-tsv")
        assert listing.returncode == 0 and "etc-cpu" in listing.stdout, listing
        proc = _run_as(env, ALICE, "run", "-s", "b1", "-c", SUCCESS, "-f", str(image))
        assert proc.returncode == 0, proc.stderr
        assert marker.read_text().strip() == ALICE and not (work / "planted").exists()
    finally:
        (etc / "lab.toml").unlink()
        if made:
            etc.rmdir()


def test_sem_and_listings_keep_working_and_warn(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    plant_over(shared_lab.base / "lab.toml", LAB_TOML, MALLORY)
    env = no_mq_lab(shared_lab)
    got = _run_as(env, ALICE, "sem", "-wait", "b1", "-k", "mine")
    assert (got.returncode, got.stdout) == (0, "b1\n"), got
    listing = _run_as(env, ALICE, "systems")
    assert listing.returncode == 0 and "b1" in listing.stdout
    warnings = [line for line in listing.stderr.splitlines() if "mq run will not run its commands" in line]
    assert len(warnings) == 1 and warnings[0].startswith("mq: warning: "), listing.stderr
    assert _run_as(env, ALICE, "sem", "-signal", "b1", "-k", "mine").returncode == 0


def test_check_host_fails_on_an_inventory_others_could_replace(shared_lab: LabFixture,
                                                               test_users: tuple[str, ...]) -> None:
    plant_over(shared_lab.base / "lab.toml", LAB_TOML, MALLORY)
    proc = _run_as(no_mq_lab(shared_lab), ALICE, "check", "--host", "--json")
    checks = {f["key"]: f for f in json.loads(proc.stdout)["data"]["findings"] if f["source"] == "local"}
    assert checks["inventory owner"]["status"] == "fail", checks
    assert f"owned by {MALLORY}" in checks["inventory owner"]["detail"]
    assert proc.returncode != 0


def test_an_inventory_outside_the_lock_directory_runs(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                      image: Path, work: Path) -> None:
    """The fix the refusal names: root-owned 0644 in a root-owned directory, named by MQ_LAB."""
    marker = work / "ran-as"
    shared_lab.inventory.write_text(evil_inventory(marker))
    proc = _run_as(shared_lab.env, ALICE, "run", "-s", "b1", "-c", SUCCESS, "-f", str(image))
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text().strip() == ALICE  # the admin's command, run as the one who ran mq
    check = _run_as(shared_lab.env, ALICE, "check", "--host")
    assert "inventory owner: ok" in check.stdout, check.stdout


def _run_as(env: dict[str, str], user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mq", *args], env=user_env(env, user), capture_output=True,
                          text=True, timeout=timeout, **as_user(user))  # type: ignore[call-overload]


# -- 2. identity from the file system ---------------------------------------------------
HOLD_FILES = """
import fcntl, json, os, sys, time
fds = []
for path, body in json.loads(sys.argv[1]):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, body.encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("ready", flush=True)
time.sleep(600)
"""


def hold_as(user: str, files: list[tuple[Path, dict[str, object]]], procs: Procs) -> None:
    """``user`` writes ``files`` (JSON bodies) and keeps an flock on each, as a live waiter does."""
    spec = json.dumps([(str(path), json.dumps(body)) for path, body in files])
    proc = subprocess.Popen([sys.executable, "-c", HOLD_FILES, spec], stdout=subprocess.PIPE, text=True,
                            **as_user(user))  # type: ignore[call-overload]
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"


def ticket_body(user: str, pid: int, boards: list[str], key: str = "x", nudge: bool = False) -> dict[str, object]:
    import pwd
    import socket
    import time

    return {"v": 1, "uid": pwd.getpwnam(user).pw_uid, "user": user, "pid": pid, "host": socket.gethostname(),
            "key": key, "target": boards[0], "boards": boards, "created": time.time(), "nudge": nudge,
            "priority": 0}


def forged_events(lab: LabFixture) -> list[dict[str, object]]:
    return [e for e in lab.audit() if e["event"] == "forged"]


def prepare_state(lab: LabFixture) -> Path:
    """``.mq`` and its queue, made as mq makes them (one wait and release by root)."""
    eng = engine(lab)
    eng.wait("solo", key="setup", budget=0)
    eng.signal("solo", key="setup")
    return lab.base / ".mq"


def test_tickets_claiming_another_user_block_nothing(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                     procs: Procs) -> None:
    """Three live tickets mallory wrote in alice's name, ahead of a pool: alice gets a board at once."""
    queue = prepare_state(shared_lab) / "queue"
    # arrival numbers below any mq hands out now: all three are ahead of alice
    hold_as(MALLORY, [(queue / f"T{0:012d}-{os.getpid() + n}", ticket_body(ALICE, os.getpid(), ["b1", "b2", "b3"]))
                      for n in range(3)], procs)
    got = _run_as(shared_lab.env, ALICE, "sem", "-wait", "trio", "-k", "mine", "-t", "0")
    assert (got.returncode, got.stdout.strip() in {"b1", "b2", "b3"}) == (0, True), got
    events = forged_events(shared_lab)
    assert len(events) == 3 and {e["kind"] for e in events} == {"ticket"}, events
    assert all(e["owner"] == MALLORY and "mqalice" in str(e["claimed"]) for e in events)
    assert len(os.listdir(shared_lab.base / ".mq" / "forged")) == 3
    again = _run_as(shared_lab.env, ALICE, "sem", "-info", "trio")
    assert again.returncode == 0 and len(forged_events(shared_lab)) == 3  # audited once
    check = _run_as(shared_lab.env, ALICE, "check", "--host")
    assert check.returncode != 0 and "forged" in check.stdout, check.stdout


@pytest.mark.parametrize("writer", [MALLORY, ALICE])
def test_cancel_signals_no_process_a_ticket_merely_names(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                        procs: Procs, writer: str) -> None:
    """A ticket naming alice's ``sleep``: forged by mallory (set aside), or alice's own whose
    pid is now another program of hers (not an mq process): neither gets a signal."""
    victim = subprocess.Popen(["sleep", "600"], **as_user(ALICE))  # type: ignore[call-overload]
    procs.append(victim)
    queue = prepare_state(shared_lab) / "queue"
    hold_as(writer, [(queue / f"T{0:012d}-{victim.pid}",
                      ticket_body(ALICE, victim.pid, ["b1"], key="ci", nudge=True))], procs)
    _run_as(shared_lab.env, ALICE, "sem", "-cancel", "b1", "-k", "ci")
    assert victim.poll() is None, "alice's sleep was signalled"
    assert [e["kind"] for e in forged_events(shared_lab)] == (["ticket"] if writer == MALLORY else [])


def test_a_forged_offline_mark_neither_blocks_a_release_nor_removes_a_lock(shared_lab: LabFixture,
                                                                           test_users: tuple[str, ...],
                                                                           procs: Procs) -> None:
    import time

    assert _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "mine").returncode == 0
    st = shared_lab.lock("b1").stat()
    state = prepare_state(shared_lab)
    mark = {"v": 1, "reason": "maintenance", "user": "mqcarol", "since": time.time(),
            "lock": [st.st_dev, st.st_ino, st.st_uid, st.st_mtime_ns]}
    hold_as(MALLORY, [(state / "offline" / "b1.json", mark)], procs)
    online = _run_as(shared_lab.env, test_users[2], "online", "b1")
    assert shared_lab.lock("b1").exists() and shared_lab.lock("b1").stat().st_ino == st.st_ino, online
    released = _run_as(shared_lab.env, ALICE, "sem", "-signal", "b1", "-k", "mine")
    assert released.returncode == 0, released.stderr
    assert [e["kind"] for e in forged_events(shared_lab)] == ["offline-mark"]


def test_an_edited_grant_record_does_not_make_a_lock_reclaimable(shared_lab: LabFixture,
                                                                  test_users: tuple[str, ...]) -> None:
    assert _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "mine").returncode == 0
    record_path = shared_lab.base / ".mq" / "holders" / "b1.json"
    record = json.loads(record_path.read_text())
    record.update(session=True, session_file=None)
    script = (f"import os; p = {str(record_path)!r}; t = p + '.x'; open(t, 'w').write({json.dumps(record)!r}); "
              f"os.rename(t, p)")
    assert subprocess.run([sys.executable, "-c", script], **as_user(MALLORY)).returncode == 0  # type: ignore[call-overload]
    took = _run_as(shared_lab.env, MALLORY, "sem", "-wait", "b1", "-k", "stolen", "-t", "0")
    assert took.returncode == ExitCode.NOT_ACQUIRED, took
    assert shared_lab.lock("b1").stat().st_uid == pwd_uid(ALICE)
    assert [e["kind"] for e in forged_events(shared_lab)] == ["grant-record"]
    assert [e for e in shared_lab.audit() if e["event"] == "reclaim"] == []


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# -- 3. nothing planted hangs the lab -----------------------------------------------------
def test_a_fifo_at_the_audit_log_hangs_no_one(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    prepare_state(shared_lab)
    (shared_lab.base / "audit.jsonl").unlink()
    os.mkfifo(shared_lab.base / "audit.jsonl")
    os.chmod(shared_lab.base / "audit.jsonl", 0o666)  # anyone may open it: only its kind stops mq
    alice = _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "a", timeout=30)
    bob = _run_as(shared_lab.env, MALLORY, "sem", "-wait", "b2", "-k", "b", timeout=30)
    assert (alice.returncode, alice.stdout, bob.returncode, bob.stdout) == (0, "b1\n", 0, "b2\n"), (alice, bob)
    assert "audit log" in alice.stderr and "could not record this grant (not a regular file" in alice.stderr, \
        alice.stderr
    check = _run_as(shared_lab.env, ALICE, "check", "--host", timeout=30)
    assert check.returncode != 0 and "audit log: FAIL" in check.stdout, check.stdout


@pytest.mark.parametrize("planted", ["fifo", "/dev/zero"])
def test_an_inventory_that_is_no_file_is_one_clear_error(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                         planted: str) -> None:
    target = shared_lab.base / "lab.toml"
    target.unlink()
    if planted == "fifo":
        os.mkfifo(target, 0o666)
    else:
        target.symlink_to(planted)
    proc = _run_as(no_mq_lab(shared_lab), ALICE, "sem", "-info", "b1", timeout=30)
    assert proc.returncode == ExitCode.CONFIG, proc
    assert proc.stderr == f"mq: {target}: not a regular file\n", proc.stderr


def test_a_counter_hard_linked_elsewhere_is_refused_and_left_alone(shared_lab: LabFixture,
                                                                   test_users: tuple[str, ...], work: Path) -> None:
    state = prepare_state(shared_lab)
    precious = work / "precious"
    precious.write_text("somebody's data, not a counter\n")
    os.chmod(precious, 0o666)
    script = f"import os; os.unlink({str(state / 'seq')!r}); os.link({str(precious)!r}, {str(state / 'seq')!r})"
    assert subprocess.run([sys.executable, "-c", script], **as_user(MALLORY)).returncode == 0  # type: ignore[call-overload]
    proc = _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "a", timeout=30)
    assert proc.returncode == ExitCode.LOCKDIR, proc
    assert str(state / "seq") in proc.stderr and "has 2 names" in proc.stderr, proc.stderr
    assert precious.read_text() == "somebody's data, not a counter\n"
    assert shared_lab.held() == set() and shared_lab.tickets() == []


def test_a_long_wait_for_the_mutex_says_who_holds_it(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                     procs: Procs, work: Path) -> None:
    import fcntl

    state = prepare_state(shared_lab)
    fd = os.open(state / "mutex", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        err = work / "err"
        with err.open("w") as handle:
            proc = subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "a"],
                                    env=user_env(shared_lab.env, ALICE), stdout=subprocess.PIPE, stderr=handle,
                                    text=True, **as_user(ALICE))  # type: ignore[call-overload]
        procs.append(proc)
        notice = wait_for(lambda: next((line for line in err.read_text().splitlines() if "mutex" in line), None),
                          what="the notice about the mutex")
        assert proc.poll() is None  # still waiting
    finally:
        os.close(fd)
    assert f"held by pid {os.getpid()} of root" in str(notice), notice
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "b1\n")


# -- 4. the audit log is never silently lost -------------------------------------------------
def test_an_audit_log_replaced_by_another_users_file_is_said_at_once(shared_lab: LabFixture,
                                                                     test_users: tuple[str, ...]) -> None:
    prepare_state(shared_lab)
    plant_over(shared_lab.base / "audit.jsonl", "", MALLORY)  # 0644, mallory's: alice cannot append
    proc = _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "a")
    assert proc.returncode == 0 and proc.stdout == "b1\n", proc
    assert "could not record this grant (cannot open (Permission denied))" in proc.stderr, proc.stderr
    released = _run_as(shared_lab.env, ALICE, "sem", "-signal", "b1", "-k", "a")
    assert released.returncode == 0 and "could not record this release" in released.stderr, released
    check = _run_as(shared_lab.env, ALICE, "check", "--host")
    assert check.returncode != 0 and "audit log: FAIL" in check.stdout, check.stdout


def test_a_partial_line_swallows_no_record_and_history_says_what_it_skipped(shared_lab: LabFixture,
                                                                              test_users: tuple[str, ...]) -> None:
    prepare_state(shared_lab)
    with open(shared_lab.base / "audit.jsonl", "a") as log:
        log.write('{"junk": ')
    assert _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "a").returncode == 0
    grants = [e for e in shared_lab.audit_tolerant() if e.get("event") == "grant" and e.get("board") == "b1"]
    assert len(grants) == 1 and grants[0]["user"] == ALICE
    history = _run_as(shared_lab.env, ALICE, "history", "b1")
    assert history.returncode == 0 and "grant" in history.stdout, history
    assert "1 line of the audit log" in history.stderr and "skipped" in history.stderr, history.stderr


def test_audit_records_go_to_syslog_when_asked(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    import socket

    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log here; this test stands in for one where there is none")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/dev/log")
    try:
        os.chmod("/dev/log", 0o666)
        server.settimeout(30)
        shared_lab.inventory.write_text(LAB_TOML + "\n[audit]\nsyslog = true\n")
        assert _run_as(shared_lab.env, ALICE, "sem", "-wait", "b1", "-k", "a").returncode == 0
        message = server.recv(65536).decode()
    finally:
        server.close()
        os.unlink("/dev/log")
    assert "mq[" in message and '"event": "grant"' in message and '"user": "mqalice"' in message, message


# -- 5. the shipped engine is verified ---------------------------------------------------
PLANTED_AGENT = """
import os
def main(argv=None):
    open({marker!r}, "w").write(str(os.getuid()))
    return 0
"""


def test_an_engine_planted_in_a_group_writable_cache_is_not_run(ssh_lab: SshLab, work: Path) -> None:
    from mq.transport.bundle import engine_zip

    home = Path(f"/tmp/mq-home-{ALICE}")
    cache = home / ".cache"
    marker = work / "planted-ran"
    shutil.rmtree(cache, ignore_errors=True)
    mode = home.stat().st_mode
    try:
        os.chmod(home, 0o755)  # a home others may enter, a cache made with umask 002 in the lab's group
        for directory in (cache, cache / "mq"):
            directory.mkdir(mode=0o775)
            os.chmod(directory, 0o2775)
            os.chown(directory, pwd_uid(ALICE), grp.getgrnam(TEST_GROUP).gr_gid)
        engine = cache / "mq" / f"engine-{engine_zip()[0]}"
        script = (f"import os; e = {str(engine)!r}; os.makedirs(e + '/mq/engine/host'); "
                  f"open(e + '/mq/__init__.py', 'w').close(); open(e + '/mq/engine/__init__.py', 'w').close(); "
                  f"open(e + '/mq/engine/host/__init__.py', 'w').close(); "
                  f"open(e + '/mq/engine/host/agent.py', 'w').write({PLANTED_AGENT.format(marker=str(marker))!r})")
        assert subprocess.run([sys.executable, "-c", script], **as_user(MALLORY)).returncode == 0  # type: ignore[call-overload]
        proc = ssh_lab.mq(ALICE, "--debug", "sem", "-info", "b1")
        assert proc.returncode == 0 and "b1" in proc.stdout, proc
        assert not marker.exists(), "mallory's engine ran as alice"
        assert f"the cached engine is not used: {engine} belongs to {MALLORY}" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        os.chmod(home, stat.S_IMODE(mode))


# -- the rules themselves ----------------------------------------------------------------
def test_a_sticky_directory_protects_what_others_do_not_own(tmp_path: Path) -> None:
    from mq.engine.host import trust

    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.chmod(tmp_path, 0o755)
    owners = frozenset({0})
    assert trust.directory_problem(str(sticky), owners) is None
    os.chmod(sticky, 0o777)
    assert "writable by everyone" in (trust.directory_problem(str(sticky), owners) or "")


def test_a_symlink_is_judged_where_it_lies_too(shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    """``BASE/lab.toml -> /etc/...``: the link itself lies where any member can replace it."""
    from mq.engine.host import trust

    link = shared_lab.base / "link.toml"
    link.symlink_to(shared_lab.inventory)
    st = os.stat(link)
    assert stat.S_ISREG(st.st_mode)
    assert trust.opened_file_problem(str(shared_lab.inventory), st, trust.trusted_owners(str(shared_lab.base))) \
        is None
    problem = trust.opened_file_problem(str(link), st, trust.trusted_owners(str(shared_lab.base)))
    assert problem is not None and "writable by its group" in problem


def test_a_group_writable_inventory_file_is_refused(tmp_path: Path) -> None:
    from mq.engine.host import trust

    path = tmp_path / "lab.toml"
    path.write_text(LAB_TOML)
    os.chmod(path, 0o664)
    assert "writable by its group" in (trust.file_problem(os.stat(path), frozenset({0})) or "")


def test_an_operator_cancels_another_users_wait_with_force(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                          procs: Procs) -> None:
    """``-cancel -k KEY`` ends only your own waits; with ``-f``, anyone's with that key, audited as force.
    The other user's waiter cannot be signalled: it ends (exit 2) when it next looks, at the latest
    when the board frees, and the waiter behind it gets the board."""
    engine(shared_lab).wait("b1", key="hold")
    cancelled = spawn_mq(shared_lab, "sem", "-wait", "b1", "-k", "ci-7", user=ALICE)
    procs.append(cancelled)
    wait_for(lambda: cancelled.pid in ticket_pids(shared_lab), what="alice's wait queued")
    behind = spawn_mq(shared_lab, "sem", "-wait", "b1", "-k", "next", user=MALLORY)
    procs.append(behind)
    wait_for(lambda: behind.pid in ticket_pids(shared_lab), what="mallory's wait queued")
    mine_only = _run_as(shared_lab.env, MALLORY, "sem", "-cancel", "b1", "-k", "ci-7")
    assert mine_only.returncode == 0 and "Cancelled 0 wait(s)" in mine_only.stderr
    forced = _run_as(shared_lab.env, MALLORY, "sem", "-cancel", "b1", "-k", "ci-7", "-f")
    assert forced.returncode == 0 and "Cancelled 1 wait(s)" in forced.stderr, forced.stderr
    engine(shared_lab).signal("b1", key="hold")
    assert cancelled.wait(timeout=PROMPT * 4) == 2
    assert behind.wait(timeout=PROMPT * 4) == 0
    force = [e for e in events(shared_lab, "force") if e.get("what") == "cancel"]
    assert [(e["user"], e["waiter"], e["key"]) for e in force] == [(MALLORY, ALICE, "ci-7")]
