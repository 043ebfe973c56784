#!/usr/bin/env python3
"""Hand-run performance figures for mq against procmail ``lockfile(1)``.

Not part of CI. Run from the repository (mq installed, editable is fine)::

    python3 benchmarks/handoff.py           # about 1 minute
    python3 benchmarks/handoff.py --quick   # about 30 seconds

Every figure is measured in the same run, against a baseline measured next
to it on the same machine, in a throw-away lock directory (one board, b1):

1. hand-off latency: a holder process releases b1 while a waiter process
   sleeps in ``Engine.wait``; time from just before ``signal()`` to the
   waiter's first instruction after ``wait`` returns (CLOCK_MONOTONIC is
   system-wide on Linux). Baseline: ``lockfile`` at its default 8 s sleep.
2. uncontended lock+release cycles per second: ``Engine.wait(budget=0)`` +
   ``Engine.signal`` against bare ``O_CREAT|O_EXCL`` + ``unlink`` and
   against ``lockfile -r0`` + ``rm -f`` (two processes, as mq.sh does).
3. CPU used by 100 idle waiters over 10 s (utime+stime from /proc).
4. start-up: wall time of ``mq sem -info b1`` (entry point and ``-m mq``)
   against ``python3 -c pass``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROM_CHECKOUT = False
try:
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine
except ImportError:  # not installed: use the checkout (children get PYTHONPATH too)
    FROM_CHECKOUT = True
    sys.path.insert(0, os.path.join(REPO, "src"))
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

PYTHON = sys.executable  # the real interpreter (a pyenv shim would add its own start-up)
BOARD = "b1"
HOLDER_KEY = "bench-holder"
WAITER_KEY = "bench-waiter"
LAB_TOML = '[systems.b1]\narch = "arm"\nsoc = "bench"\n'

TARGET_HANDOFF_MS = 20.0
TARGET_IDLE_CPU_PCT = 2.0
TARGET_STARTUP_RATIO = 4.0

# The waiter of section 1: one wait per "w" on stdin; prints the monotonic
# time as soon as the grant is in hand, then releases and says "r".
HANDOFF_WAITER = """
import os, sys, time
from mq.engine.core.inventory import load_inventory
from mq.engine.lockdir.semaphore import Engine
base, board, key = sys.argv[1:4]
engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
while os.read(0, 1) == b"w":
    engine.wait(board, key=key, budget=None)
    now = time.monotonic_ns()
    os.write(1, b"G %d\\n" % now)
    engine.signal(board, key=key)
    os.write(1, b"r\\n")
"""

# The idle waiters of section 3: wait forever, release at once, exit.
IDLE_WAITER = """
import os, sys
from mq.engine.core.inventory import load_inventory
from mq.engine.lockdir.semaphore import Engine
base, board, key = sys.argv[1:4]
engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
engine.wait(board, key=key, budget=None)
engine.signal(board, key=key)
"""


# -- helpers -------------------------------------------------------------------------
def make_lab() -> str:
    root = tempfile.mkdtemp(prefix="mq-bench-")
    with open(os.path.join(root, "lab.toml"), "w") as handle:
        handle.write(LAB_TOML)
    with open(os.path.join(root, "empty-config.toml"), "w"):
        pass
    return root


def child_env(base: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    env.update({"MQ_HOST": "local", "MQ_BASE": base, "MQ_LAB": os.path.join(base, "lab.toml"),
                "MQ_CONFIG": os.path.join(base, "empty-config.toml")})
    if FROM_CHECKOUT:
        src = os.path.join(REPO, "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def engine_for(base: str) -> Engine:
    return Engine(base, load_inventory(os.path.join(base, "lab.toml")))


def tickets(base: str) -> List[str]:
    try:
        names = os.listdir(os.path.join(base, ".mq", "queue"))
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith("T") and "." not in n]


def wait_for(predicate, timeout: float, what: str, step: float = 0.001) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


def ms(ns: float) -> float:
    return ns / 1e6


def readline(proc: subprocess.Popen, timeout: float = 30.0) -> bytes:  # type: ignore[type-arg]
    """One line from a child's stdout (fails instead of hanging if the child dies)."""
    assert proc.stdout is not None
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("child did not answer in time")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"child exited: {err.strip()}")
    return line


