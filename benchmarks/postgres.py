#!/usr/bin/env python3
"""Hand-run figures for the PostgreSQL engine, against the file engine on the same machine.

Not part of CI. Needs the PostgreSQL server binaries (Debian's ``postgresql``) and
psycopg 3 (``pip install 'mq[pg]'``); starts its own throw-away server with the
test suite's ``tests/pgserver.py`` (as root: as the system user ``mqpg``)::

    python3 benchmarks/postgres.py             # about 2 minutes
    python3 benchmarks/postgres.py --quick     # fewer rounds, 100 idle waiters

Every figure is measured in the same run for both engines (one board, b1):

1. hand-off latency: this process holds b1 and releases it while a waiter process
   sleeps in ``wait``; time from just before ``signal()`` to the waiter's first
   instruction after ``wait`` returns (CLOCK_MONOTONIC is system-wide). Target:
   median <= 20 ms.
2. uncontended grants per second: ``wait(budget=0)`` + ``signal`` in a loop.
3. N concurrent idle waiters (default 300): the CPU of all waiter processes over a
   window (utime+stime from /proc), as % of one core (target < 2 % in total);
   for PostgreSQL also the server's memory (RSS and PSS of all its processes).
4. death notice: a ``run`` (session) holder is SIGKILLed while a waiter sleeps;
   time from the kill to the waiter's grant; and a head waiter SIGKILLed just
   before the board is released: time from the release to the next waiter's
   grant. With the default grace period (30 s, for server restarts): a death while
   the server stays up is not a restart. Target: median <= 100 ms.
5. a running job's lock taken away: a child holds b1 as a ``run`` lock and watches it
   as a job does (the file engine's ``lockwatch``, the PostgreSQL engine's
   ``runwatch``); this process force-releases it; time until the child knows. Also
   the CPU of the watching child over 10 s of nothing happening.
6. a ``-T 8`` take-over while another client takes and releases b2 every 0.2 s: how
   long past the ``-T`` the sleeping waiter has b1 (timers are deadlines: unrelated
   wake-ups never postpone them).
7. the whole command ``mq sem -info b1``, process start to exit, on each engine (target:
   the database within 1.4x of the lock directory).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prereqs import mq_source_path  # noqa: E402

SRC = mq_source_path()

import pgserver  # noqa: E402
from mq.engine.core.inventory import parse_inventory  # noqa: E402
from mq.engine.lockdir.semaphore import Engine  # noqa: E402

PYTHON = sys.executable
LAB_TOML = ('[systems.b1]\narch = "arm"\nsoc = "bench"\n[systems.b2]\narch = "arm"\nsoc = "bench"\n'
            '[systems.b3]\narch = "arm"\nsoc = "bench"\n[pools.trio]\nmatch = { soc = "bench" }\n')
POOL_CLIENTS = 20  # clients cycling on the pool trio (b1, b2, b3) at once
TAKE_OVER_T = 8  # the holder's -T in the take-over figure
TRAFFIC_EVERY = 0.2  # s: the other board's cycle meanwhile (CHILD's "t": held 0.1 s, free 0.1 s)
TARGET_HANDOFF_MS = 20.0
TARGET_IDLE_CPU_PCT = 2.0
NOTICE_LIMIT = 20.0  # seconds a waiter is given to notice a dead run holder

# A child with an engine of either kind: argv = kind, where (lab dir or conninfo), grace, then commands
# on stdin: "w KEY" (wait, print the monotonic time of the grant), "s KEY" (wait as a run lock),
# "r KEY" (release).
CHILD = """
import os, sys, time
kind, where, grace = sys.argv[1:4]
toml = ('[systems.b1]\\narch = "arm"\\nsoc = "bench"\\n[systems.b2]\\narch = "arm"\\nsoc = "bench"\\n'
        '[systems.b3]\\narch = "arm"\\nsoc = "bench"\\n[pools.trio]\\nmatch = { soc = "bench" }\\n')
from mq.engine.core.inventory import parse_inventory
if kind == "file":
    from mq.engine.lockdir.semaphore import Engine
    engine = Engine(where, parse_inventory(toml, os.path.join(where, "lab.toml")))
else:
    from mq.pgengine import PgEngine
    engine = PgEngine(where, parse_inventory(toml, "lab.toml"), grace=float(grace))
