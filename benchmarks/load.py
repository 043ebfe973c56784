#!/usr/bin/env python3
"""Hand-run load figures: hundreds of waiters on one board, locally and over SSH.

Not part of CI. Run as root from the repository (mq installed, editable is fine)::

    python3 benchmarks/load.py                 # 300 waiters each way (about 3 minutes on 2 cores)
    python3 benchmarks/load.py --waiters 50    # about 35 s
    python3 benchmarks/load.py --alive 1       # the tests' ServerAliveInterval (default 15 s, mq's own)
    python3 benchmarks/load.py --no-ssh        # local waiters only
    python3 benchmarks/load.py --openssh       # also over the system ssh (transport = "openssh")

It starts its own OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``, the test users
of ``tests/conftest.py``) and a shared lab directory with board b1, which a
holder process (running as mqalice, as every waiter does) takes first. Then,
once for local waiters (``MQ_HOST=local``: the ``mq`` process is both client
and engine) and once over SSH (paramiko, the default transport: an ``mq``
client here, an sshd session and a ``python3 -c <bootstrap>`` engine agent of
mqalice on the "host"), it:

1. starts N real ``mq sem -wait b1 -k wNNNN`` processes, in batches so sshd's
   ``MaxStartups 200:30:400`` of the test fixture is not what is measured, and
   waits until N tickets are queued;
2. lets them sit idle (``--settle`` s), then reads utime+stime from
   ``/proc/PID/stat`` of every client and host-side process over a
   ``--window`` s window (as % of one core, total and per waiter), and their
   memory (VmRSS from ``/proc/PID/status``; RSS counts shared pages once per
   process, so PSS and USS, the private pages, from ``smaps_rollup`` are shown
   next to it: USS is what one more waiter costs);
3. drains the queue: the holder releases, and each waiter in turn is granted
   b1 (seen here as the lock file naming its key: "host" hand-off), its
   ``mq`` process exits 0 ("client" hand-off: the waiting user learns it), and
   the holder process releases it for the next one. It prints the hand-off
   times (median, p95, max) and compares the grant order with the arrival
   order (ticket sequence numbers), counting grants that overtook an earlier
   arrival still waiting;
4. checks nothing is left behind: no ticket, no lock, no process.

The load average is printed at start and end; the figures mean little on a
loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _prereqs import mq_source_path, ssh_bench_ready

REPO = Path(__file__).resolve().parent.parent
SRC_PATH = mq_source_path()  # "" when installed; else children get it on PYTHONPATH
from mq.engine.lockdir import boardlock  # noqa: E402

PYTHON = sys.executable
USER = "mqalice"
BOARD = "b1"
ALIAS = "labhost"
HOLDER_KEY = "bench-holder"
BATCH = 25  # waiters started at once before waiting for their tickets
TICK = os.sysconf("SC_CLK_TCK")

# The holder: runs as USER; "hold KEY" takes b1 at once, "release KEY" releases it
# and answers with the monotonic time just before the release (system-wide clock).
HOLDER = """
import os, sys, time
from mq.engine.core.inventory import load_inventory
from mq.engine.lockdir.semaphore import Engine
base, board = sys.argv[1:3]
engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
for line in sys.stdin:
    verb, key = line.split()
    t0 = time.monotonic_ns()
    if verb == "hold":
        engine.wait(board, key=key, budget=0)
    else:
        engine.signal(board, key=key)
    sys.stdout.write("ok %d\\n" % t0)
    sys.stdout.flush()
