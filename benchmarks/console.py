#!/usr/bin/env python3
"""Hand-run console throughput and first-line latency figures for ``mq run``.

Not part of CI. Run as root from the repository (mq installed, editable is fine)::

    python3 benchmarks/console.py                                  # about 2 minutes
    python3 benchmarks/console.py --mb 50 --runs 3 --latency-runs 6   # quicker

Like ``ssh_latency.py`` it starts its own OpenSSH sshd on 127.0.0.1
(``tests/sshd.py``, test users of ``tests/conftest.py``: mqalice logs in) and
a shared lab directory whose board b1 boots the simulator
(``boot = "{python} -m mq.engine.host.simboard {system} {files}"``). The big image
is ``repeat N <80-character line>``, ``print DONE-MARKER``, ``pass``: about
``--mb`` MB of console (MB = 10^6 bytes). It prints, in one run:

1. console throughput over SSH on loopback: ``mq run -s b1 -f IMG -c DONE-MARKER
   > /dev/null`` (paramiko, the default transport; also with ``-l LOGFILE``;
   the OpenSSH transport for reference) against, in the same run,
   ``ssh -F CFG labhost cat FILE > /dev/null`` of a file holding exactly the
   same console bytes, and the simulator run directly through ssh
   (``ssh labhost env PYTHONPATH=src python3 -m mq.engine.host.simboard b1 IMG``),
   which separates the simulator's cost from the transport's, and ``mq run`` on a
   board whose boot command is ``cat FILE`` (mq's cost on the same bytes as
   ``ssh cat``, without the simulator's). Medians over
   ``--runs`` runs, interleaved round-robin. Each command also runs with a tiny
   image/file ("fixed": start-up, connect, boot log, clean-up), so the table
   shows end-to-end MB/s and the streaming rate after fixed costs, plus the
   CPU seconds spent on the client (the command and its children) and on the
   host (everything under the benchmark's sshd: sshd sessions, agent,
   simulator, cat), from rusage and by sampling /proc under the sshd, and how
   busy the machine was with other processes meanwhile.
2. the same with the local transport (``MQ_HOST=local``) against local ``cat``
   (no transport at all: its ratio only shows scale) and the simulator run
   directly (the meaningful ratio here).
3. the time from spawning ``mq run`` to the first console line on its stdout
   (a pipe read here), local and over SSH, next to the wall time of
   ``mq sem -info b1`` and of the simulator's first line when run directly.
4. where the time goes (when a target is missed, or with ``--profile``):
   the protocol with no SSH at all (agent in a child process on pipes, the
   client's ``AgentClient`` in this process, both under cProfile), and the
   client of one real ``mq run`` over SSH under cProfile in every thread
   (CPU time per thread: ``time.thread_time``), and per process kind (client
   mq, ssh, sshd, agent, simulator) the CPU time and the time spent runnable
   but waiting for a CPU (``/proc/PID/task/TID/schedstat``).

Targets: ``mq run`` over SSH (paramiko, to /dev/null) >= 10 MB/s and within 2x
of the plain ``ssh cat`` wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pstats
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _prereqs import mq_source_path, ssh_bench_ready

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SRC = str(REPO / "src")
SRC_PATH = mq_source_path()  # "" when installed; else children get it on PYTHONPATH

PYTHON = sys.executable
HOST_PYTHON = "python3"  # what the host agent (and so the board's {python}) is for the test user
USER = "mqalice"
BOARD = "b1"
ALIAS = "labhost"
MARKER = "DONE-MARKER"
LINE = ("[    1.234567] console throughput test line " + "0123456789" * 8)[:80]
TARGET_MBPS = 10.0
TARGET_RATIO = 2.0
CAT_BOARD = "catb"  # a board whose console is ``cat`` of the console file: mq's cost without the simulator's
LAB_TOML = """[systems.{board}]
arch = "arm"
boot = "{{python}} -m mq.engine.host.simboard {{system}} {{files}}"

[systems.{cat}-big]
arch = "arm"
boot = "cat {big}"

[systems.{cat}-small]
arch = "arm"
boot = "cat {small}"
"""  # str.format: board, cat, big, small
MB = 1e6

# ``mq`` with cProfile in every thread, timed by each thread's own CPU clock:
# argv = output prefix, then mq's arguments. Writes PREFIX.<n>.<thread name>.prof per thread.
CLIENT_PROBE = """
import cProfile, sys, threading, time
PREFIX, ARGS = sys.argv[1], sys.argv[2:]
profiles = []
inner0 = threading.Thread._bootstrap_inner
def inner(self):
    prof = cProfile.Profile(time.thread_time)
    profiles.append((f"{self.name}({type(self).__name__})", prof))
    prof.enable()
    try:
        inner0(self)
    finally:
        prof.disable()