os.write(1, b"ready\\n")
for line in sys.stdin:
    op, key, *rest = line.split()
    if op == "p":  # the pool trio, taken and released for a number of seconds: how many grants
        count, until = 0, time.monotonic() + float(rest[0])
        while time.monotonic() < until:
            grant = engine.wait("trio", key=key)
            engine.signal(grant.board, key=key)
            count += 1
        os.write(1, b"P %d\\n" % count)
    elif op in ("w", "s"):
        engine.wait("b1", key=key, session=op == "s")
        os.write(1, b"G %d\\n" % time.monotonic_ns())
    elif op == "r":
        engine.signal("b1", key=key)
        os.write(1, b"R\\n")
    elif op == "t":  # unrelated traffic: b2 taken and released every 0.2 s, until killed
        while True:
            engine.wait("b2", key=key)
            time.sleep(0.1)
            engine.signal("b2", key=key)
            time.sleep(0.1)
    elif op == "l":  # a run lock, watched as a job watches it until it is lost
        grant = engine.wait("b1", key=key, session=True)
        if kind == "file":
            import select
            from mq.engine.lockdir.lockwatch import LockLost, watch_lock
            watch = watch_lock(engine, "b1", grant.grant)
            os.write(1, b"W\\n")
            try:
                while True:
                    ready, _, _ = select.select(watch.fds, [], [], watch.sleep())
                    watch.look(ready)
            except LockLost:
                os.write(1, b"L %d\\n" % time.monotonic_ns())
        else:
            import threading
            lost = threading.Event()
            watch = engine.watch_run_lock("b1", key, grant.grant, lambda loss: (
                os.write(1, b"L %d\\n" % time.monotonic_ns()), lost.set()))
            os.write(1, b"W\\n")
            lost.wait()
            watch.stop()
"""


class Child:
    def __init__(self, kind: str, where: str, grace: float = 30.0) -> None:
        env = dict(os.environ)
        if SRC:
            env["PYTHONPATH"] = SRC
        self.proc = subprocess.Popen([PYTHON, "-c", CHILD, kind, where, str(grace)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        assert self.line() == "ready"

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def line(self, timeout: float | None = None) -> str:
        """The child's next line ("" if none came within ``timeout`` seconds)."""
        assert self.proc.stdout is not None
        if timeout is not None and not select.select([self.proc.stdout], [], [], timeout)[0]:
            return ""
        return self.proc.stdout.readline().strip()

    def cpu_ticks(self) -> int:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Lab:
    """One engine of each kind in this process, and how to make children of the same kind."""

    def __init__(self, kind: str, where: str, engine: object) -> None:
        self.kind = kind
        self.where = where
        self.engine = engine

    def child(self, grace: float = 30.0) -> Child:
        return Child(self.kind, self.where, grace)

    def queued(self) -> int:
        return len(self.engine.info("b1")[0].waiters)  # type: ignore[attr-defined]


def wait_until(cond: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.02)


def handoff(lab: Lab, rounds: int) -> List[float]:
    """Milliseconds from release to the waiter's grant, per round."""
    waiter = lab.child()
    samples = []
    try:
        for _ in range(rounds):
            lab.engine.wait("b1", key="holder", budget=0)  # type: ignore[attr-defined]
            waiter.send("w waiter")
            wait_until(lambda: lab.queued() == 1)
            time.sleep(0.05)  # asleep, not still settling in
            started = time.monotonic_ns()
            lab.engine.signal("b1", key="holder")  # type: ignore[attr-defined]
            granted = int(waiter.line().split()[1])
            samples.append((granted - started) / 1e6)
            waiter.send("r waiter")
            assert waiter.line() == "R"
    finally:
        waiter.close()
    return samples


def grants_per_second(lab: Lab, seconds: float) -> float:
    engine = lab.engine
    count = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        engine.wait("b1", key="cycle", budget=0)  # type: ignore[attr-defined]
        engine.signal("b1", key="cycle")  # type: ignore[attr-defined]
        count += 1
    return count / (time.monotonic() - started)


def pool_cycling(lab: Lab, clients: int, seconds: float) -> float:
    """Grants per second of ``clients`` processes each taking and releasing the pool trio in a loop."""
    children = [lab.child() for _ in range(clients)]
    try:
        for number, child in enumerate(children):
            child.send(f"p c{number} {seconds}")
        total = sum(int(child.line(timeout=seconds + 120).split()[1]) for child in children)
    finally:
        for child in children:
            child.close()
    return total / seconds