def kill_all(procs: Sequence[subprocess.Popen]) -> None:  # type: ignore[type-arg]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


# -- 1. hand-off latency ---------------------------------------------------------------
def handoff_mq(base: str, count: int, warmup: int = 2) -> Tuple[List[float], List[float]]:
    """(release -> waiter holding, duration of the release call) in ms for ``count`` hand-offs."""
    engine = engine_for(base)
    proc = subprocess.Popen([PYTHON, "-c", HANDOFF_WAITER, base, BOARD, WAITER_KEY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(base), bufsize=0)
    assert proc.stdin is not None
    latencies: List[float] = []
    release_calls: List[float] = []
    try:
        for i in range(warmup + count):
            engine.wait(BOARD, key=HOLDER_KEY, budget=0)
            proc.stdin.write(b"w")
            wait_for(lambda: bool(tickets(base)), 30, "the waiter's ticket")
            time.sleep(random.uniform(0.005, 0.03))  # let it settle into select()
            t0 = time.monotonic_ns()
            engine.signal(BOARD, key=HOLDER_KEY)
            t1 = time.monotonic_ns()
            tag, granted = readline(proc).split()
            assert tag == b"G"
            if readline(proc).strip() != b"r":
                raise RuntimeError("waiter did not release")
            if i >= warmup:
                latencies.append(ms(int(granted) - t0))
                release_calls.append(ms(t1 - t0))
        proc.stdin.close()
        proc.wait(timeout=10)
    finally:
        kill_all([proc])
    return latencies, release_calls


def handoff_lockfile(base: str, count: int) -> List[float]:
    """release -> ``lockfile`` (default: retry forever, sleep 8 s) exits holding, in ms."""
    path = os.path.join(base, "legacy.lock")
    latencies: List[float] = []
    for _ in range(count):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o444))
        proc = subprocess.Popen(["lockfile", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(random.uniform(0.3, 7.7))  # release at a random moment of its 8 s sleep
            t0 = time.monotonic_ns()
            os.unlink(path)
            rc = proc.wait(timeout=30)
            t1 = time.monotonic_ns()
        finally:
            kill_all([proc])
        if rc != 0 or not os.path.exists(path):
            raise RuntimeError(f"lockfile exited {rc} without the lock")
        latencies.append(ms(t1 - t0))
        os.unlink(path)
    return latencies


# -- 2. uncontended cycles ---------------------------------------------------------------
def rate(cycle, seconds: float) -> float:  # type: ignore[no-untyped-def]
    count = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        cycle()
        count += 1
        now = time.monotonic()
        if now >= end:
            return count / (now - start)


def cycles(base: str, seconds: float) -> Dict[str, float]:
    engine = engine_for(base)
    plain = os.path.join(base, "plain.lock")
    legacy = os.path.join(base, "legacy.lock")

    def mq_cycle() -> None:
        engine.wait(BOARD, key=HOLDER_KEY, budget=0)
        engine.signal(BOARD, key=HOLDER_KEY)

    def excl_cycle() -> None:
        os.close(os.open(plain, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o444))
        os.unlink(plain)

    def lockfile_cycle() -> None:
        subprocess.run(["lockfile", "-r0", legacy], check=True)
        subprocess.run(["rm", "-f", legacy], check=True)

    mq_cycle()  # warm
    return {"mq": rate(mq_cycle, seconds), "excl": rate(excl_cycle, seconds),
            "lockfile": rate(lockfile_cycle, seconds)}


# -- 3. idle waiters --------------------------------------------------------------------------
def proc_cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def wakeups(pid: int) -> int:
    """Times the process's threads went to sleep and were woken (voluntary context switches)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


class TailWatch:
    """The last waiter in the queue sleeps through every hand-off ahead of it: how often is it woken?

    Sampled once nine tenths of the waiters ahead of it are done (closer to its turn
    the samples would race its own wake-up)."""

    def __init__(self, base: str, procs: List[subprocess.Popen]) -> None:  # type: ignore[type-arg]
        last = max(tickets(base), key=lambda name: int(name[1:].split("-")[0]))
        self.procs = procs
        self.proc = next(p for p in procs if p.pid == int(last.rsplit("-", 1)[1]))
        self.before = wakeups(self.proc.pid)
        self.woken, self.handoffs = -1.0, 0.0

    def sample(self) -> None:
        done = sum(p.poll() is not None for p in self.procs)
        if self.woken < 0 and done >= 0.9 * (len(self.procs) - 1) and self.proc.poll() is None:
            self.woken, self.handoffs = float(wakeups(self.proc.pid) - self.before), float(done)


def idle_waiters(base: str, count: int, seconds: float) -> Dict[str, float]:
    engine = engine_for(base)
    engine.wait(BOARD, key=HOLDER_KEY, budget=0)
    env = child_env(base)
    procs: List[subprocess.Popen] = []  # type: ignore[type-arg]
    result: Dict[str, float] = {}
    try:
        started = time.monotonic()
        for _ in range(count):
            procs.append(subprocess.Popen([PYTHON, "-c", IDLE_WAITER, base, BOARD, WAITER_KEY],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
        wait_for(lambda: len(tickets(base)) >= count or any(p.poll() is not None for p in procs), 120,
                 f"{count} tickets", step=0.05)
        if len(tickets(base)) < count:
            dead = next(p for p in procs if p.poll() is not None)
            raise RuntimeError("a waiter died: " + (dead.stderr.read().decode(errors="replace")
                                                    if dead.stderr else ""))
        result["queue_s"] = time.monotonic() - started
        time.sleep(0.5)  # the last arrivals finish their first look at the queue
        tck = os.sysconf("SC_CLK_TCK")
        before = {p.pid: proc_cpu_ticks(p.pid) for p in procs}
        t0 = time.monotonic()
        time.sleep(seconds)
        after = {p.pid: proc_cpu_ticks(p.pid) for p in procs}
        elapsed = time.monotonic() - t0
        used = sum(after[pid] - before[pid] for pid in before) / tck
        result["cpu_pct"] = 100.0 * used / elapsed
        result["busiest_ticks"] = max(after[pid] - before[pid] for pid in before)
        # Release: the waiters take and release b1 in turn, then exit. Their CPU
        # over the drain = CPU of the reaped children - what they had used before.
        tail = TailWatch(base, procs)
        children = os.times()
        t0 = time.monotonic()
        engine.signal(BOARD, key=HOLDER_KEY)
        deadline = t0 + 60
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            tail.sample()
            time.sleep(0.002)
        result["tail_wakeups"], result["tail_handoffs"] = tail.woken, tail.handoffs
        result["drain_s"] = time.monotonic() - t0
        if not any(p.poll() is None for p in procs):
            now = os.times()
            reaped = (now.children_user + now.children_system) - (children.children_user + children.children_system)
            result["drain_cpu_s"] = reaped - sum(after.values()) / tck
        result["stragglers"] = sum(1 for p in procs if p.poll() is None)
        result["failed"] = sum(1 for p in procs if p.poll() not in (None, 0))
    finally:
        kill_all(procs)
        for proc in procs:
            if proc.stderr is not None:
                proc.stderr.close()
    result["left_procs"] = sum(1 for p in procs if os.path.exists(f"/proc/{p.pid}") and _is_ours(p.pid))
    result["left_tickets"] = len(tickets(base))
    result["left_lock"] = float(os.path.lexists(os.path.join(base, BOARD + ".lock")))
    return result


def _is_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"engine.wait" in handle.read()
    except OSError:
        return False


# -- 4. start-up -------------------------------------------------------------------------------
def entry_point() -> Optional[str]:
    """The installed ``mq`` script next to the real interpreter (not a pyenv shim)."""
    here = os.path.join(os.path.dirname(PYTHON), "mq")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("mq")


def startup(base: str, runs: int) -> Dict[str, float]:
    env = child_env(base)
    commands = {"python3 -c pass": [PYTHON, "-c", "pass"],
                "python3 -m mq sem -info": [PYTHON, "-m", "mq", "sem", "-info", BOARD]}
    script = entry_point()
    if script is not None:
        commands["mq sem -info"] = [script, "sem", "-info", BOARD]
    for name, argv in commands.items():  # warm the page cache and .pyc files; check it works
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or (name != "python3 -c pass" and "b1" not in proc.stdout):
            raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    times: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():  # interleaved, so drift hits all alike
            t0 = time.monotonic_ns()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(ms(time.monotonic_ns() - t0))
    return {name: statistics.median(values) for name, values in times.items()}


# -- driver --------------------------------------------------------------------------------------
Row = Tuple[str, str, str, str]  # metric, measured, target, ok/FAIL/""


def _ok(passed: bool) -> str:
    return "ok" if passed else "FAIL"


def report_handoff(base: str, handoffs: int, legacy_rounds: int) -> List[Row]:
    print(f"\n1. hand-off latency (release -> next waiter holding), {handoffs} hand-offs")
    lat, calls = handoff_mq(base, handoffs)
    mq_med = statistics.median(lat)
    print(f"   mq:       median {mq_med:8.2f} ms   max {max(lat):8.2f} ms   "
          f"(the signal() call itself: median {statistics.median(calls):.2f} ms)")
    print(f"   lockfile: {legacy_rounds} hand-offs at the default 8 s sleep (up to 8 s each) ...", flush=True)
    legacy = handoff_lockfile(base, legacy_rounds)
    legacy_med = statistics.median(legacy)
    print(f"   lockfile: median {legacy_med:8.1f} ms   max {max(legacy):8.1f} ms   "
          f"({', '.join(f'{x:.0f}' for x in legacy)} ms)")
    print(f"   ratio lockfile/mq (medians): {legacy_med / mq_med:,.0f}x")
    return [("hand-off median (mq)", f"{mq_med:.2f} ms", f"<= {TARGET_HANDOFF_MS:g} ms",
             _ok(mq_med <= TARGET_HANDOFF_MS)),
            ("hand-off max (mq)", f"{max(lat):.2f} ms", "-", ""),
            ("hand-off median (lockfile, 8 s)", f"{legacy_med:.0f} ms", f"= {legacy_med / mq_med:,.0f}x mq", "")]


def report_cycles(base: str, seconds: float) -> List[Row]:
    print(f"\n2. uncontended lock+release cycles per second ({seconds:g} s each)")
    rates = cycles(base, seconds)
    print(f"   mq Engine.wait(budget=0)+signal: {rates['mq']:10.0f} /s")
    print(f"   os.open(O_CREAT|O_EXCL)+unlink:  {rates['excl']:10.0f} /s   "
          f"(mq is {rates['excl'] / rates['mq']:.0f}x slower)")
    vs_legacy = rates["mq"] / rates["lockfile"]
    print(f"   lockfile -r0 + rm -f (2 procs):  {rates['lockfile']:10.0f} /s   (mq is "
          + (f"{vs_legacy:.1f}x faster)" if vs_legacy >= 1 else f"{1 / vs_legacy:.1f}x slower)"))
    return [("uncontended cycles/s (mq)", f"{rates['mq']:.0f}/s",
             f"{vs_legacy:.2f}x lockfile+rm, 1/{rates['excl'] / rates['mq']:.0f} of O_EXCL", "")]


def report_idle(base: str, count: int, seconds: float) -> List[Row]:
    print(f"\n3. CPU of {count} idle waiters over {seconds:g} s")
    idle = idle_waiters(base, count, seconds)
    print(f"   {count} tickets queued after {idle['queue_s']:.1f} s")
    print(f"   CPU: {idle['cpu_pct']:.2f} % of one core in total (busiest waiter: {idle['busiest_ticks']:.0f} ticks)")
    print(f"   released: {count} queued hand-offs drained in {idle['drain_s']:.2f} s "
          f"({1000 * idle['drain_s'] / count:.1f} ms each); stragglers {idle['stragglers']:.0f}, "
          f"failed {idle['failed']:.0f}")
    if "drain_cpu_s" in idle:
        print(f"   CPU of all waiters during the drain: {idle['drain_cpu_s']:.2f} s "
              f"({1000 * idle['drain_cpu_s'] / count:.1f} ms per waiter: its grant, release and interpreter exit)")
    if idle.get("tail_wakeups", -1) >= 0:
        print(f"   the last waiter was woken {idle['tail_wakeups']:.0f} times during the first "
              f"{idle['tail_handoffs']:.0f} hand-offs ahead of it (a herd would wake it on every one)")
    clean = not (idle["left_procs"] or idle["left_tickets"] or idle["left_lock"])
    print(f"   left behind: {idle['left_procs']:.0f} processes, {idle['left_tickets']:.0f} tickets, "
          f"lock {'held' if idle['left_lock'] else 'free'} -> {'clean' if clean else 'NOT CLEAN'}")
    return [(f"{count} idle waiters, CPU", f"{idle['cpu_pct']:.2f} %", f"< {TARGET_IDLE_CPU_PCT:g} % of a core",
             _ok(idle["cpu_pct"] < TARGET_IDLE_CPU_PCT)),
            (f"{count} waiters drained, clean-up", f"{idle['drain_s']:.2f} s", "nothing left",
             _ok(clean and not idle["stragglers"] and not idle["failed"])),
            ("last waiter's wake-ups", f"{idle.get('tail_wakeups', -1):.0f} in {idle.get('tail_handoffs', 0):.0f}",
             "no herd (<= 3)",
             _ok(0 <= idle.get("tail_wakeups", -1) <= 3))]


def report_startup(base: str, runs: int) -> List[Row]:
    print(f"\n4. start-up (median wall time of {runs} runs each)")
    start = startup(base, runs)
    floor = start["python3 -c pass"]
    for name, value in start.items():
        ratio = "" if name == "python3 -c pass" else f"   {value / floor:.1f}x python3 -c pass"
        print(f"   {name:26s} {value:8.1f} ms{ratio}")
    rows: List[Row] = []
    for name in ("mq sem -info", "python3 -m mq sem -info"):
        if name in start:
            ratio = start[name] / floor
            rows.append((name, f"{start[name]:.0f} ms = {ratio:.1f}x", f"<= {TARGET_STARTUP_RATIO:g}x python3 -c pass",
                         _ok(ratio <= TARGET_STARTUP_RATIO)))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Hand-run performance figures for mq (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="fewer lockfile hand-offs and shorter runs")
    parser.add_argument("--handoffs", type=int, default=30, help="mq hand-offs to time (at least 20; default 30)")
    args = parser.parse_args(argv)
    if shutil.which("lockfile") is None:
        print("procmail lockfile(1) is not installed (apt-get install procmail)", file=sys.stderr)
        return 2
    print(f"mq benchmarks: python {sys.version.split()[0]} ({PYTHON}), {os.cpu_count()} CPUs, "
          f"{'quick' if args.quick else 'full'} run")
    base = make_lab()
    rows: List[Row] = []
    try:
        rows += report_handoff(base, max(20, args.handoffs), 2 if args.quick else 4)
        rows += report_cycles(base, 1.0 if args.quick else 2.0)
        rows += report_idle(base, 100, 10.0)
        rows += report_startup(base, 9 if args.quick else 15)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    header: Row = ("metric", "measured", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("\nSummary")
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if all(r[3] != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
