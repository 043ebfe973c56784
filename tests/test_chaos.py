"""Chaos trials: fault matrix cases 11 and 25, caused for real and many times over.

Case 11, Ctrl+C in every phase: hundreds of real ``mq`` clients get SIGINT, SIGTERM,
SIGHUP or a double SIGINT after a random 0-2 s delay, while another holder takes
and releases the board in a loop (so signals land while queued, while being
granted, right after the grant, while the job boots or runs). Each trial is
checked on its own: exit 128+N (or 0 when it finished first, holding exactly
what it reported), no ticket of its own left in ``.mq/queue``, no host agent,
console or simulated board of its lane left running, and the locks of the lane
the same before and after (a grant the client reported on stdout excepted; the
test releases it).

Case 25, many sessions: a few hundred ``mq sem -info`` over SSH started at once
against an sshd with OpenSSH's default ``MaxStartups 10:30:100``: each either
succeeds or says ``Unable to ssh to HOST`` and why (exit 9); none hangs.

Trials run in a few lanes at once, each lane with a lab (and a HOME) of its own,
so a stray process is attributed to its lane by its command line.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import test_run
from conftest import (
    LabFixture,
    SshLab,
    as_user,
    key_of,
    make_lab,
    proc_stat,
    processes_naming,
    user_env,
)
from sshd import SSHD, Sshd, client_config, start_sshd
from test_run import SUCCESS, SshRunLab, jobs_left, prepare

ssh_rl = test_run.ssh_rl  # the SSH run lab, as test_run sets it up
spawned = test_run.spawned

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason="needs openssh-server")

MQ = [sys.executable, "-m", "mq"]
SIGNALS: dict[str, list[int]] = {
    "INT": [signal.SIGINT],
    "TERM": [signal.SIGTERM],
    "HUP": [signal.SIGHUP],
    "INTx2": [signal.SIGINT, signal.SIGINT],
}
CHURN_KEY = "churn"
QUICK_IMG = ("print Starting quick test", "sleep 1.2", f"print {SUCCESS}", "pass")

CHURNER = textwrap.dedent(
    """
    import os, random, sys, time
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, stop, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    rounds = 0
    while not os.path.exists(stop):
        eng.wait("b1", key="churn", budget=None)
        time.sleep(random.uniform(0.02, hold))  # hold b1 a random while,
        eng.signal("b1", key="churn")
        rounds += 1
        time.sleep(random.uniform(0.0, 0.05))  # then leave it free a random while
    print(rounds, flush=True)
    """
)


# -- one lane: a lab, a churner on b1, and the trials run one after another in it ----------
@dataclass
class Lane:
    name: str
    lab: LabFixture
    env: dict[str, str]
    cwd: Path
    stop: Path
    churner: subprocess.Popen[str] | None = None
    home_needle: str = ""  # what a console's command line names (its uploaded image's directory or token)
    console_user: str | None = None
    image: Path | None = None

    def start_churner(self, user: str | None = None, hold: float = 0.6) -> None:
        env = user_env(self.lab.env, user)
        self.churner = subprocess.Popen([sys.executable, "-c", CHURNER, str(self.lab.base), str(self.stop), str(hold)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        **as_user(user))  # type: ignore[call-overload]

    def stop_churner(self) -> int:
        assert self.churner is not None
        self.stop.touch()
        out, err = self.churner.communicate(timeout=20)
        assert self.churner.returncode == 0, err
        return int(out)

    def own_tickets(self) -> list[str]:
        """Tickets (and cancel marks, half-made tickets) in the queue that are not the churner's."""
        queue = self.lab.base / ".mq" / "queue"
        names = sorted(p.name for p in queue.iterdir()) if queue.exists() else []
        pid = self.churner.pid if self.churner else -1
        return [n for n in names if not re.search(rf"-{pid}(?!\d)", n)]

    def locks(self) -> dict[str, str | None]:
        """The lane's locks and their keys, the churner's left out."""
        found = {b: key_of(self.lab, b) for b in self.lab.held()}
        # no key file: the churner's lock between its lock and key writes (every trial has a key)
        return {b: k for b, k in found.items() if k not in (CHURN_KEY, None)}

    def strays(self) -> list[str]:
        """Processes of this lane still running: agents (their command line names the lab),
        consoles and simulated boards (they name the job's images)."""
        churner = str(self.churner.pid) if self.churner else None
        pids = processes_naming(self.lab.base)
        if self.home_needle:
            pids += processes_naming(Path(self.home_needle))
        # not the churner, nor the cancel sentinel of its wait (its child, come and gone with each wait)
        pids = [p for p in pids if churner not in (str(p), *proc_stat(p)[1:2])]
        out = []
        for pid in sorted(set(pids)):
            with contextlib.suppress(OSError):
                out.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        return out