threading.Thread._bootstrap_inner = inner  # also catches Thread subclasses overriding run (paramiko's Transport)
from mq.cli.main import main
prof = cProfile.Profile(time.thread_time)
prof.enable()
try:
    code = main(ARGS)
finally:
    prof.disable()
    prof.dump_stats(f"{PREFIX}.0.MainThread.prof")
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(2)
    time.sleep(0.2)  # daemon threads (keepalive pinger) notice the close
    for index, (name, p) in enumerate(list(profiles), 1):
        p.dump_stats(f"{PREFIX}.{index}.{name}.prof")
sys.exit(code)
"""

# The host agent (``mq.engine.host.agent``) on this machine's pipes, optionally under cProfile.
# argv = profile output path or "", then the agent's arguments (BASE).
AGENT_PROBE = """
import cProfile, sys
OUT = sys.argv[1]
from mq.engine.host import agent
prof = cProfile.Profile() if OUT else None
if prof:
    prof.enable()
try:
    code = agent.main(sys.argv[2:])
finally:
    if prof:
        prof.disable()
        prof.dump_stats(OUT)
sys.exit(code)
"""


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
ROLES = ("sshd", "agent", "board", "other")  # host processes: sshd sessions, mq agent, simulator or cat, rest


@dataclass
class Sample:
    wall: float
    client_cpu: float
    host_cpu: float
    host_roles: dict[str, float] = field(default_factory=dict)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_pids(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a thread's children are listed under that thread only)."""
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return found