"""


# -- /proc ---------------------------------------------------------------------------------
def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def status_kb(pid: int, name: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rollup_kb(pid: int, *names: str) -> int:
    """The sum of the named fields of /proc/PID/smaps_rollup (kB)."""
    total = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in names:
                total += int(value.split()[0])
    return total


def threads(pid: int) -> int:
    return status_kb(pid, "Threads")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_python(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("python")
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """Every living process below ``root`` (from the ppid field of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                rest = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != "Z":
            children.setdefault(int(rest[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Group:
    """A set of processes measured together (the clients, the engines, the sshd sessions)."""

    name: str
    pids: list[int]
    cpu_pct: float = 0.0
    rss_kb: list[int] = field(default_factory=list)
    pss_kb: list[int] = field(default_factory=list)
    uss_kb: list[int] = field(default_factory=list)  # private pages: what this process alone costs
    threads: int = 0


def measure_idle(groups: list[Group], window: float) -> None:
    before = {g.name: {pid: cpu_ticks(pid) for pid in g.pids} for g in groups}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    for group in groups:
        used = 0
        for pid, start in before[group.name].items():
            end = cpu_ticks(pid)
            if start is not None and end is not None:
                used += end - start
        group.cpu_pct = 100.0 * used / TICK / elapsed
        group.rss_kb = [status_kb(pid, "VmRSS") for pid in group.pids]
        group.pss_kb = [rollup_kb(pid, "Pss") for pid in group.pids]
        group.uss_kb = [rollup_kb(pid, "Private_Clean", "Private_Dirty") for pid in group.pids]
        group.threads = sum(threads(pid) for pid in group.pids)


# -- the lab ----------------------------------------------------------------------------------
def as_user(user: str) -> dict[str, Any]:
    import grp

    import conftest

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid,
            "extra_groups": [grp.getgrnam(conftest.TEST_GROUP).gr_gid], "umask": 0o022}


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQ_", "SSH_", "XDG_"))}
    env.update(HOME=str(home), TZ="UTC")
    if SRC_PATH:
        env["PYTHONPATH"] = SRC_PATH
    return env


def tickets(base: Path) -> list[tuple[int, str]]:
    """(sequence number, key) of the queued tickets, in arrival order."""
    queue = base / ".mq" / "queue"
    found = []
    with contextlib.suppress(FileNotFoundError):
        for path in queue.iterdir():
            name = path.name
            if not name.startswith("T") or "." in name:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError):
                found.append((int(name[1:].split("-")[0]), str(json.loads(path.read_text())["key"])))
    return sorted(found)


class Holder:
    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([PYTHON, "-c", HOLDER, str(base), BOARD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, **as_user(USER))

    def ask(self, verb: str, key: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{verb} {key}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if not answer or answer[0] != "ok":
            raise RuntimeError(f"holder failed to {verb} {key}")
        return int(answer[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Waiter:
    key: str
    proc: subprocess.Popen[bytes]
    err: Path


def start_waiters(count: int, argv: list[str], env: dict[str, str], base: Path, logs: Path,
                  run_as: str | None) -> tuple[list[Waiter], float]:
    waiters: list[Waiter] = []
    t0 = time.monotonic()
    extra = as_user(run_as) if run_as else {}
    while len(waiters) < count:
        for _ in range(min(BATCH, count - len(waiters))):
            key = f"w{len(waiters):04d}"
            err = logs / f"{key}.err"
            with open(err, "wb") as handle:
                proc = subprocess.Popen([*argv, "sem", "-wait", BOARD, "-k", key], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle, **extra)
            waiters.append(Waiter(key, proc, err))
        deadline = time.monotonic() + 120
        while len(tickets(base)) < len(waiters):
            dead = [w for w in waiters if w.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"waiter {dead[0].key} exited {dead[0].proc.returncode} before its grant: "
                                   + dead[0].err.read_text(errors="replace").strip())
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(tickets(base))} of {len(waiters)} tickets queued after 120 s")
            time.sleep(0.05)
    return waiters, time.monotonic() - t0


def current_key(base: Path) -> str | None:
    holder = boardlock.read_holder(str(base), BOARD)
    return None if holder is None else holder.shown_key


@dataclass
class Drain:
    host_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def drain(holder: Holder, waiters: list[Waiter], base: Path) -> Drain:
    """Release, then let each waiter be granted b1 in turn; time each hand-off."""
    result = Drain()
    by_key = {w.key: w for w in waiters}
    started = time.monotonic()
    previous = HOLDER_KEY
    for _ in range(len(waiters)):
        t0 = holder.ask("release", previous)
        deadline = time.monotonic() + 60
        key = None
        while True:  # the host side: the lock file of the next holder appears
            key = current_key(base)
            if key in by_key and key not in result.order:
                t_grant = time.monotonic_ns()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no grant within 60 s after {len(result.order)} hand-offs")
            time.sleep(0.0002)
        waiter = by_key[key]
        while waiter.proc.poll() is None:  # the client side: its mq learns and exits
            if time.monotonic() > deadline:
                raise RuntimeError(f"{key} was granted b1 but did not exit within 60 s")
            time.sleep(0.0002)
        t_exit = time.monotonic_ns()
        if waiter.proc.returncode != 0:
            result.failed.append(f"{key}: exit {waiter.proc.returncode} "
                                 + waiter.err.read_text(errors="replace").strip())
        result.order.append(key)
        result.host_ms.append((t_grant - t0) / 1e6)
        result.client_ms.append((t_exit - t0) / 1e6)
        previous = key
    holder.ask("release", previous)
    result.seconds = time.monotonic() - started
    return result


def overtakes(arrival: list[str], granted: list[str]) -> int:
    """Grants given while a waiter that arrived earlier was still waiting."""
    position = {key: i for i, key in enumerate(arrival)}
    waiting = set(arrival)
    count = 0
    for key in granted:
        waiting.discard(key)
        if any(position[other] < position[key] for other in waiting):
            count += 1
    return count


# -- reporting ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mb(kb: float) -> float:
    return kb / 1024.0


def print_groups(groups: list[Group], waiters: int, window: float) -> None:
    print(f"   idle, {window:g} s window        procs threads   CPU % core (total  per waiter)"
          "   RSS MB (median  total  per waiter)   PSS MB per waiter   USS MB per waiter")
    for g in groups:
        if not g.pids:
            continue
        print(f"   {g.name:<28} {len(g.pids):5d} {g.threads:7d}   {g.cpu_pct:18.2f} {g.cpu_pct / waiters:11.4f}"
              f"   {mb(statistics.median(g.rss_kb)):14.1f} {mb(sum(g.rss_kb)):6.0f} {mb(sum(g.rss_kb)) / waiters:11.1f}"
              f"   {mb(sum(g.pss_kb)) / waiters:17.1f}   {mb(sum(g.uss_kb)) / waiters:17.1f}")


def print_drain(result: Drain, arrival: list[str]) -> None:
    n = len(result.order)
    for name, values in (("host (lock file of the next waiter)", result.host_ms),
                         ("client (its mq process exits 0)", result.client_ms)):
        print(f"   hand-off to {name:<36} median {statistics.median(values):8.2f} ms   "
              f"p95 {pct(values, 0.95):8.2f} ms   max {max(values):8.2f} ms")
    same = sum(1 for a, b in zip(arrival, result.order, strict=False) if a == b)
    print(f"   {n} grants in {result.seconds:.1f} s; in arrival order: {same}/{n}; "
          f"overtaking an earlier waiter: {overtakes(arrival, result.order)}; failed: {len(result.failed)}")
    for line in result.failed[:5]:
        print(f"     {line}")


@dataclass
class Phase:
    name: str
    waiters: int
    groups: list[Group]
    drain: Drain
    queued_s: float
    arrival: list[str]
    left: str

    @property
    def overtakes(self) -> int:
        return overtakes(self.arrival, self.drain.order)


def run_phase(name: str, count: int, env: dict[str, str], base: Path, logs: Path, holder: Holder,
              args: argparse.Namespace, run_as: str | None, host: HostSide | None) -> Phase:
    print(f"\n== {name}: {count} waiters on {BOARD} ==", flush=True)
    warm = subprocess.run([PYTHON, "-m", "mq", "sem", "-info", BOARD], env=env, capture_output=True, text=True,
                          timeout=60, check=False, **(as_user(run_as) if run_as else {}))
    if warm.returncode != 0:  # over SSH: installs the engine on the host once, not N times at once
        raise RuntimeError(f"mq sem -info failed ({warm.returncode}): {warm.stderr.strip()}")
    holder.ask("hold", HOLDER_KEY)
    waiters: list[Waiter] = []
    try:
        waiters, queued_s = start_waiters(count, [PYTHON, "-m", "mq"], env, base, logs, run_as)
        arrival = [key for _, key in tickets(base)]
        print(f"   {count} tickets queued in {queued_s:.1f} s; idle {args.settle:g} s, then measuring ...", flush=True)
        time.sleep(args.settle)
        clients = [w.proc.pid for w in waiters]
        clients += [pid for w in waiters for pid in descendants(w.proc.pid)]  # openssh: each client's ssh
        groups = [Group("clients (mq sem -wait)", clients), *(host.groups() if host else [])]
        measure_idle(groups, args.window)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"   (load average {load} after the window; host = engines + sshd sessions)")
        print_groups(groups, count, args.window)
        result = drain(holder, waiters, base)
        print_drain(result, arrival)
        time.sleep(1.0)  # the host side notices its clients went
        left_procs = sum(1 for w in waiters if w.proc.poll() is None) + len(host.engines() if host else [])
        still = current_key(base)
        left = f"{len(tickets(base))} tickets, lock {'held by ' + still if still else 'free'}, {left_procs} processes"
        print(f"   left behind: {left}")
        return Phase(name, count, groups, result, queued_s, arrival, left)
    finally:
        for w in waiters:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


@dataclass
class HostSide:
    """The host-side processes of one lab behind one sshd (the engines name the lab directory)."""

    sshd_pid: int
    base: bytes

    def engines(self) -> list[int]:
        return [pid for pid in descendants(self.sshd_pid) if self.base in cmdline(pid) and is_python(pid)]

    def groups(self) -> list[Group]:
        below = descendants(self.sshd_pid)
        engines = [pid for pid in below if self.base in cmdline(pid) and is_python(pid)]
        sessions = [pid for pid in below if cmdline(pid).startswith(b"sshd")]
        return [Group("host: engine agents", engines), Group("host: sshd session procs", sessions)]


def summary(phases: list[Phase], window: float) -> None:
    print("\nSummary (medians; CPU as % of one core)")
    header = ("", "waiters", "client CPU total", "per waiter", "client RSS/waiter", "USS/waiter", "host CPU total",
              "per waiter",
              "host RSS/waiter", "hand-off host", "hand-off client", "overtakes")
    rows = [header]
    for p in phases:
        client = p.groups[0]
        hosts = p.groups[1:] or p.groups[:1]
        host_cpu = sum(g.cpu_pct for g in hosts)
        host_rss = sum(sum(g.rss_kb) for g in hosts)
        rows.append((p.name, str(p.waiters), f"{client.cpu_pct:.2f} %", f"{client.cpu_pct / p.waiters:.4f} %",
                     f"{mb(sum(client.rss_kb)) / p.waiters:.1f} MB", f"{mb(sum(client.uss_kb)) / p.waiters:.1f} MB",
                     f"{host_cpu:.2f} %",
                     f"{host_cpu / p.waiters:.4f} %", f"{mb(host_rss) / p.waiters:.1f} MB",
                     f"{statistics.median(p.drain.host_ms):.1f} ms", f"{statistics.median(p.drain.client_ms):.1f} ms",
                     str(p.overtakes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        cells = [cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  " + "  ".join(cells))
    if len(phases) >= 2:
        local, ssh = phases[:2]
        ratio_cpu = (f"{ssh.groups[0].cpu_pct / local.groups[0].cpu_pct:.1f}x" if local.groups[0].cpu_pct
                     else f"{ssh.groups[0].cpu_pct:.2f} % against 0.00 %")
        ratio_rss = sum(ssh.groups[0].rss_kb) / max(1, sum(local.groups[0].rss_kb))
        ratio_hand = statistics.median(ssh.drain.client_ms) / statistics.median(local.drain.client_ms)
        print(f"\n  ssh / local: client CPU {ratio_cpu}, client RSS {ratio_rss:.2f}x, "
              f"client hand-off {ratio_hand:.1f}x")
    print(f"  targets of issue 9: SSH clients < 2 % of a core for 300 idle waiters in total, <= 20 MB RSS each; "
          f"host side ~0 CPU, ~15.5 MB per engine ({window:g} s window)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=300, help="waiters each way (default 300)")
    parser.add_argument("--window", type=float, default=5.0, help="CPU measuring window in s (default 5)")
    parser.add_argument("--settle", type=float, default=3.0, help="idle time before measuring in s (default 3)")
    parser.add_argument("--no-ssh", action="store_true", help="local waiters only")
    parser.add_argument("--openssh", action="store_true",
                        help="also over the system ssh (transport = \"openssh\"; a client is mq and its ssh)")
    parser.add_argument("--alive", type=int, default=15,
                        help="the clients' ServerAliveInterval in s (x CountMax 3; default 15, mq's own when unset; "
                             "the tests use 1)")
    return parser.parse_args()


def user_home() -> Path:
    entry = pwd.getpwnam(USER)
    home = Path("/tmp") / f"mq-home-{USER}"
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return home


def run_all(args: argparse.Namespace, root: Path, tmp: Path, sshd: Any) -> list[Phase]:
    import conftest
    from sshd import client_config

    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    lab = conftest.make_lab(root / "lab", shared=True)
    logs = tmp / "logs"
    logs.mkdir()
    user_env = {**base_env(user_home()), "USER": USER, "LOGNAME": USER}
    holder = Holder(lab.base, user_env)
    phases: list[Phase] = []
    try:
        local_env = {**user_env, "MQ_HOST": "local", "MQ_BASE": str(lab.base)}
        phases.append(run_phase("local", args.waiters, local_env, lab.base, logs, holder, args, USER, None))
        if sshd is not None:
            known = tmp / "known_hosts"
            known.write_text(sshd.known_hosts_line() + "\n")
            cfg = client_config(sshd, USER, tmp / "ssh_config", known_hosts=known, alive=args.alive)
            ssh_env = {**base_env(tmp), "MQ_HOST": ALIAS, "MQ_BASE": str(lab.base), "MQ_SSH_CONFIG": str(cfg)}
            host = HostSide(sshd.proc.pid, os.fsencode(str(lab.base)))
            phases.append(run_phase(f"ssh (paramiko, alive {args.alive} s)", args.waiters, ssh_env, lab.base, logs,
                                    holder, args, None, host))
            if args.openssh:
                toml = tmp / "openssh.toml"
                toml.write_text('transport = "openssh"\n')
                phases.append(run_phase(f"ssh (openssh, alive {args.alive} s)", args.waiters,
                                        {**ssh_env, "MQ_CONFIG": str(toml)}, lab.base, logs, holder, args, None, host))
    finally:
        holder.close()
    return phases


def main() -> int:
    args = parse_args()
    if not ssh_bench_ready():  # also when --no-ssh: the waiters run as the test user mqalice
        return 2
    import conftest
    from sshd import start_sshd

    root = Path("/tmp") / f"mq-bench-load-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="mql-"))
    os.chmod(tmp, 0o755)
    sshd = None
    try:
        sshd = None if args.no_ssh else start_sshd(root, conftest.TEST_USERS)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"mq load: {time.strftime('%Y-%m-%d %H:%M %Z')}, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, load average {load} at start; {args.waiters} waiters each way")
        phases = run_all(args, root, tmp, sshd)
        summary(phases, args.window)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nload average {load} at end")
        return 0
    finally:
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