@dataclass
class Trial:
    lane: str
    kind: str
    delay: float
    key: str
    status: int | None = None
    stdout: str = ""
    stderr: str = ""
    problems: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    outcome: str = ""
    mq_ready: bool = True  # mq's own handlers were installed when the signal was sent
    elapsed: float = 0.0
    cleanup: float = 0.0


def handles_hup(pid: int) -> bool:
    """Whether ``pid`` catches SIGHUP: mq's first code (``mq.engine.core.early_signals``) catches INT, TERM
    and HUP at once; the Python interpreter starting up catches no SIGHUP (and SIGINT only
    to raise KeyboardInterrupt), so a signal before this is outside mq's reach."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE).group(1), 16)  # type: ignore[union-attr]
    return bool(caught & (1 << (signal.SIGHUP - 1)))


def run_trial(lane: Lane, kind: str, args: list[str], rng: random.Random, *, mode: str,
              settle: float, release: Callable[[Lane, str], None]) -> Trial:
    """One client, signalled after a random 0-2 s delay, then checked."""
    key = f"k{rng.randrange(10**9)}"
    trial = Trial(lane=lane.name, kind=kind, delay=rng.uniform(0.0, 2.0), key=key)
    before = lane.locks()
    argv = [*MQ, *[key if a == "@KEY" else a for a in args]]
    out, err = lane.cwd / f"{key}.out", lane.cwd / f"{key}.err"
    started = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(argv, env=lane.env, cwd=lane.cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr)
    try:
        proc.wait(timeout=trial.delay)
    except subprocess.TimeoutExpired:
        trial.mq_ready = handles_hup(proc.pid)
        for i, signum in enumerate(SIGNALS[kind]):
            if i:
                time.sleep(rng.uniform(0.0, 0.15))  # the second Ctrl+C, while the first is being handled
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
    try:
        trial.status = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        trial.status = proc.wait()
        trial.problems.append("did not end within 30 s of the signal")
    trial.elapsed = time.monotonic() - started
    trial.stdout, trial.stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    check_trial(lane, trial, before, mode=mode, settle=settle, release=release)
    return trial


def check_trial(lane: Lane, trial: Trial, before: dict[str, str | None], *, mode: str, settle: float,
                release: Callable[[Lane, str], None]) -> None:
    """What one ended client left: tickets, processes, uploads, locks; its exit and report."""
    key = trial.key
    signum = SIGNALS[trial.kind][0]
    reported = mode == "sem" and trial.stdout.strip() == "b1"

    # the lane's state: tickets and processes may take a moment to go on the host side
    ended = time.monotonic()
    deadline = ended + settle
    while (lane.own_tickets() or lane.strays()) and time.monotonic() < deadline:
        time.sleep(0.02)
    trial.cleanup = time.monotonic() - ended
    if tickets := lane.own_tickets():
        trial.leaks.append(f"tickets left: {tickets}")
    if strays := lane.strays():
        trial.leaks.append(f"stray processes: {strays}")
    if mode == "run" and lane.image is not None:
        home = Path(lane.home_needle)
        token = lane.image.name.split("-", 1)[1].rsplit(".", 1)[0] if lane.console_user else ""
        if left := jobs_left(home if not lane.console_user else Path(f"/tmp/mq-home-{lane.console_user}"), token):
            trial.leaks.append(f"uploaded jobs left: {left}")

    after = lane.locks()
    mine = [b for b, k in after.items() if k == key]
    if reported and mine:
        release(lane, key)
        after = lane.locks()
    if after != before:
        trial.leaks.append(f"locks before {before} != after {after} (reported: {reported})")

    if trial.status == 128 + signum:
        trial.outcome = f"signalled {128 + signum}" + (" after the grant" if reported else "")
    elif trial.status == 0:
        trial.outcome = "finished first"
        if mode == "sem" and not (reported and mine == ["b1"]):
            trial.problems.append(f"exit 0 but reported {trial.stdout!r} and held {mine}")
    elif not trial.mq_ready and (trial.status == -signum or
                                 (trial.status == 1 and trial.stderr.rstrip().endswith("KeyboardInterrupt")
                                  and "/mq/" not in trial.stderr)):
        # killed (or a KeyboardInterrupt traceback) while the interpreter was still starting, before mq
        trial.outcome = f"before mq's code: exit {trial.status}"
    else:
        trial.outcome = f"exit {trial.status}" + ("" if trial.mq_ready else " (before mq's handlers)")
        trial.problems.append(f"exit {trial.status}, expected {128 + signum} or 0")
    if mode == "sem" and reported and not mine:
        trial.problems.append("reported the grant on stdout, yet does not hold b1")
    if mode == "sem" and not reported and mine:
        trial.problems.append(f"holds {mine} without having reported it")


def run_lanes(lanes: list[Lane], trials_per_kind: int, args: list[str] | Callable[[Lane], list[str]], *, mode: str,
              settle: float, release: Callable[[Lane, str], None], seed: int) -> list[Trial]:
    """All kinds x ``trials_per_kind`` trials, shuffled and dealt to the lanes, run in parallel.
    ``args``: the command's arguments, or a function giving each lane its own."""
    rng = random.Random(seed)
    plan = [kind for kind in SIGNALS for _ in range(trials_per_kind)]
    rng.shuffle(plan)
    results: list[Trial] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        lane = lanes[index]
        lane_args = args(lane) if callable(args) else args
        lane_rng = random.Random(seed * 1000 + index)
        for kind in plan[index::len(lanes)]:
            trial = run_trial(lane, kind, lane_args, lane_rng, mode=mode, settle=settle, release=release)
            with lock:
                results.append(trial)

    with ThreadPoolExecutor(len(lanes)) as pool:
        for future in [pool.submit(work, i) for i in range(len(lanes))]:
            future.result()
    return results