def command_times(tmp: str, conninfo: str, runs: int) -> Dict[str, float]:
    """Median milliseconds of the whole command ``mq sem -info b1`` (a process from start to exit),
    on the file engine (the lab in ``tmp``) and on the database."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    home = os.path.join(tmp, "home")
    os.makedirs(home, exist_ok=True)
    base.update(HOME=home, MQ_CONFIG=os.devnull)
    if SRC:
        base["PYTHONPATH"] = SRC
    envs = {"file": {**base, "MQ_BASE": tmp, "MQ_LAB": os.path.join(tmp, "lab.toml")},
            "postgresql": {**base, "MQ_BACKEND": conninfo}}
    medians = {}
    for kind, env in envs.items():
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run([PYTHON, "-m", "mq", "sem", "-info", "b1"], env=env, capture_output=True)
            samples.append((time.perf_counter() - started) * 1000)
            assert done.returncode == 0, done
        medians[kind] = statistics.median(samples)
    return medians


def round_trips(lab: Lab) -> Dict[str, int]:
    """Statements (each one round trip) a PostgreSQL client sends for: an uncontended wait as
    ``sem -wait`` makes it (the wait and the confirm), a release, a look at one board."""
    import psycopg

    real = psycopg.Connection.execute
    sent = [0]

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return real(self, *args, **kwargs)

    engine: Any = lab.engine
    counts: Dict[str, int] = {}
    psycopg.Connection.execute = counting  # type: ignore[method-assign]
    try:
        for name, step in (("sem -wait (wait + confirm)",
                            lambda: engine.confirm("b1", engine.wait("b1", key="rt", budget=0).grant)),
                           ("sem -signal", lambda: engine.signal("b1", key="rt")),
                           ("sem -info", lambda: engine.info("b1"))):
            sent[0] = 0
            step()
            counts[name] = sent[0]
    finally:
        psycopg.Connection.execute = real  # type: ignore[method-assign]
    return counts


def idle_waiters(lab: Lab, count: int, window: float, server: pgserver.PgServer | None) -> Tuple[float, str]:
    """(% of one core used by ``count`` idle waiters over ``window`` s, the server's memory)."""
    lab.engine.wait("b1", key="holder", budget=0)  # type: ignore[attr-defined]
    children: List[Child] = []
    try:
        for n in range(count):
            child = lab.child()
            child.send(f"w idle{n}")
            children.append(child)
        wait_until(lambda: lab.queued() == count, timeout=300)
        time.sleep(2.0)  # let them settle
        before = sum(c.cpu_ticks() for c in children)
        time.sleep(window)
        used = sum(c.cpu_ticks() for c in children) - before
        percent = 100.0 * used / os.sysconf("SC_CLK_TCK") / window
        memory = server_memory(server) if server is not None else ""
    finally:
        for child in children:
            child.close()
        with contextlib.suppress(Exception):
            lab.engine.signal("b1", key="holder")  # type: ignore[attr-defined]
    return percent, memory


def server_memory(server: pgserver.PgServer) -> str:
    """RSS and PSS of the postmaster and all its children (PSS shares shared memory out fairly)."""
    root = server.postmaster_pid()
    pids = [root] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == root]
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return f"{len(pids)} processes, RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB"


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def death_notice(lab: Lab, grace: float, rounds: int) -> List[float]:
    """Milliseconds from SIGKILL of a ``run`` holder to a sleeping waiter's grant."""
    samples = []
    for _ in range(rounds):
        holder, waiter = lab.child(grace), lab.child(grace)
        try:
            holder.send("s run")
            holder.line()
            waiter.send("w next")
            wait_until(lambda: lab.queued() == 1)
            time.sleep(0.1)
            killed = time.monotonic_ns()
            os.kill(holder.proc.pid, signal.SIGKILL)
            reply = waiter.line(timeout=NOTICE_LIMIT + grace)
            if not reply:
                samples.append(float("inf"))  # not noticed: the board stays held by a dead run
                continue
            samples.append((int(reply.split()[1]) - killed) / 1e6)
            waiter.send("r next")
            waiter.line()
        finally:
            holder.close()
            waiter.close()
    return samples


def head_death(lab: Lab, grace: float, rounds: int) -> List[float]:
    """Milliseconds from releasing b1 (its head waiter SIGKILLed just before) to the next waiter's grant."""
    samples = []
    for _ in range(rounds):
        lab.engine.wait("b1", key="holder", budget=0)  # type: ignore[attr-defined]
        doomed, waiter = lab.child(grace), lab.child(grace)
        try:
            doomed.send("w doomed")
            wait_until(lambda: lab.queued() == 1)
            waiter.send("w next")
            wait_until(lambda: lab.queued() == 2)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait()
            released = time.monotonic_ns()
            lab.engine.signal("b1", key="holder")  # type: ignore[attr-defined]
            reply = waiter.line(timeout=NOTICE_LIMIT + grace)
            samples.append((int(reply.split()[1]) - released) / 1e6 if reply else float("inf"))
            if reply:
                waiter.send("r next")
                waiter.line()
        finally:
            doomed.close()
            waiter.close()
    return samples