class HostSampler:
    """CPU seconds of everything under the sshd listener (sessions, agent, simulator, cat) during a run.

    The listener's cutime/cstime do not include a session's processes (checked: a 0.7 s CPU loop run
    through ssh did not show up there), so every descendant's own utime+stime is sampled every
    ``INTERVAL`` s instead (the last ``INTERVAL`` of each process is missed: negligible for runs of seconds).
    """

    INTERVAL = 0.02

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[tuple[int, str], float] = {}
        self.roles: dict[tuple[int, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HostSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> float:
        return sum(self.seen.values())

    def by_role(self) -> dict[str, float]:
        split = dict.fromkeys(ROLES, 0.0)
        for key, cpu in self.seen.items():
            split[self.roles[key]] += cpu
        return split

    @staticmethod
    def role(pid: int) -> str | None:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not argv[0]:  # a zombie
            return None
        text = b" ".join(argv)
        if b"mq.engine.host.simboard" in text or argv[0] in (b"cat", b"/usr/bin/cat", b"/bin/cat"):
            return "board"
        if b"mq.engine.host.agent" in text:
            return "agent"
        return "sshd" if argv[0].startswith(b"sshd") or argv[0].endswith(b"/sshd") else "other"

    def _loop(self) -> None:
        if self.pid <= 0:  # a local command: nothing to sample
            return
        while not self._stop.wait(self.INTERVAL):
            self.sample()
        self.sample()

    def sample(self) -> None:
        todo = [self.pid]
        tick = os.sysconf("SC_CLK_TCK")
        while todo:
            pid = todo.pop()
            try:
                children = child_pids(pid)
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            todo.extend(children)
            if pid == self.pid:
                continue
            fields = text[text.rindex(")") + 2:].split()
            # own utime + stime; keyed by pid and start time (pids are reused)
            key = (pid, fields[19])
            self.seen[key] = (int(fields[11]) + int(fields[12])) / tick
            # again each time: a fork shows its parent's cmdline until it execs
            self.roles[key] = self.role(pid) or self.roles.get(key, "other")


def timed(argv: list[str], env: dict[str, str], sshd_pid: int | None) -> Sample:
    """Run a command with stdout on /dev/null; wall, client CPU and host CPU."""
    cpu0 = own_cpu()
    with HostSampler(sshd_pid or -1) as host:
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=600)
        wall = time.perf_counter() - start
    client = own_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {proc.returncode}\n{proc.stderr.decode(errors='replace')}")
    return Sample(wall, client, host.cpu, host.by_role()) if sshd_pid else Sample(wall, client, 0.0)


def first_line(argv: list[str], env: dict[str, str], expect: bytes) -> tuple[float, float]:
    """(spawn to the first complete line on stdout, spawn to exit), reading stdout through a pipe."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = b""
    first = 0.0
    while chunk := os.read(proc.stdout.fileno(), 65536):
        if not first:
            seen += chunk
            if b"\n" in seen:
                first = time.perf_counter() - start
                if not seen.startswith(expect):
                    proc.kill()
                    raise RuntimeError(f"{shlex.join(argv)}: first line {seen.splitlines()[0]!r}")
    _, err = proc.communicate(timeout=60)
    total = time.perf_counter() - start
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{shlex.join(argv)}: exit {proc.returncode}\n{err.decode(errors='replace')}")
    return first, total


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """The loopback sshd, lab directories, images and environments of one benchmark run."""

    args: argparse.Namespace
    root: Path
    client_dir: Path
    sshd: Any
    cfg: Path
    ssh_lab: Path
    local_lab: Path
    base_env: dict[str, str]
    openssh_toml: Path
    images: dict[str, Path] = field(default_factory=dict)  # big/small image scripts
    data: dict[str, Path] = field(default_factory=dict)  # big/small console bytes (for cat)

    def nbytes(self, size: str) -> int:
        return self.data[size].stat().st_size

    def ssh_env(self, openssh: bool = False) -> dict[str, str]:
        env = dict(self.base_env, MQ_HOST=ALIAS, MQ_BASE=str(self.ssh_lab), MQ_SSH_CONFIG=str(self.cfg))
        if openssh:
            env["MQ_CONFIG"] = str(self.openssh_toml)
        return env

    def local_env(self) -> dict[str, str]:
        return dict(self.base_env, MQ_HOST="local", MQ_BASE=str(self.local_lab))

    def ssh(self, command: str) -> list[str]:
        return ["ssh", "-F", str(self.cfg), ALIAS, command]

    def mq_run(self, size: str, log: str | None = None, board: str = BOARD) -> list[str]:
        return [PYTHON, "-m", "mq", "run", "-s", board, "-f", str(self.images[size]), "-c", MARKER,
                *(["-l", str(self.client_dir / log)] if log else [])]

    def mq_cat(self, size: str) -> list[str]:
        """``mq run`` on the cat board (the tiny image is uploaded and ignored; cat sends the console file)."""
        return [*self.mq_run("small", board=f"{CAT_BOARD}-{size}")]

    def ssh_simboard(self, size: str) -> list[str]:
        return self.ssh(shlex.join(["env", f"PYTHONPATH={SRC}", HOST_PYTHON, "-m", "mq.engine.host.simboard", BOARD,
                                    str(self.images[size])]))

    def local_simboard(self, size: str) -> list[str]:
        return [PYTHON, "-m", "mq.engine.host.simboard", BOARD, str(self.images[size])]


@dataclass
class Case:
    """One command timed with the big and the tiny image/file."""

    name: str
    big: list[str]
    small: list[str]
    env: dict[str, str]
    ssh: bool
    big_samples: list[Sample] = field(default_factory=list)
    small_samples: list[Sample] = field(default_factory=list)

    def wall(self) -> float:
        return med([s.wall for s in self.big_samples])

    def fixed(self) -> float:
        return med([s.wall for s in self.small_samples])


def make_images(bench: Bench) -> None:
    """The image scripts, and the exact console bytes they produce (the files ``cat`` sends)."""
    lines = max(1, round(bench.args.mb * MB / (len(LINE) + 1)))
    work = bench.root / "images"
    work.mkdir(mode=0o755)
    for size, script in (("big", f"repeat {lines} {LINE}\nprint {MARKER}\npass\n"),
                         ("small", f"print {MARKER}\npass\n")):
        image = work / f"console-{size}.img"
        image.write_text(script)
        image.chmod(0o644)
        bench.images[size] = image
        data = work / f"console-{size}.txt"
        with open(data, "wb") as handle:
            subprocess.run(bench.local_simboard(size), stdout=handle, env=bench.base_env, check=True)
        data.chmod(0o644)
        bench.data[size] = data


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat, guest time excluded)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_cases(bench: Bench, cases: list[Case], runs: int) -> str:
    """One warm-up round (small only), then ``runs`` round-robin rounds of big + small; a CPU load note."""
    pid = bench.sshd.proc.pid
    for case in cases:
        timed(case.small, case.env, pid if case.ssh else None)
    busy0, self0, start = machine_busy(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(runs):
        for case in cases:
            sshd = pid if case.ssh else None
            case.big_samples.append(timed(case.big, case.env, sshd))
            case.small_samples.append(timed(case.small, case.env, sshd))
    wall, busy, self1 = time.perf_counter() - start, machine_busy() - busy0, resource.getrusage(resource.RUSAGE_SELF)
    ours = sum(s.client_cpu + s.host_cpu for c in cases for s in [*c.big_samples, *c.small_samples])
    ours += self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
    share = 100 / wall / (os.cpu_count() or 1)
    return (f"  machine CPU busy while measuring: {busy * share:.0f}% of {os.cpu_count()} CPUs; measured commands and "
            f"this benchmark {ours * share:.0f}%, other processes ~{max(0.0, busy - ours) * share:.0f}%")


def print_cases(bench: Bench, cases: list[Case], bases: tuple[Case, Case]) -> None:
    """The table; wall ratios against ``bases`` (the plain byte pipe, and the simulator alone)."""
    nbytes = bench.nbytes("big")
    print(f"  {'command':<44} {'wall s':>7} {'MB/s':>7} {'x base':>7} {'x sim':>7} {'fixed s':>8} {'stream':>7} "
          f"{'cores':>6}")
    print(f"  {'':<44} {'':>7} {'':>7} {'':>7} {'':>7} {'':>8} {'MB/s':>7} {'busy':>6}")
    for case in cases:
        wall, fixed = case.wall(), case.fixed()
        cpu = med([s.client_cpu + s.host_cpu for s in case.big_samples])
        stream = nbytes / MB / (wall - fixed) if wall > fixed else float("nan")
        print(f"  {case.name:<44} {wall:7.2f} {nbytes / MB / wall:7.1f} {wall / bases[0].wall():6.2f}x "
              f"{wall / bases[1].wall():6.2f}x {fixed:8.2f} {stream:7.1f} {cpu / wall:6.2f}")
    spread = ", ".join(f"{min(s.wall for s in c.big_samples):.2f}-{max(s.wall for s in c.big_samples):.2f}"
                       for c in cases)
    print(f"  wall min-max s, in table order: {spread}")
    ssh = any(s.host_roles for c in cases for s in c.big_samples)
    roles = ROLES if ssh else ()
    print(f"  {'CPU s per run (medians)':<44} {'client':>7} " + "".join(f"{r:>7}" for r in roles)
          + f" {'total':>7} {'-tiny':>7}")
    for case in cases:
        split = [med([s.host_roles.get(r, 0.0) for s in case.big_samples]) for r in roles]
        total = med([s.client_cpu + s.host_cpu for s in case.big_samples])
        tiny = med([s.client_cpu + s.host_cpu for s in case.small_samples])
        print(f"    {case.name:<42} {med([s.client_cpu for s in case.big_samples]):7.2f} "
              + "".join(f"{v:7.2f}" for v in split) + f" {total:7.2f} {total - tiny:7.2f}")
    print("  (client = the command and its children (mq; ssh; the simulator when local); "
          + ("host = processes under the sshd: its sessions, the mq agent, the board (simulator or cat), other; "
             if ssh else "") + "-tiny = total minus the tiny run's: the CPU cost of streaming)")


def section_ssh(bench: Bench) -> dict[str, Case]:
    env, env_o = bench.ssh_env(), bench.ssh_env(openssh=True)
    cases = {
        "cat": Case("ssh labhost cat FILE (baseline)", bench.ssh(f"cat {bench.data['big']}"),
                    bench.ssh(f"cat {bench.data['small']}"), bench.base_env, ssh=True),
        "sim": Case("ssh labhost python3 -m mq.engine.host.simboard", bench.ssh_simboard("big"),
                    bench.ssh_simboard("small"), bench.base_env, ssh=True),
        "mq": Case("mq run > /dev/null (paramiko)", bench.mq_run("big"), bench.mq_run("small"), env, ssh=True),
        "mq_log": Case("mq run -l LOG > /dev/null (paramiko)", bench.mq_run("big", "ssh.log"),
                       bench.mq_run("small", "ssh-small.log"), env, ssh=True),
        "mq_openssh": Case("mq run > /dev/null (openssh transport)", bench.mq_run("big"), bench.mq_run("small"),
                           env_o, ssh=True),
        "mq_cat": Case("mq run, board `cat FILE` (paramiko)", bench.mq_cat("big"), bench.mq_cat("small"), env,
                       ssh=True),
    }
    nbytes, lines = bench.nbytes("big"), bench.args.mb
    print(f"\n1. Console throughput over SSH on loopback: {nbytes / MB:.1f} MB of console per run "
          f"(~{lines:g} MB asked; {len(LINE) + 1}-byte lines), {bench.args.runs} runs round-robin, medians")
    print("   fixed = the same command with a tiny image/file (start-up, connect, boot log, clean-up);"
          "\n   x base, x sim = wall against the first and the second line (plain ssh cat; the simulator through bare"
          "\n   ssh); stream MB/s = bytes / (wall - fixed); cores busy = (client + host CPU) / wall; "
          f"{os.cpu_count()} CPUs here")
    load = run_cases(bench, list(cases.values()), bench.args.runs)
    print_cases(bench, list(cases.values()), (cases["cat"], cases["sim"]))
    print(load)
    log = bench.client_dir / "ssh.log"
    print(f"  -l LOGFILE holds {log.stat().st_size} bytes (console file {nbytes} bytes)")
    return cases


def section_local(bench: Bench) -> dict[str, Case]:
    env = bench.local_env()
    cases = {
        "cat": Case("cat FILE (baseline)", ["cat", str(bench.data["big"])], ["cat", str(bench.data["small"])],
                    bench.base_env, ssh=False),
        "sim": Case("python -m mq.engine.host.simboard", bench.local_simboard("big"), bench.local_simboard("small"),
                    bench.base_env, ssh=False),
        "mq": Case("mq run > /dev/null (MQ_HOST=local)", bench.mq_run("big"), bench.mq_run("small"), env,
                   ssh=False),
        "mq_log": Case("mq run -l LOG > /dev/null (MQ_HOST=local)", bench.mq_run("big", "local.log"),
                       bench.mq_run("small", "local-small.log"), env, ssh=False),
        "mq_cat": Case("mq run, board `cat FILE` (MQ_HOST=local)", bench.mq_cat("big"), bench.mq_cat("small"), env,
                       ssh=False),
    }
    print(f"\n2. The same with the local transport (engine in the mq process), {bench.args.runs} runs, medians"
          "\n   (x base against local cat only shows scale, there is no transport at all; x sim is the comparison)")
    load = run_cases(bench, list(cases.values()), bench.args.runs)
    print_cases(bench, list(cases.values()), (cases["cat"], cases["sim"]))
    print(load)
    return cases


def section_latency(bench: Bench) -> None:
    runs = bench.args.latency_runs
    boot = b"U-Boot SPL"
    env_l, env_p, env_o = bench.local_env(), bench.ssh_env(), bench.ssh_env(openssh=True)
    sem = [PYTHON, "-m", "mq", "sem", "-info", BOARD]
    # (name, argv, env, expected first line or None: plain wall time of a command)
    rows: list[tuple[str, list[str], dict[str, str], bytes | None]] = [
        ("local: mq run (tiny image)", bench.mq_run("small"), env_l, boot),
        ("local: python -m mq.engine.host.simboard", bench.local_simboard("small"), bench.base_env, boot),
        ("local: mq sem -info b1", sem, env_l, None),
        ("ssh: mq run (tiny image, paramiko)", bench.mq_run("small"), env_p, boot),
        ("ssh: mq run (tiny image, openssh)", bench.mq_run("small"), env_o, boot),
        ("ssh: ssh labhost ... simboard", bench.ssh_simboard("small"), bench.base_env, boot),
        ("ssh: mq sem -info b1 (paramiko)", sem, env_p, None),
        ("ssh: mq sem -info b1 (openssh)", sem, env_o, None),
        ("ssh: ssh labhost true", bench.ssh("true"), bench.base_env, None),
    ]
    firsts: dict[str, list[float]] = {name: [] for name, *_ in rows}
    totals: dict[str, list[float]] = {name: [] for name, *_ in rows}
    for index in range(runs + 1):  # round-robin; the first round warms up
        for name, argv, env, expect in rows:
            if expect is None:
                first, total = float("nan"), timed(argv, env, None).wall
            else:
                first, total = first_line(argv, env, expect)
            if index:
                firsts[name].append(first)
                totals[name].append(total)
    print(f"\n3. Spawn to the first console line on stdout (a pipe read by this benchmark), {runs} runs "
          "round-robin, ms")
    print(f"  {'command':<40} {'first line: median':>18} {'min':>7} {'max':>7} {'whole run':>10}")
    for name, *_ in rows:
        whole = f"{med(totals[name]) * 1000:10.0f}"
        if not any(math.isnan(v) for v in firsts[name]):  # a console command
            f = firsts[name]
            print(f"  {name:<40} {med(f) * 1000:18.0f} {min(f) * 1000:7.0f} {max(f) * 1000:7.0f} {whole}")
        else:
            print(f"  {name:<40} {'-':>18} {'':>7} {'':>7} {whole}")


# --------------------------------------------------------------------------------------------
# section 4: where the time goes
# --------------------------------------------------------------------------------------------
def top_rows(stats: pstats.Stats, count: int, indent: str = "    ") -> None:
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values()) or 1.0
    print(f"{indent}{'own s':>7} {'%':>5} {'calls':>9}  function")
    for (path, line, func), (_, calls, own, _, _) in sorted(table.items(), key=lambda kv: -kv[1][2])[:count]:
        where = func if path == "~" else f"{'/'.join(Path(path).parts[-2:])}:{line}({func})"
        print(f"{indent}{own:7.3f} {100 * own / total:5.1f} {calls:>9}  {where[:100]}")


def pipe_job(bench: Bench, profile_dir: Path | None) -> tuple[float, pstats.Stats | None]:
    """The real protocol with no SSH: agent child on pipes, ``AgentClient`` here; (wall, client profile)."""
    import cProfile

    from mq.engine.lockdir.boardlock import NO_KEY
    from mq.transport.base import AgentClient
    from mq.transport.pipe import PipeStream

    out = str(profile_dir / "agent.prof") if profile_dir else ""
    start = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-c", AGENT_PROBE, out, str(bench.local_lab)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench.base_env)
    client = AgentClient(PipeStream(proc), "pipe", 15.0)
    prof = cProfile.Profile() if profile_dir else None
    with open(os.devnull, "wb") as sink:

        def on_event(event: str, data: bytes, _fields: dict[str, Any]) -> None:
            if event == "console":  # as ConsoleSink does
                sink.write(data)
                sink.flush()

        try:
            client.start()
            path = client.upload(str(bench.images["big"]), bench.images["big"].name)
            spec = {"target": BOARD, "boards": [BOARD], "key": NO_KEY, "mode": "run", "completion": MARKER,
                    "error": None, "timeout": -1.0, "budget": None, "interactive": False, "files": [path],
                    "dtb": "", "bitstream": "", "linux": False}
            if prof:
                prof.enable()
            result = client.run_job(spec, on_event, None)
            if prof:
                prof.disable()
        finally:
            client.close()
            proc.wait(timeout=30)
    wall = time.perf_counter() - start
    if result.get("outcome") != "completed":
        raise RuntimeError(f"pipe job: {result}")
    return wall, pstats.Stats(prof) if prof else None


def client_profile(bench: Bench, env: dict[str, str], name: str) -> None:
    """One ``mq run`` (big image) with cProfile in every client thread; per-thread CPU and the top functions."""
    prefix = bench.client_dir / f"prof-{name}"
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, "-c", CLIENT_PROBE, str(prefix), *bench.mq_run("big")[3:]], env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"profiled mq run: exit {proc.returncode}\n{proc.stderr.decode(errors='replace')}")
    files = sorted(prefix.parent.glob(prefix.name + ".*.prof"), key=lambda p: int(p.name.split(".")[1]))
    merged: pstats.Stats | None = None
    parts = []
    for path in files:
        stats = pstats.Stats(str(path))
        parts.append(f"{path.name.split('.', 2)[2][:-5]} {stats.total_tt:.2f}")  # type: ignore[attr-defined]
        if merged is None:
            merged = stats
        else:
            merged.add(stats)
    total = merged.total_tt if merged else 0.0  # type: ignore[attr-defined]
    print(f"   mq run over SSH ({name}) under cProfile: wall {wall:.2f} s (profiling slows it), client CPU "
          f"{total:.2f} s by thread: {', '.join(parts)}")
    if merged is not None:
        top_rows(merged, bench.args.top)


def sched_run(argv: list[str], env: dict[str, str], sshd_pid: int) -> tuple[float, dict[str, list[float]]]:
    """One run; per role: [CPU s, run-queue wait s] from every thread's /proc/.../schedstat, sampled."""
    tasks: dict[tuple[int, str], tuple[str, float, float]] = {}  # (tid, start) -> role, cpu, wait

    def visit(root: int, client: bool) -> None:
        todo = [root]
        while todo:
            pid = todo.pop()
            try:
                todo.extend(child_pids(pid))
                role = HostSampler.role(pid)  # None for a zombie: keep what it was
                if client and role is not None:
                    argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                    kind = "ssh" if argv0.endswith(b"ssh") else "board" if role == "board" else "mq"
                    role = f"client {kind}"
                for tid in os.listdir(f"/proc/{pid}/task"):
                    cpu, wait, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                    start = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[19]
                    old = tasks.get((int(tid), start))
                    tasks[(int(tid), start)] = (role or (old[0] if old else "other"), int(cpu) / 1e9, int(wait) / 1e9)
            except (OSError, ValueError):
                continue

    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        visit(proc.pid, client=True)
        visit(sshd_pid, client=False)
        time.sleep(0.005)
    wall = time.perf_counter() - start
    roles: dict[str, list[float]] = {}
    for (tid, _), (role, cpu, wait) in tasks.items():
        if tid == sshd_pid:
            continue
        entry = roles.setdefault(role, [0.0, 0.0])
        entry[0] += cpu
        entry[1] += wait
    return wall, roles


def section_sched(bench: Bench) -> None:
    """Per process kind: CPU time and time spent runnable but waiting for a CPU, one run each."""
    pid = bench.sshd.proc.pid
    print(" c) CPU and run-queue wait (runnable, no CPU free) per process kind, one run each, sampled every 5 ms"
          "\n    from /proc/PID/task/TID/schedstat (the last few ms of each thread are missed)")
    for name, argv, env in (("ssh labhost cat FILE", bench.ssh(f"cat {bench.data['big']}"), bench.base_env),
                            ("ssh labhost ... simboard", bench.ssh_simboard("big"), bench.base_env),
                            ("mq run (paramiko)", bench.mq_run("big"), bench.ssh_env()),
                            ("mq run (openssh)", bench.mq_run("big"), bench.ssh_env(openssh=True))):
        wall, roles = sched_run(argv, env, pid)
        cpu, wait = sum(v[0] for v in roles.values()), sum(v[1] for v in roles.values())
        parts = ", ".join(f"{role} {v[0]:.2f}/{v[1]:.2f}" for role, v in sorted(roles.items(), key=lambda kv: -kv[1][0])
                          if v[0] >= 0.005)
        print(f"    {name:<26} wall {wall:5.2f} s, CPU {cpu:5.2f} s, waiting for a CPU {wait:5.2f} s; "
              f"CPU/wait s: {parts}")


def section_profile(bench: Bench) -> None:
    print("\n4. Where the time goes")
    runs = bench.args.runs
    walls = [pipe_job(bench, None)[0] for _ in range(runs)]
    nbytes = bench.nbytes("big")
    print(f" a) the mq protocol with no SSH (agent on pipes, AgentClient in this process, console to /dev/null):"
          f"\n    {med(walls):.2f} s median of {runs} = {nbytes / MB / med(walls):.1f} MB/s "
          "(agent start-up and boot log included)")
    profile_dir = Path(tempfile.mkdtemp(prefix="prof-", dir=bench.client_dir))
    wall, client_stats = pipe_job(bench, profile_dir)
    agent_stats = pstats.Stats(str(profile_dir / "agent.prof"))
    print(f"    one run with both ends under cProfile: {wall:.2f} s; agent (host side, wall-clock profile; "
          f"select() = idle) {agent_stats.total_tt:.2f} s:")  # type: ignore[attr-defined]
    top_rows(agent_stats, bench.args.top)
    if client_stats is not None:
        print(f"    client (AgentClient.run_job + sink, wall-clock profile) "
              f"{client_stats.total_tt:.2f} s:")  # type: ignore[attr-defined]
        top_rows(client_stats, bench.args.top)
    print(" b) client CPU of one real mq run over SSH, every thread under cProfile (time.thread_time)")
    client_profile(bench, bench.ssh_env(), "paramiko")
    client_profile(bench, bench.ssh_env(openssh=True), "openssh")
    section_sched(bench)


# --------------------------------------------------------------------------------------------
def verdict(ssh_cases: dict[str, Case], nbytes: int) -> bool:
    cat, mq_case = ssh_cases["cat"], ssh_cases["mq"]
    rate = nbytes / MB / mq_case.wall()
    ratio = mq_case.wall() / cat.wall()
    ok_rate, ok_ratio = rate >= TARGET_MBPS, ratio <= TARGET_RATIO
    print("\nTargets (mq run over SSH, paramiko, > /dev/null)")
    print(f"  throughput {rate:.1f} MB/s, target >= {TARGET_MBPS:g} MB/s: {'meets' if ok_rate else 'MISSES'}")
    print(f"  wall {ratio:.2f}x plain ssh cat, target <= {TARGET_RATIO:g}x: {'meets' if ok_ratio else 'MISSES'}")
    sim = ssh_cases["sim"]
    print(f"  (the simulator alone through bare ssh: {nbytes / MB / sim.wall():.1f} MB/s, "
          f"{sim.wall() / cat.wall():.2f}x ssh cat; mq run against it: {mq_case.wall() / sim.wall():.2f}x;\n   -l LOG: "
          f"{nbytes / MB / ssh_cases['mq_log'].wall():.1f} MB/s; openssh transport: "
          f"{nbytes / MB / ssh_cases['mq_openssh'].wall():.1f} MB/s;\n   the same bytes from a `cat FILE` board "
          f"through mq run: {nbytes / MB / ssh_cases['mq_cat'].wall():.1f} MB/s, "
          f"{ssh_cases['mq_cat'].wall() / cat.wall():.2f}x ssh cat)")
    return ok_rate and ok_ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=64, help="console MB per throughput run (default 64)")
    parser.add_argument("--runs", type=int, default=5, help="measured throughput runs per command (default 5)")
    parser.add_argument("--latency-runs", type=int, default=10, help="first-line runs per command (default 10)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="section 4 (default: only when a target is missed)")
    parser.add_argument("--top", type=int, default=14, help="functions listed per profile")
    args = parser.parse_args(argv)

    if not ssh_bench_ready():
        return 2

    with lab_bench(args) as bench:
        host_py = subprocess.run(bench.ssh(f"{HOST_PYTHON} -c 'import sys; print(sys.executable, "
                                           "sys.version.split()[0])'"),
                                 env=bench.base_env, capture_output=True, text=True, check=True).stdout.strip()
        ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        print(f"mq console benchmark: sshd on 127.0.0.1:{bench.sshd.port}, user {USER}, lab {bench.ssh_lab}")
        print(f"client python {PYTHON} ({sys.version.split()[0]}); host python {host_py}; {ssh_version}")
        print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
        ssh_cases = section_ssh(bench)
        section_local(bench)
        section_latency(bench)
        met = verdict(ssh_cases, bench.nbytes("big"))
        if args.profile or (args.profile is None and not met):
            section_profile(bench)
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")
        return 0 if met else 1


@contextlib.contextmanager
def lab_bench(args: argparse.Namespace) -> Iterator[Bench]:
    """A loopback sshd, the shared SSH lab, a local lab, client config and images; all removed afterwards."""
    import conftest
    from sshd import client_config, start_sshd

    root = Path("/tmp") / f"mq-bench-console-{os.getpid()}"
    client_dir = Path(tempfile.mkdtemp(prefix="mqc-"))
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MQ_", "SSH_", "XDG_")) and k != "PYTHONDONTWRITEBYTECODE"}
    base_env.update(HOME=str(client_dir), PYTHONPYCACHEPREFIX=str(client_dir / "pycache"))
    if SRC_PATH:
        base_env["PYTHONPATH"] = SRC_PATH
    sshd = start_sshd(root, conftest.TEST_USERS)
    try:
        ssh_lab = conftest.make_lab(root / "lab", shared=True).base
        local_lab = conftest.make_lab(root / "local-lab").base
        known = client_dir / "known_hosts"
        known.write_text(sshd.known_hosts_line() + "\n")
        cfg = client_config(sshd, USER, client_dir / "config", known_hosts=known)
        openssh_toml = client_dir / "mq-openssh.toml"
        openssh_toml.write_text('transport = "openssh"\n')
        bench = Bench(args=args, root=root, client_dir=client_dir, sshd=sshd, cfg=cfg, ssh_lab=ssh_lab,
                      local_lab=local_lab, base_env=base_env, openssh_toml=openssh_toml)
        make_images(bench)
        for lab in (ssh_lab, local_lab):
            (lab / "lab.toml").write_text(LAB_TOML.format(board=BOARD, cat=CAT_BOARD, big=bench.data["big"],
                                                          small=bench.data["small"]))
        yield bench
    finally:
        sshd.stop()
        shutil.rmtree(client_dir, ignore_errors=True)
        for _ in range(10):  # a connection's re-executed sshd may still reopen sshd.log by name
            shutil.rmtree(root, ignore_errors=True)
            if not root.exists():
                break
            time.sleep(0.1)

if __name__ == "__main__":
    sys.exit(main())