def summarize(title: str, results: list[Trial]) -> str:
    by_kind: dict[str, Counter[str]] = {kind: Counter() for kind in SIGNALS}
    for trial in results:
        by_kind[trial.kind][trial.outcome] += 1
    leaks = [t for t in results if t.leaks]
    problems = [t for t in results if t.problems]
    elapsed = sorted(t.elapsed for t in results)
    cleanup = sorted(t.cleanup for t in results)
    lines = [f"== chaos {title}: {len(results)} trials, leaks {len(leaks)}, wrong exits/reports {len(problems)}"]
    for kind, counts in by_kind.items():
        outcomes = ", ".join(f"{o} {n}" for o, n in sorted(counts.items()))
        lines.append(f"   {kind:6} {sum(counts.values()):4}: {outcomes}")
    if elapsed:
        lines.append(f"   client run time s: median {statistics.median(elapsed):.2f}, max {elapsed[-1]:.2f}; "
                     f"host cleanup after exit s: median {statistics.median(cleanup):.3f}, max {cleanup[-1]:.3f}")
    for trial in (leaks + problems)[:10]:
        lines.append(f"   BAD {trial.lane} {trial.kind} delay {trial.delay:.3f} exit {trial.status}: "
                     f"{trial.leaks + trial.problems}\n      stdout {trial.stdout[-300:]!r}\n"
                     f"      stderr {trial.stderr[-600:]!r}")
    text = "\n".join(lines)
    print(text)
    return text


def check(title: str, results: list[Trial], expected: int) -> None:
    text = summarize(title, results)
    assert len(results) == expected
    assert not [t for t in results if t.leaks or t.problems], text
    # the random moments must really have caught clients before they finished
    assert sum(1 for t in results if t.outcome.startswith("signalled")) > expected // 4, text