def take_over(lab: Lab, rounds: int) -> List[float]:
    """Seconds past the holder's ``-T`` until a sleeping waiter has b1, while b2 is taken and released
    every ``TRAFFIC_EVERY`` s by another client (every one of which wakes the PostgreSQL waiter)."""
    samples = []
    traffic = lab.child()
    traffic.send("t traffic")
    try:
        for _ in range(rounds):
            lab.engine.wait("b1", key="holder", timeout=TAKE_OVER_T, budget=0)  # type: ignore[attr-defined]
            granted = time.monotonic_ns()
            waiter = lab.child()
            try:
                waiter.send("w next")
                reply = waiter.line(timeout=TAKE_OVER_T * 6)
                samples.append((int(reply.split()[1]) - granted) / 1e9 - TAKE_OVER_T if reply else float("inf"))
                if reply:
                    waiter.send("r next")
                    waiter.line()
            finally:
                waiter.close()
    finally:
        traffic.close()
    return samples


def connection_budget(limit: int) -> Tuple[int, str]:
    """How many waiting clients fit a server of ``max_connections = limit``: waiters are added on a
    held board until one cannot connect; (how many queued, the server's count of connections then)."""
    import psycopg

    from mq.pgengine import PgEngine, schema

    server = pgserver.start_server(extra=f"max_connections = {limit}\n")
    children: List[Child] = []
    try:
        conninfo = server.create_database("mq_budget")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.init(conn)
        lab = Lab("postgresql", conninfo, PgEngine(conninfo, parse_inventory(LAB_TOML, "lab.toml")))
        lab.engine.wait("b1", key="holder", budget=0)  # type: ignore[attr-defined]
        while True:
            try:
                child = lab.child()
            except AssertionError:
                break  # it could not even start (no connection for its engine)
            children.append(child)
            child.send(f"w w{len(children)}")
            deadline = time.monotonic() + 30
            while lab.queued() < len(children) and child.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if child.proc.poll() is not None or lab.queued() < len(children):
                break
        queued = lab.queued()
        used = lab.engine.link.run(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0])
        lab.engine.close()  # type: ignore[attr-defined]
        return queued, f"{used} client connections in use then"
    finally:
        for child in children:
            child.close()
        server.destroy()


def lock_loss(lab: Lab, rounds: int, idle: float) -> Tuple[List[float], float]:
    """Milliseconds from a forced release of a watched ``run`` lock to the watcher's knowing;
    and the watching child's CPU (% of one core) over ``idle`` seconds before the first."""
    samples: List[float] = []
    idle_cpu = 0.0
    for index in range(rounds):
        child = lab.child()
        try:
            child.send("l job")
            assert child.line(timeout=30) == "W"
            if index == 0:
                before = child.cpu_ticks()
                time.sleep(idle)
                idle_cpu = 100.0 * (child.cpu_ticks() - before) / os.sysconf("SC_CLK_TCK") / idle
            time.sleep(0.05)
            released = time.monotonic_ns()
            lab.engine.signal("b1", force=True)  # type: ignore[attr-defined]
            reply = child.line(timeout=NOTICE_LIMIT)
            samples.append((int(reply.split()[1]) - released) / 1e6 if reply else float("inf"))
        finally:
            child.close()
    return samples, idle_cpu


def show(label: str, samples: List[float], unit: str = "ms") -> str:
    if not samples:
        return f"{label}: no samples"
    missed = sum(1 for s in samples if s == float("inf"))
    if missed:
        return f"{label}: {missed} of {len(samples)} rounds not noticed within {NOTICE_LIMIT:.0f} s"
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{label}: median {statistics.median(samples):.1f} {unit}, p90 {p90:.1f}, max {max(samples):.1f} " \
           f"({len(samples)} rounds)"