def local_release(lane: Lane, key: str) -> None:
    proc = subprocess.run([*MQ, "sem", "-signal", "b1", "-k", key], env=lane.env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- case 11 (a): sem -wait on a contended board -------------------------------------------
SEM_ARGS = ["sem", "-wait", "b1", "-k", "@KEY"]


@pytest.fixture
def local_lanes(tmp_path: Path) -> Iterator[list[Lane]]:
    lanes = []
    for i in range(4):
        base = tmp_path / f"lane{i}"
        lab = make_lab(base / "lab")
        cwd = base / "cwd"
        cwd.mkdir()
        lanes.append(Lane(name=f"local{i}", lab=lab, env=lab.env, cwd=cwd, stop=base / "stop"))
    yield lanes
    for lane in lanes:
        lane.stop.touch()
        if lane.churner and lane.churner.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                lane.churner.communicate(timeout=10)
            lane.churner.kill()


@pytest.mark.slow
def test_signals_during_contended_sem_wait_locally(local_lanes: list[Lane]) -> None:
    for lane in local_lanes:
        lane.start_churner(hold=1.5)
    results = run_lanes(local_lanes, 40, SEM_ARGS, mode="sem", settle=3.0, release=local_release, seed=os.getpid())
    assert all(lane.stop_churner() > 0 for lane in local_lanes)
    check("sem -wait, local", results, 160)


@pytest.fixture
def ssh_lanes(ssh_lab: SshLab, tmp_path: Path) -> Iterator[list[Lane]]:
    """Three shared labs on the sshd's host, reached as mqalice; b1 churned by mqbob."""
    lanes = []
    for i in range(3):
        lab = make_lab(ssh_lab.sshd.root / f"chaos-{tmp_path.name}-{i}", shared=True)
        other = SshLab(lab=lab, sshd=ssh_lab.sshd, client_dir=ssh_lab.client_dir, known_hosts=ssh_lab.known_hosts)
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        stop = lab.base.parent / f"{lab.base.name}.stop"
        lanes.append(Lane(name=f"ssh{i}", lab=lab, env=other.env("mqalice"), cwd=cwd, stop=stop))
    yield lanes
    for lane in lanes:
        lane.stop.touch()
        if lane.churner and lane.churner.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                lane.churner.communicate(timeout=10)
            lane.churner.kill()
        SshLab(lab=lane.lab, sshd=ssh_lab.sshd, client_dir=ssh_lab.client_dir,
               known_hosts=ssh_lab.known_hosts).kill_host_side()
        shutil.rmtree(lane.lab.base, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lane.stop.unlink()


def ssh_release(lane: Lane, key: str) -> None:
    proc = subprocess.run([*MQ, "sem", "-signal", "b1", "-k", key], env=lane.env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_signals_during_contended_sem_wait_over_ssh(ssh_lanes: list[Lane]) -> None:
    for lane in ssh_lanes:
        lane.start_churner(user="mqbob", hold=1.5)
    results = run_lanes(ssh_lanes, 20, SEM_ARGS, mode="sem", settle=8.0, release=ssh_release, seed=os.getpid())
    assert all(lane.stop_churner() > 0 for lane in ssh_lanes)
    check("sem -wait, over SSH", results, 80)


# -- case 11 (b): mq run on a simulated board --------------------------------------------------
def run_args(image: Path) -> list[str]:
    return ["run", "-s", "b1", "-k", "@KEY", "-c", SUCCESS, "-f", str(image)]


def no_release(lane: Lane, key: str) -> None:
    raise AssertionError(f"a run left b1 held with key {key}")


@pytest.fixture
def run_lanes_local(tmp_path: Path) -> Iterator[list[Lane]]:
    """Four local run labs, each with its own HOME (its jobs and consoles told apart by it)."""
    lanes = []
    for i in range(4):
        base = tmp_path / f"run{i}"
        home, cwd = base / "home", base / "cwd"
        home.mkdir(parents=True)
        cwd.mkdir()
        rl = prepare(make_lab(base / "lab"), base / "marks", home, cwd)
        image = rl.images / "quick.img"
        image.write_text("\n".join(QUICK_IMG) + "\n")
        env = {**rl.lab.env, "HOME": str(home)}
        lanes.append(Lane(name=f"run{i}", lab=rl.lab, env=env, cwd=cwd, stop=base / "stop", home_needle=f"{home}/",
                          image=image))
    yield lanes
    for lane in lanes:
        lane.stop.touch()
        if lane.churner and lane.churner.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                lane.churner.communicate(timeout=10)
            lane.churner.kill()
        for pid in processes_naming(lane.lab.base) + processes_naming(Path(lane.home_needle)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_signals_during_run_locally(run_lanes_local: list[Lane]) -> None:
    for lane in run_lanes_local:
        lane.start_churner(hold=0.4)
    results = run_lanes(run_lanes_local, 30, image_args, mode="run", settle=3.0, release=no_release,
                        seed=os.getpid())
    assert all(lane.stop_churner() > 0 for lane in run_lanes_local)
    check("run, local", results, 120)


def image_args(lane: Lane) -> list[str]:
    """``mq run`` arguments booting the lane's own image."""
    assert lane.image is not None
    return run_args(lane.image)


@pytest.mark.slow
def test_signals_during_run_over_ssh(ssh_rl: SshRunLab) -> None:
    rl = ssh_rl.rl
    image = rl.images / f"quick-{rl.token}.img"
    image.write_text("\n".join(QUICK_IMG) + "\n")
    lane = Lane(name="sshrun", lab=rl.lab, env=ssh_rl.env(), cwd=rl.cwd, stop=rl.lab.base.parent / f"{rl.token}.stop",
                home_needle=rl.token, console_user=ssh_rl.user, image=image)
    lane.start_churner(user="mqbob", hold=0.4)
    try:
        results = run_lanes([lane], 5, image_args, mode="run", settle=8.0, release=no_release, seed=os.getpid())
    finally:
        rounds = lane.stop_churner()
        with contextlib.suppress(FileNotFoundError):
            lane.stop.unlink()
    assert rounds > 0
    check("run, over SSH", results, 20)


# -- case 25: several hundred SSH sessions at once against sshd's default limits -------------
@pytest.fixture
def default_sshd(sshd_server: Sshd) -> Iterator[Sshd]:
    """An sshd with OpenSSH's own MaxStartups and MaxSessions (tests/sshd.py raises them)."""
    server = start_sshd(Path("/tmp") / f"mq-default-{os.getpid()}", sshd_server.users, keys_from=sshd_server,
                        options=("MaxStartups 10:30:100", "MaxSessions 10"))
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


CLIENTS = 200


@pytest.mark.slow
def test_hundreds_of_sessions_against_default_maxstartups(ssh_lab: SshLab, default_sshd: Sshd) -> None:
    ssh_lab.known_hosts.write_text(default_sshd.known_hosts_line() + "\n")
    cfg = client_config(default_sshd, "mqalice", ssh_lab.client_dir / "cfg_default", known_hosts=ssh_lab.known_hosts)
    env = ssh_lab.env("mqalice", MQ_SSH_CONFIG=str(cfg))
    started = time.monotonic()
    clients = [subprocess.Popen([*MQ, "sem", "-info", "b1"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(CLIENTS)]
    launched = time.monotonic() - started
    results: list[tuple[int | None, float, str, str]] = [(None, 0.0, "", "")] * CLIENTS
    lock = threading.Lock()

    def reap(i: int) -> None:
        proc = clients[i]
        try:
            out, err = proc.communicate(timeout=120)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            status = None  # hung
        with lock:
            results[i] = (status, time.monotonic() - started, out, err)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(reap, range(CLIENTS)))
    ok = [r for r in results if r[0] == 0]
    unable = [r for r in results if r[0] == 9]
    hung = [r for r in results if r[0] is None]
    other = [r for r in results if r[0] not in (0, 9, None)]
    reasons = Counter(r[3].splitlines()[1] if len(r[3].splitlines()) > 1 else r[3] for r in unable)
    times = sorted(r[1] for r in results)
    q = statistics.quantiles(times, n=20)
    summary = (f"== chaos case 25: {CLIENTS} x `mq sem -info b1` over SSH at once (launched in {launched:.1f} s), "
               f"sshd MaxStartups 10:30:100: ok {len(ok)}, unable to ssh (exit 9) {len(unable)}, "
               f"hung {len(hung)}, other {len(other)}\n"
               f"   time to end s: min {times[0]:.2f}, median {statistics.median(times):.2f}, "
               f"p95 {q[18]:.2f}, max {times[-1]:.2f}; accepted logins {default_sshd.accepted()}\n"
               f"   reasons: {dict(reasons)}\n"
               f"   other: {[(r[0], r[3][-300:]) for r in other[:5]]}")
    print(summary)
    assert hung == [] and other == [], summary
    assert all("b1" in r[2] for r in ok), summary
    for status, _, out, err in unable:
        lines = err.splitlines()
        assert lines and lines[0] == "mq: Unable to ssh to labhost", (status, out, err)
        assert len(lines) == 2 and lines[1].strip(), (status, out, err)
    assert ok, summary  # the limit throttles, it does not refuse everyone
    # nothing left on the host
    deadline = time.monotonic() + 10
    while processes_naming(ssh_lab.lab.base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(ssh_lab.lab.base) == []