def speed(labs: List[Lab], quick: bool, rounds: int) -> None:
    """Sections 1 and 2: hand-off, uncontended and pooled grants, round trips."""
    handoffs = {lab.kind: handoff(lab, rounds) for lab in labs}
    print("\n1. hand-off latency (release -> next waiter's grant)")
    for kind, samples in handoffs.items():
        print("   " + show(f"{kind:10s}", samples))
    ratio = statistics.median(handoffs["postgresql"]) / statistics.median(handoffs["file"])
    print(f"   ratio of medians postgresql / file: {ratio:.2f} (target <= 1.5)")
    print(f"   target: median <= {TARGET_HANDOFF_MS:.0f} ms")
    print("\n2. uncontended grants (wait + release) per second")
    rates = {lab.kind: grants_per_second(lab, 2.0 if quick else 5.0) for lab in labs}
    for kind, rate in rates.items():
        print(f"   {kind:10s}: {rate:.0f}/s")
    print(f"   ratio postgresql / file: {rates['postgresql'] / rates['file']:.2f} (target >= 0.40)")
    print(f"   {POOL_CLIENTS} clients cycling on the pool trio (3 boards), grants per second:")
    pooled = {lab.kind: pool_cycling(lab, POOL_CLIENTS, 3.0 if quick else 8.0) for lab in labs}
    for kind, rate in pooled.items():
        print(f"   {kind:10s}: {rate:.0f}/s")
    print(f"   ratio postgresql / file: {pooled['postgresql'] / pooled['file']:.2f} (target >= 0.50)")
    print("   round trips (statements) per operation, PostgreSQL, after connecting:")
    for name, count in round_trips(labs[1]).items():
        print(f"   {name}: {count}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--waiters", type=int, default=None)
    parser.add_argument("--grace", type=float, default=30.0, help="the PostgreSQL queue's grace period (restarts)")
    parser.add_argument("--connections", action="store_true", help="only: how many waiters fit max_connections 100")
    args = parser.parse_args()
    rounds = 10 if args.quick else 30
    waiters = args.waiters or (100 if args.quick else 300)
    if not pgserver.available():
        print(f"needs the PostgreSQL server binaries ({pgserver.pg_bin()})", file=sys.stderr)
        return 1
    if args.connections:
        queued, used = connection_budget(100)
        print(f"max_connections = 100 (3 reserved): {queued} waiting clients fit ({used}); mq check --host "
              "shows the room left")
        return 0
    import psycopg

    from mq.pgengine import PgEngine, inventory_store, schema

    server = pgserver.start_server()
    tmp = tempfile.mkdtemp(prefix="mq-bench-pg-")
    try:
        conninfo = server.create_database("mq_bench")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.init(conn)
            inventory_store.store(conn, parse_inventory(LAB_TOML, "lab.toml"), LAB_TOML)
        with open(os.path.join(tmp, "lab.toml"), "w") as toml:
            toml.write(LAB_TOML)
        inventory = parse_inventory(LAB_TOML, "lab.toml")
        labs = [Lab("file", tmp, Engine(tmp, parse_inventory(LAB_TOML, os.path.join(tmp, "lab.toml")))),
                Lab("postgresql", conninfo, PgEngine(conninfo, inventory))]
        print(f"PostgreSQL engine vs file engine, one machine ({os.cpu_count()} cores), {server.conninfo()}")
        speed(labs, args.quick, rounds)
        print(f"\n3. {waiters} concurrent idle waiters (CPU of all waiter processes over 10 s)")
        for lab in labs:
            percent, memory = idle_waiters(lab, waiters, 10.0, server if lab.kind == "postgresql" else None)
            print(f"   {lab.kind:10s}: {percent:.2f} % of one core" + (f"; server {memory}" if memory else ""))
        print(f"   target: < {TARGET_IDLE_CPU_PCT:.0f} % of a core in total")
        print(f"\n4. a run holder SIGKILLed: time until a sleeping waiter has the board (grace {args.grace:g} s)")
        for lab in labs:
            print("   " + show(f"{lab.kind:10s}", death_notice(lab, args.grace, max(3, rounds // 3))))
        print("   a head waiter SIGKILLed, then the board released: time until the next waiter has it")
        for lab in labs:
            print("   " + show(f"{lab.kind:10s}", head_death(lab, args.grace, max(3, rounds // 3))))
        print(f"\n6. a -T {TAKE_OVER_T} take-over while b2 cycles every {TRAFFIC_EVERY:g} s: seconds past the -T")
        for lab in labs:
            print("   " + show(f"{lab.kind:10s}", take_over(lab, 3), unit="s"))
        print("\n7. the whole command mq sem -info b1 (start to exit), median")
        times = command_times(tmp, conninfo, 10 if args.quick else 30)
        for kind, median in times.items():
            print(f"   {kind:10s}: {median:.1f} ms")
        print(f"   ratio postgresql / file: {times['postgresql'] / times['file']:.2f} (target <= 1.4)")
        print("\n5. a running job's lock force-released: time until its watch knows")
        for lab in labs:
            samples, idle_cpu = lock_loss(lab, max(3, rounds // 3), 10.0)
            print("   " + show(f"{lab.kind:10s}", samples) + f"; watching idle: {idle_cpu:.2f} % of one core")
    finally:
        server.destroy()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
