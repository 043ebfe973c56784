"""The PostgreSQL queue under faults (issue 20, item 9), on a real server of each test's own.

**Eight clients under one fault, again and again** (``test_sigkill_of_random_waiters`` ...
``test_sigkill_of_a_server_backend``). Eight client processes (``CLIENT``: the engine API
as the CLI uses it) loop on a small lab, boards ``b1`` and ``b2`` and the pool ``pair`` of
both: ``wait`` for a random one of the three, then a *witness*: ``WITNESS/<board>`` is
created exclusively (``link(2)`` of a file that already names its creator: O_EXCL's
semantics, never seen empty), kept 10-100 ms and removed before the release. A witness
already there is a double grant, written to ``doubles`` (the loop goes on), unless a
killed ``run`` holder left it: a dead ``run`` lock is reclaimed by design, so the next
holder replaces that one (counted as ``stale``). Five clients are ``sem`` users (``sem
-wait``, which confirms its grant once reported, and ``sem -signal`` are commands of their
own: one engine each), three are ``run`` jobs (``session=True``: one engine for the wait,
the job's lock watch and the release, as ``mq run``). Each logs every step with
``time.monotonic()`` to a JSONL file of its own; ``reconnect:`` lines and errors go to its
stderr.

A supervisor (``Harness``) keeps eight clients running: a killed one, or one that exited
with ``PlaceLost``, is replaced by a new process with a new key. A killed ``sem`` holder's
confirmed lock stays (it is not bound to a connection): the supervisor, as an operator
would, removes its witness and releases it. After each fault every live client must get a
grant within ``PROGRESS_BOUND`` seconds; at the end every client is asked to stop after its
next release, and each must exit 0 within the bound (one that lost its place would wait
for ever). Asserted: no double grant; every grant a client was told about is in the audit
log; no lost place (every live client progresses; none exits with an error; ``PlaceLost``,
exit 9, only for a client the test stopped, whose session may be ended meanwhile by
design); no traceback on any stderr; nothing held or queued at the end. Printed (``-s``),
for every fault of the run so far: grants, double grants, lost places, the longest time a
free board stood idle while a live client wanted it, the longest time no board was granted
while someone waited (stall), and the longest time until every live client had a grant
again after a fault (recovery). ``PG_FAULT_CYCLES`` and ``PG_FAULT_SEED`` change the cycles
and the seed for a run by hand. docs/reliability.md has the figures.

**The same faults at one chosen moment** (the tests after them): a run lock released
through an outage its watch saw; a running job's lock cut off, or lost to a backend crash;
a restart that swallows the acknowledgement of a COMMIT (``CommitCutter``, a TCP proxy);
a client stopped inside its own transaction until the server ends its session.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pgserver
from blackhole import BlackHole
from conftest import PROMPT, proc_state, wait_for

psycopg = pytest.importorskip("psycopg")

from mq.engine.core.errors import NotAcquiredError, NotHolderError  # noqa: E402
from mq.engine.core.inventory import parse_inventory  # noqa: E402
from mq.pgengine import PgEngine, schema, session  # noqa: E402
from mq.pgengine.rows import OWNER_CLASS  # noqa: E402

pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

LAB = """
[systems.b1]
arch = "arm"
[systems.b2]
arch = "arm"
[pools.pair]
systems = ["b1", "b2"]
"""
INVENTORY = parse_inventory(LAB, "lab.toml")
BOARDS = ("b1", "b2")
GRACE = 10.0
CLIENTS = 8
RUN_SLOTS = frozenset({0, 1, 2})  # these hold ``run`` locks (session=True); the others are ``sem`` users
PROGRESS_BOUND = 60.0  # s: after a fault, every live client has a new grant within this (a loaded 2-core
# machine runs eight clients and a server, and clients replacing killed ones take a second or more to start)
STOP_FOR = 12.0  # s a client stays SIGSTOPped (the fault itself: past idle_in_transaction_session_timeout, 10 s)
POSTMASTER_STOP_FOR = 5.0  # s the postmaster stays SIGSTOPped
STALL_ONE_FOR = 30.0  # s one client's link stays stalled (past SILENT_LIMIT: it is found silent)
STALL_ALL_FOR = 15.0  # s every client's link stays stalled
DATABASE = "mq_faults"
PLACE_LOST = 9  # ExitCode.SSH: the documented exit of a client whose own connection was cut
HELD_OWNER_LOCKS = ("SELECT objid, pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' "  # noqa: S608
                    f"AND classid = {OWNER_CLASS} ORDER BY objid")  # the owners' liveness locks, for a diagnosis
FIGURES: list[dict[str, Any]] = []  # every fault's figures in this run, printed after each test

# One client: loops until the stop file exists. argv: conninfo, the lab's TOML, slot, key, mode (sem|run),
# the witness directory, its log, the doubles file, the stop file, grace, seed.
CLIENT = r'''
import json, os, random, sys, time
from mq.engine.core.inventory import parse_inventory
from mq.pgengine import PgEngine
from mq.pgengine.link import PlaceLost

conninfo, toml, slot, key, mode, wdir, log_path, doubles_path, stop_path, grace, seed = sys.argv[1:12]
conninfo += f" application_name=mqf{os.getpid()}"  # the test finds this client's backends by it
inventory = parse_inventory(toml, "lab.toml")
run = mode == "run"
rng = random.Random(int(seed))
log = open(log_path, "a", buffering=1)


def note(event, **fields):
    log.write(json.dumps({"ev": event, "t": time.monotonic(), **fields}) + "\n")


def told(message):
    print("reconnect:", message, file=sys.stderr, flush=True)


def engine():
    return PgEngine(conninfo, inventory, grace=float(grace), on_reconnect=told)


def start_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None, "X"
    return fields[19], fields[0]


START = start_of(os.getpid())[0]


def dead(pid, start):
    now, state = start_of(pid)
    return now != start or state in ("Z", "X")


def double(board, other):
    with open(doubles_path, "a") as out:
        out.write(json.dumps({"t": time.monotonic(), "board": board, "pid": os.getpid(), "key": key,
                              "other": other}) + "\n")
    note("double", board=board, other=other)


def witness(board, grant):
    """True: this client's witness is in place; False: a double grant (recorded)."""
    mine = json.dumps({"pid": os.getpid(), "start": START, "run": run, "key": key, "grant": grant})
    tmp = os.path.join(wdir, "tmp", f"{os.getpid()}-{grant}")
    with open(tmp, "w") as out:
        out.write(mine)
    path = os.path.join(wdir, board)
    try:
        while True:
            try:
                os.link(tmp, path)
                note("witness", board=board)
                return True
            except FileExistsError:
                pass
            try:
                with open(path) as found:
                    text = found.read()
                other = json.loads(text)
            except FileNotFoundError:  # it was there when this client was granted the board: a double
                double(board, None)
                return False
            if other["run"] and dead(other["pid"], other["start"]):  # a killed run holder's: reclaimed by design
                note("stale", board=board, other=other)
                with open(path) as again:
                    if again.read() == text:
                        os.unlink(path)
                continue
            double(board, other)
            return False
    finally:
        os.unlink(tmp)


def unwitness(board):
    path = os.path.join(wdir, board)
    with open(path) as found:
        other = json.loads(found.read())
    if other["pid"] != os.getpid():
        double(board, other)
        return
    os.unlink(path)


note("start", pid=os.getpid(), key=key, mode=mode)
it = 0
while not os.path.exists(stop_path):
    it += 1
    target = rng.choice(["b1", "b2", "pair"])
    note("queued", it=it, target=target)
    eng = engine()
    try:
        try:
            grant = eng.wait(target, key=key, session=run)
        except PlaceLost as exc:
            note("placelost", where="wait")
            print(f"mq: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(9)
        board = grant.board
        note("grant", board=board, grant=grant.grant, waited=grant.waited, target=target,
             reclaimed_from=grant.reclaimed_from)
        if not run:  # as sem -wait does once it has reported the grant: from then on the lock outlives the
            eng.confirm(board, grant.grant)  # client (before, it goes with the client's connection)
        watch = eng.watch_run_lock(board, key, grant.grant, lambda loss: None) if run else None
        held = witness(board, grant.grant)
        time.sleep(rng.uniform(0.01, 0.1))  # the job
        if held:
            unwitness(board)
        note("unwitness", board=board)
        if watch is not None:
            loss = watch.stop()
            if loss is not None:
                note("run-lock-lost", board=board, why=loss.why)
            try:
                kept = eng.end_session_lock(board, key, reason="run ended")
            except PlaceLost as exc:
                note("placelost", where="release")
                print(f"mq: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(9)
            note("released", board=board, ok=kept)
    finally:
        eng.close()
    if not run:
        with engine() as releaser:  # sem -signal: a command of its own
            releaser.signal(board, key=key)
        note("released", board=board, ok=True)
note("stop")
'''


@dataclass
class Client:
    """One client process (one incarnation of a slot)."""

    slot: int
    key: str
    mode: str  # "sem" or "run"
    proc: subprocess.Popen[bytes]
    log: Path
    err: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    ended: float | None = None  # time.monotonic() when found ended
    code: int | None = None
    killed: bool = False
    stopped: bool = False  # SIGSTOPped by the test at some point: PlaceLost is by design for it
    _offset: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> list[dict[str, Any]]:
        """Its events so far (a line cut short by a kill is left out)."""
        with contextlib.suppress(FileNotFoundError), open(self.log, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
        return self.events

    def last(self) -> str | None:
        events = self.read()
        return events[-1]["ev"] if events else None

    def granted_after(self, since: float) -> bool:
        return any(e["ev"] == "grant" and e["t"] > since for e in self.read())

    def grants(self) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["ev"] == "grant"]


@dataclass
class Hold:
    board: str
    start: float
    end: float | None  # None: never freed


class Harness:
    """The supervisor: eight clients, their faults, their figures."""

    def __init__(self, server: pgserver.PgServer, conninfo: str, root: Path, grace: float = GRACE,
                 proxies: dict[int, BlackHole] | None = None) -> None:
        self.server = server
        self.conninfo = conninfo
        self.proxies = proxies or {}  # slot -> the proxy its clients connect through (the black-hole faults)
        self.root = root
        self.grace = grace
        self.witness = root / "witness"
        (self.witness / "tmp").mkdir(parents=True)
        self.logs = root / "logs"
        self.logs.mkdir()
        self.doubles = root / "doubles"
        self.doubles.touch()
        self.stop_file = root / "stop"
        self.seed = int(os.environ.get("PG_FAULT_SEED", os.getpid()))  # printed with the figures
        self.rng = random.Random(self.seed)
        self.stopped_inside = 0  # SIGSTOPs that landed inside a client's transaction
        self.current: dict[int, Client] = {}
        self.history: list[Client] = []
        self.generation = 0
        self.stopping = False
        self.released: list[dict[str, Any]] = []  # the supervisor's releases of killed sem holders' locks
        self.recoveries: list[float] = []  # per fault: seconds until every live client had a grant again
        self.started = time.monotonic()
        self.engine = PgEngine(conninfo, INVENTORY, grace=grace)
        self.wall_offset = time.time() - time.monotonic()

    # -- the clients --------------------------------------------------------------------------
    def start(self) -> None:
        for slot in range(CLIENTS):
            self.spawn(slot)
        self.await_progress(self.started, "every client's first grant")
        self.started = time.monotonic()
        self.recoveries.clear()

    def spawn(self, slot: int) -> Client:
        self.generation += 1
        key = f"s{slot}g{self.generation}"
        mode = "run" if slot in RUN_SLOTS else "sem"
        log, err = self.logs / f"{key}.jsonl", self.logs / f"{key}.err"
        with open(err, "wb") as stderr:
            proxy = self.proxies.get(slot)
            conninfo = self.conninfo if proxy is None else self.server.tcp_conninfo(DATABASE, port=proxy.port)
            proc = subprocess.Popen([sys.executable, "-c", CLIENT, conninfo, LAB, str(slot), key, mode,
                                     str(self.witness), str(log), str(self.doubles), str(self.stop_file),
                                     str(self.grace), str(self.rng.randrange(1 << 30))],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        client = Client(slot=slot, key=key, mode=mode, proc=proc, log=log, err=err)
        self.current[slot] = client
        self.history.append(client)
        return client

    def live(self) -> list[Client]:
        return [c for c in self.current.values() if c.ended is None]

    def reap(self) -> None:
        """Note the clients that ended; replace them (unless the run is stopping)."""
        for slot, client in list(self.current.items()):
            if client.ended is None and client.proc.poll() is not None:
                client.ended, client.code = time.monotonic(), client.proc.returncode
                if not self.stopping:
                    self.spawn(slot)

    def kill(self, client: Client) -> None:
        """SIGKILL ``client``; what a killed ``sem`` holder keeps (by design) is released as an operator
        would; a new client takes its slot."""
        client.killed = True
        os.kill(client.pid, signal.SIGKILL)
        client.proc.wait(timeout=30)
        client.ended, client.code = time.monotonic(), client.proc.returncode
        for board in BOARDS:  # its witness first: nobody can be granted the board before the release below
            path = self.witness / board
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(path.read_text())["pid"] == client.pid and client.mode == "sem":
                    path.unlink()
        if client.mode == "sem":  # (a grant it had not confirmed yet went with it: the next waiter reclaims it)
            for state in self.engine.info("pair"):
                if state.holder is not None and state.holder.key == client.key:
                    with contextlib.suppress(NotHolderError):  # reclaimed meanwhile
                        self.engine.signal(state.board, key=client.key)
                        self.released.append({"t": time.monotonic(), "board": state.board, "key": client.key})
        self.spawn(client.slot)

    def await_progress(self, since: float, what: str, bound: float = PROGRESS_BOUND) -> float:
        """Wait until every live client has a grant after ``since``; the seconds that took."""

        def progressed() -> bool:
            self.reap()
            return all(c.granted_after(since) for c in self.live())

        try:
            wait_for(progressed, timeout=bound, what=f"{what}: every live client granted a board again", step=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis(since)}") from None
        took = time.monotonic() - since
        self.recoveries.append(took)
        return took

    def diagnosis(self, since: float) -> str:
        """What a failed wait shows: the clients still without a grant (their last steps and stderr),
        the last client that failed, and the queue's rows."""
        lines = []
        for client in self.live():
            if not client.granted_after(since):
                lines.append(f"{client.key} (pid {client.pid}) last steps {client.read()[-3:]}; stderr: "
                             f"{client.err.read_text()[-800:]!r}")
        failed = [c for c in self.history if c.ended is not None and not c.killed and c.code != 0]
        if failed:
            lines.append(f"the last client that failed, {failed[-1].key}: {failed[-1].err.read_text()[-1500:]!r}")
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.conninfo, autocommit=True) as conn:
            for table, columns in (("mq_tickets", "seq, key, target, owner, cancelled"),
                                   ("mq_locks", "board, key, grant_no, session, session_owner"),
                                   ("mq_owners", "id, pid, backend_pid, lost_at, server_start")):
                lines.append(f"{table}: {conn.execute(f'SELECT {columns} FROM {table}').fetchall()}")  # noqa: S608
            lines.append(f"owner locks held: {conn.execute(HELD_OWNER_LOCKS).fetchall()}")
        return "\n".join(lines)

    def holding(self, mode: str) -> Client | None:
        """A client of ``mode`` between its witness and its release, if one is."""
        found = [c for c in self.live() if c.mode == mode and c.last() == "witness"]
        return self.rng.choice(found) if found else None

    def waiting(self) -> Client | None:
        found = [c for c in self.live() if c.last() == "queued"]
        return self.rng.choice(found) if found else None

    def backends(self, client: Client) -> list[str]:
        """The states of ``client``'s server backends, but for its death watch's (always ``active``:
        it waits on a liveness lock by design)."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return [str(state) for state, query in conn.execute(
                "SELECT state, query FROM pg_stat_activity WHERE application_name = %s", (f"mqf{client.pid}",))
                if not (state == "active" and str(query).startswith("SELECT pg_advisory_lock_shared"))]

    def stop(self) -> float:
        """Every client stops after its next release; each must get there (none lost its place)."""
        self.stopping = True
        asked = time.monotonic()
        self.stop_file.touch()

        def all_ended() -> bool:
            self.reap()
            return not self.live()

        try:
            wait_for(all_ended, timeout=PROGRESS_BOUND, what="every client's last grant and exit", step=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis(asked)}") from None
        return time.monotonic() - asked

    def close(self) -> None:
        for client in self.history:
            if client.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, signal.SIGCONT)
                client.proc.kill()
            client.proc.wait(timeout=30)
        self.engine.close()

    # -- what happened ----------------------------------------------------------------------
    def audit_grants(self) -> dict[int, tuple[str, str, float]]:
        """grant number -> (board, key, time.monotonic() of the grant) from the audit log."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            rows = conn.execute("SELECT board, fields->>'key', (fields->>'grant')::bigint, time FROM mq_audit "
                                "WHERE event = 'grant'").fetchall()
        return {int(grant): (board, key, float(when) - self.wall_offset) for board, key, grant, when in rows}

    def double_grants(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.doubles.read_text().splitlines()]

    def holds(self) -> dict[str, list[Hold]]:
        """Every board's holds, from the clients' logs (and the audit log for grants a killed client
        never logged): when granted, when free again."""
        by_key = {c.key: c for c in self.history}
        freed = {(r["board"], r["key"]): r["t"] for r in self.released}
        holds: dict[str, list[Hold]] = {b: [] for b in BOARDS}

        def death(client: Client, board: str) -> float | None:
            if client.mode == "sem":  # a confirmed lock outlived it until the supervisor released it
                return freed.get((board, client.key), client.ended)
            return client.ended

        logged = set()
        for client in self.history:
            open_hold: Hold | None = None
            for event in client.read():
                if event["ev"] == "grant":
                    logged.add(event["grant"])
                    open_hold = Hold(event["board"], event["t"], None)
                    holds[event["board"]].append(open_hold)
                elif event["ev"] == "released" and open_hold is not None:
                    open_hold.end, open_hold = event["t"], None
            if open_hold is not None:
                open_hold.end = death(client, open_hold.board)
        for number, (board, key, when) in self.audit_grants().items():
            granted = by_key.get(key)
            if number not in logged and granted is not None:
                holds[board].append(Hold(board, when, death(granted, board)))
        for board in BOARDS:
            holds[board].sort(key=lambda h: h.start)
        return holds

    def wants(self, end: float) -> dict[str, list[tuple[float, float]]]:
        """Every board's wanted intervals: a live client queued for it (or a pool with it), until its
        grant, its death or ``end``."""
        wanted: dict[str, list[tuple[float, float]]] = {b: [] for b in BOARDS}
        for client in self.history:
            queued: tuple[float, str] | None = None
            for event in client.read():
                if event["ev"] == "queued":
                    queued = (event["t"], event["target"])
                elif event["ev"] in ("grant", "placelost") and queued is not None:
                    for board in INVENTORY.members(queued[1]):
                        wanted[board].append((queued[0], event["t"]))
                    queued = None
            if queued is not None:
                for board in INVENTORY.members(queued[1]):
                    wanted[board].append((queued[0], client.ended if client.ended is not None else end))
        return wanted

    def longest_idle(self, start: float, end: float) -> tuple[float, str]:
        """The longest time a free board stood idle while a live client wanted it, from ``start``."""
        holds, wants = self.holds(), self.wants(end)
        longest, where = 0.0, "-"
        for board in BOARDS:
            series = holds[board]
            for hold, following in zip(series, [*series[1:], None], strict=True):
                free_from = hold.end
                free_until = following.start if following is not None else end
                if free_from is None or free_until <= max(free_from, start):
                    continue
                stretch = _longest_cover(wants[board], max(free_from, start), free_until)
                if stretch > longest:
                    longest, where = stretch, f"{board} at +{max(free_from, start) - self.started:.1f} s"
        return longest, where

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time no board at all was granted while some live client waited, from ``start``."""
        wants = [span for spans in self.wants(end).values() for span in spans]
        times = sorted(h.start for holds in self.holds().values() for h in holds if start <= h.start <= end)
        return max((_longest_cover(wants, a, b) for a, b in zip([start, *times], [*times, end], strict=True)),
                   default=0.0)

    def figures(self, fault: str, cycles: int, notes: str, drained: float) -> dict[str, Any]:
        end = time.monotonic()
        grants = sum(len(c.grants()) for c in self.history)
        idle, where = self.longest_idle(self.started, end)
        stall = self.longest_stall(self.started, end - drained)
        lost_by_design = [c for c in self.history if c.code == PLACE_LOST and c.stopped]
        figures = {
            "fault": fault, "cycles": cycles, "grants": grants, "doubles": len(self.double_grants()),
            "lost": len(self.lost_places()), "placelost_by_design": len(lost_by_design),
            "stopped_in_transaction": self.stopped_inside,
            "stale": sum(1 for c in self.history for e in c.read() if e["ev"] == "stale"),
            "killed": sum(c.killed for c in self.history), "idle": round(idle, 2), "idle_where": where,
            "stall": round(stall, 2),
            "recovery": round(max(self.recoveries, default=0.0), 2), "drained": round(drained, 2),
            "seconds": round(end - self.started, 1), "notes": f"{notes} (seed {self.seed})",
        }
        FIGURES.append(figures)
        print_table(figures)
        return figures

    def lost_places(self) -> list[Client]:
        """Clients that ended other than by the stop, a kill of the test's or a PlaceLost by design."""
        return [c for c in self.history if c.ended is not None and not c.killed and c.code != 0
                and not (c.code == PLACE_LOST and c.stopped)]

    def check(self) -> None:
        """The promises, after the run."""
        assert self.double_grants() == []
        logged = {e["grant"]: (e["board"], c.key) for c in self.history for e in c.grants()}
        audited = self.audit_grants()
        missing = {n: logged[n] for n in logged if (audited.get(n) or ("", "", 0.0))[:2] != logged[n]}
        assert missing == {}, "grants clients were told about are not in the audit log"
        lost = self.lost_places()
        assert lost == [], [(c.key, c.code, c.err.read_text()[-2000:]) for c in lost]
        told = {c.key: c.err.read_text() for c in self.history}
        assert {k: e for k, e in told.items() if "Traceback" in e} == {}
        placelost = [c.key for c in self.history if any(e["ev"] == "placelost" for e in c.read())]
        assert all(c.stopped for c in self.history if c.key in placelost), placelost
        lost_locks = [(c.key, e) for c in self.history for e in c.read() if e["ev"] == "run-lock-lost"
                      or (e["ev"] == "released" and not e["ok"])]
        assert all(by_key_stopped(self.history, key) for key, _ in lost_locks), lost_locks
        with PgEngine(self.conninfo, INVENTORY, grace=self.grace) as engine:
            states = engine.info("pair")
        held = [(s.board, s.holder.key) for s in states if s.holder is not None and s.holder.session != "dead"]
        assert held == [] and [t.key for s in states for t in s.waiters] == []


def by_key_stopped(history: list[Client], key: str) -> bool:
    return any(c.key == key and c.stopped for c in history)


def _longest_cover(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """The longest stretch of [start, end] covered by the union of ``intervals``."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    longest, run_from, run_to = 0.0, None, None
    for a, b in clipped:
        if run_to is None or a > run_to:
            if run_from is not None and run_to is not None:
                longest = max(longest, run_to - run_from)
            run_from, run_to = a, b
        else:
            run_to = max(run_to, b)
    if run_from is not None and run_to is not None:
        longest = max(longest, run_to - run_from)
    return longest


COLUMNS = (("fault", "fault"), ("cycles", "cycles"), ("grants", "grants"), ("doubles", "double grants"),
           ("lost", "lost places"), ("placelost_by_design", "PlaceLost (stopped)"),
           ("stopped_in_transaction", "stopped in a transaction"), ("killed", "killed"), ("stale", "stale witnesses"),
           ("idle", "longest idle board (s)"), ("stall", "longest stall (s)"), ("recovery", "longest recovery (s)"),
           ("seconds", "run (s)"))


def print_table(current: dict[str, Any]) -> None:
    print(f"\n{current['fault']}: {current['notes']}; longest idle: {current['idle_where']}")
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in FIGURES:
        print("| " + " | ".join(str(row[name]) for name, _ in COLUMNS) + " |")


# -- the server and the harness ---------------------------------------------------------------
@pytest.fixture
def fault_server() -> Iterator[pgserver.PgServer]:
    """A server of this test's own, to restart and stop (continued before it is destroyed)."""
    server = pgserver.start_server()
    yield server
    with contextlib.suppress(OSError, ValueError):
        os.kill(server.postmaster_pid(), signal.SIGCONT)
    server.destroy()


@pytest.fixture
def harness(fault_server: pgserver.PgServer, tmp_path: Path) -> Iterator[Harness]:
    conninfo = fault_server.create_database(DATABASE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    lab = Harness(fault_server, conninfo, tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def proxied_harness(tmp_path: Path) -> Iterator[Harness]:
    """The harness on a server over TCP, each slot's clients through a ``BlackHole`` of its own."""
    server = pgserver.start_server(tcp=True)
    proxies = {slot: BlackHole(server.port) for slot in range(CLIENTS)}
    try:
        conninfo = server.create_database(DATABASE)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.init(conn)
        lab = Harness(server, conninfo, tmp_path, proxies=proxies)
        try:
            lab.start()
            yield lab
        finally:
            lab.close()
    finally:
        for proxy in proxies.values():
            proxy.close()
        server.destroy()


def cycles(default: int) -> int:
    """Fault cycles per test (``PG_FAULT_CYCLES`` overrides, for a longer run by hand)."""
    return int(os.environ.get("PG_FAULT_CYCLES", default))


def finish(lab: Harness, fault: str, count: int, notes: str) -> dict[str, Any]:
    drained = lab.stop()
    figures = lab.figures(fault, count, notes, drained)
    lab.check()
    return figures


# -- the faults ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_of_random_waiters(harness: Harness) -> None:
    count = cycles(8)
    for _ in range(count):
        for _ in range(2):
            victim = wait_for(harness.waiting, what="a waiting client")
            assert isinstance(victim, Client)
            harness.kill(victim)
        harness.await_progress(time.monotonic(), "after two waiters were killed")
    finish(harness, "SIGKILL of waiters", count, "two random waiters killed per cycle")


@pytest.mark.slow
def test_sigkill_of_holders(harness: Harness) -> None:
    """A killed ``run`` holder's lock is reclaimed by the next waiter (its witness is stale); a killed
    ``sem`` holder's lock stays (by design) until the supervisor releases it."""
    count = cycles(8)
    for cycle in range(count):
        mode = "run" if cycle % 2 == 0 else "sem"
        victim = wait_for(functools.partial(harness.holding, mode), what=f"a {mode} client holding a board")
        assert isinstance(victim, Client)
        harness.kill(victim)
        harness.await_progress(time.monotonic(), f"after a {mode} holder was killed")
    figures = finish(harness, "SIGKILL of holders", count, "holders killed between witness and release, run and "
                     f"sem in turn; {len(harness.released)} killed sem holders' locks stayed, released by the test")
    assert figures["stale"] >= 1  # at least one killed run holder's lock was reclaimed under its witness
    assert harness.released  # and at least one killed sem holder's (confirmed) lock outlived it


@pytest.mark.slow
def test_sigstop_of_clients(harness: Harness) -> None:
    """A client stopped for 12 s at a random moment. Every step of a client is one call of the
    server's (one transaction there), so a stopped client never has a transaction open: the queue
    lock is never waited on a client; a stopped waiter keeps its place (it beats again when
    continued, within ``SILENT_LIMIT``)."""
    count = cycles(4)
    for _ in range(count):
        victim = harness.rng.choice(harness.live())
        victim.stopped = True
        time.sleep(harness.rng.uniform(0, 0.05))  # a random moment
        os.kill(victim.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(functools.partial(_stopped, victim.pid), what="the client stopped")
        states = wait_for(functools.partial(_settled, harness, victim), what="its backends idle")
        assert isinstance(states, list)
        assert not _in_transaction(states), states  # nothing of mq's waits on a stopped client
        time.sleep(max(0.0, stopped_at + STOP_FOR - time.monotonic()))  # the fault lasts this long
        frozen_grants = sum(1 for c in harness.history for e in c.grants() if e["t"] > stopped_at)
        os.kill(victim.pid, signal.SIGCONT)
        assert frozen_grants > 0, "no grant at all while one client was stopped"
        harness.await_progress(time.monotonic(), "after a stopped client was continued")
    finish(harness, "SIGSTOP of a client (12 s)", count, "none had a transaction open")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart(harness: Harness, mode: str) -> None:
    count = cycles(3)
    for _ in range(count):
        harness.server._pg_ctl("restart", "-m", mode)
        harness.await_progress(time.monotonic(), f"after pg_ctl restart -m {mode}")
    finish(harness, f"pg_ctl restart -m {mode}", count, "every client reconnects and takes its place back")


@pytest.mark.slow
def test_sigstop_of_the_postmaster(harness: Harness) -> None:
    count = cycles(3)
    for _ in range(count):
        postmaster = harness.server.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)
        try:
            time.sleep(POSTMASTER_STOP_FOR)  # the fault lasts this long
        finally:
            os.kill(postmaster, signal.SIGCONT)
        harness.await_progress(time.monotonic(), "after the postmaster was continued")
    finish(harness, "SIGSTOP of the postmaster (5 s)", count, "no new connection while it is stopped")


@pytest.mark.slow
def test_sigkill_of_a_server_backend(harness: Harness) -> None:
    """One client's server backend killed (as the OOM killer does): the postmaster ends every other
    backend and recovers, without a new start time."""
    count = cycles(3)
    for _ in range(count):
        victim = harness.rng.choice(harness.live())
        with psycopg.connect(harness.conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s LIMIT 1",
                               (f"mqf{victim.pid}",)).fetchone()
        if row is None:
            continue
        os.kill(int(row[0]), signal.SIGKILL)
        harness.await_progress(time.monotonic(), "after a server backend was killed")
    finish(harness, "SIGKILL of a server backend", count, "crash recovery by the same postmaster")


@pytest.mark.slow
def test_a_black_hole_stalls_one_client_then_all(proxied_harness: Harness) -> None:
    """A link stalled above TCP (``BlackHole``: no reset, both kernels still acknowledging, so no
    keepalive fires): first one client's for ``STALL_ONE_FOR`` (past ``SILENT_LIMIT``; a waiting
    client when there is one, so a silent head of a queue is met), while the others go on, then every
    client's for ``STALL_ALL_FOR``. A stalled client finds its beats unanswered and gives the
    connection up; one found silent is ended by the others and told its place is gone when it can
    reconnect (exit 9, by design), and a new client takes its slot."""
    lab = proxied_harness
    count = cycles(2)
    for _ in range(count):
        victim = lab.waiting() or lab.rng.choice(lab.live())
        victim.stopped = True  # (cut off: a PlaceLost is by design for it)
        lab.proxies[victim.slot].stall()
        stalled_at = time.monotonic()
        wait_for(lambda since=stalled_at: sum(1 for c in lab.history for e in c.grants() if e["t"] > since) >= 3,
                 timeout=STALL_ONE_FOR, what="the others granted boards while one client was cut off", step=0.05)
        time.sleep(max(0.0, stalled_at + STALL_ONE_FOR - time.monotonic()))  # the fault lasts this long
        lab.proxies[victim.slot].resume()
        lab.await_progress(time.monotonic(), "after one client's link stalled")
    for client in lab.live():
        client.stopped = True
    for proxy in lab.proxies.values():
        proxy.stall()
    time.sleep(STALL_ALL_FOR)
    for proxy in lab.proxies.values():
        proxy.resume()
    lab.await_progress(time.monotonic(), "after every client's link stalled")
    figures = finish(lab, "black hole: one client, then all", count,
                     f"one client's link stalled {STALL_ONE_FOR:g} s per cycle, then every client's "
                     f"{STALL_ALL_FOR:g} s")
    assert figures["idle"] < session.SILENT_LIMIT + session.HEARTBEAT + PROMPT + STALL_ALL_FOR


def _stopped(pid: int) -> bool:
    return proc_state(pid) in ("T", "Z", "X")


def _settled(harness: Harness, client: Client) -> list[str] | None:
    """Its backends' states once none runs a statement (a stopped client sends nothing more)."""
    states = harness.backends(client)
    return None if "active" in states else states or ["gone"]


def _in_transaction(states: list[str]) -> bool:
    return any(state.startswith("idle in transaction") for state in states)


# -- the same faults, each at one chosen moment -------------------------------------------------
@pytest.fixture
def fault_database(fault_server: pgserver.PgServer) -> str:
    conninfo = fault_server.create_database("mq_fault")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    return conninfo


@pytest.mark.slow
def test_a_run_lock_is_released_through_an_outage_its_watch_saw(fault_server: pgserver.PgServer,
                                                                fault_database: str) -> None:
    """``mq run``'s end: the job's lock watch saw the database go (and was stopped while it was
    reconnecting); the release that follows rides out the outage, as every statement does."""
    told: list[str] = []
    with PgEngine(fault_database, INVENTORY, grace=GRACE, on_reconnect=told.append) as engine:
        grant = engine.wait("b1", key="job", session=True)
        watch = engine.watch_run_lock("b1", "job", grant.grant, lambda loss: None)
        fault_server.stop()
        wait_for(lambda: any(m.startswith("lost the database connection") for m in told), what="the watch saw it")
        assert watch.stop() is None
        back = threading.Timer(3.0, fault_server.start)  # the outage lasts 3 s
        back.start()
        try:
            assert engine.end_session_lock("b1", "job", reason="run ended") is True
        finally:
            back.join()
        assert engine.info("b1")[0].holder is None


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["terminated", "backend-crash"])
def test_a_running_jobs_lock_is_never_handed_on_untold(fault_database: str, cut: str) -> None:
    """A job's client cut off while the server stays up (``terminated``): its lock goes at once, by
    design, and its watch must say so (the job is stopped). A crash of any one backend, after which
    the postmaster ends every other and recovers with the same start time (``backend-crash``, as
    after the OOM killer): either the lock stays the job's, or the job is told before another
    client can have the board."""
    lost: list[object] = []
    with PgEngine(fault_database, INVENTORY, grace=GRACE) as runner:
        grant = runner.wait("b1", key="job", session=True)
        watch = runner.watch_run_lock("b1", "job", grant.grant, lost.append)
        admin = psycopg.connect(fault_database, autocommit=True)
        try:
            if cut == "terminated":
                admin.execute("SELECT pg_terminate_backend(backend_pid) FROM mq_owners WHERE id = %s",
                              (runner.link.owner,))
            else:
                os.kill(admin.info.backend_pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(psycopg.Error):
                admin.close()
        wait_for(lambda: _connects(fault_database), what="the server back")
        try:
            with PgEngine(fault_database, INVENTORY, grace=GRACE) as other:
                try:
                    taken = other.wait("b1", key="next", budget=GRACE / 2)
                except NotAcquiredError:  # kept: still the job's, and its owner live again
                    holder = other.info("b1")[0].holder
                    assert holder is not None and (holder.key, holder.session) == ("job", "live")
                    assert lost == []
                else:  # handed on: the job is told at once
                    wait_for(lambda: lost, timeout=PROMPT, what=f"{taken.board} was handed on (reclaimed from "
                             f"{taken.reclaimed_from!r}) under a running job: its watch telling it")
        finally:
            watch.stop()


def _connects(conninfo: str) -> bool:
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


class CommitCutter:
    """A TCP proxy to the server that restarts it at one chosen moment: once the client has sent
    a statement containing ``marker`` (a call of mq's, one transaction), the server's reply to it
    is held back until it says it is ready for the next query (so the call has committed), then
    dropped; the server is restarted (``pg_ctl restart -m fast``: the commit is durable) and the
    client's connection closed. The client never hears of a commit that happened."""

    def __init__(self, server: pgserver.PgServer, marker: bytes) -> None:
        self.server = server
        self.marker = marker
        self.fired = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def conninfo(self, dbname: str) -> str:
        return (f"host=127.0.0.1 port={self.port} user={self.server.role} dbname={dbname} sslmode=disable "
                "gssencmode=disable")

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            except OSError:  # the server is not up: as if the client had found it so
                client.close()
                continue
            upstream.settimeout(None)  # a connection may stay silent (a waiter asleep) for long
            armed = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, armed), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, armed), daemon=True).start()

    def _up(self, source: socket.socket, sink: socket.socket, armed: threading.Event) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                seen = (seen + data)[-(len(self.marker) + 65536):]
                if self.marker in seen and not self.fired.is_set():
                    armed.set()
                sink.sendall(data)

    def _down(self, source: socket.socket, sink: socket.socket, armed: threading.Event) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                pending += data
                out = b""
                while len(pending) >= 5:  # whole messages: a type byte, a length, the rest
                    end = 1 + struct.unpack("!I", pending[1:5])[0]
                    if len(pending) < end:
                        break
                    message, pending = pending[:end], pending[end:]
                    if armed.is_set() and message[:1] == b"Z":  # ready for the next query: committed
                        self.fired.set()  # (the reply to the call, held back since the marker, is dropped)
                        self.server.restart()
                        for sock in (source, sink):
                            sock.shutdown(socket.SHUT_RDWR)
                            sock.close()
                        return
                    if not armed.is_set():
                        out += message
                sink.sendall(out)


# One wait for b1 and its release, each said as a JSON line (or the error that ended them).
WAIT_AND_RELEASE = r'''
import json, sys
from mq.engine.core.inventory import parse_inventory
from mq.pgengine import PgEngine
engine = PgEngine(sys.argv[1], parse_inventory("[systems.b1]\narch = \"arm\"\n", "lab.toml"), grace=10.0,
                  on_reconnect=lambda message: print("reconnect:", message, file=sys.stderr, flush=True))
try:
    grant = engine.wait("b1", key="K", budget=20)
    print(json.dumps({"board": grant.board, "grant": grant.grant}), flush=True)
    print(json.dumps({"released": [r.board for r in engine.signal("b1", key="K")]}), flush=True)
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
'''


@pytest.fixture
def tcp_server() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server(tcp=True)
    yield server
    server.destroy()


@pytest.mark.slow
@pytest.mark.parametrize(("step", "marker"), [
    ("wait", b"mq_take"),  # the ticket queued and granted at once, in one call
    ("release", b"mq_release"),
])
def test_a_restart_that_swallows_a_commits_acknowledgement(tcp_server: pgserver.PgServer, step: str,
                                                           marker: bytes) -> None:
    """The server restarts after a transaction of the client's committed but before the client heard
    so (``CommitCutter``): the client reconnects, and doing the step again must not do it twice (a
    second ticket behind the first, which nobody serves), nor fail for want of what it already did."""
    conninfo = tcp_server.create_database("mq_commit")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    cutter = CommitCutter(tcp_server, marker)
    try:
        done = subprocess.run([sys.executable, "-c", WAIT_AND_RELEASE, cutter.conninfo("mq_commit")],
                              capture_output=True, text=True, timeout=120)
    finally:
        cutter.close()
    assert cutter.fired.is_set(), f"no COMMIT after {marker!r} was seen"
    assert "reconnect: reconnected" in done.stderr, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert replies == [{"board": "b1", "grant": 1}, {"released": ["b1"]}], f"{step}: {replies}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM mq_tickets").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM mq_locks").fetchone() == (0,)


# A client that stops itself (SIGSTOP) once, right before the call of ``step`` (``mq_take``: its wait;
# ``mq_release``: a sem -signal of its own), then waits for b1 and releases it, each said as a JSON line.
STOPS_BEFORE = r'''
import json, os, signal, sys
from mq.engine.core.inventory import parse_inventory
from mq.pgengine import PgEngine
from mq.pgengine.link import Link
conninfo, step = sys.argv[1:3]
inventory = parse_inventory("[systems.b1]\narch = \"arm\"\n", "lab.toml")
real = Link.call


def stopping(self, function, *args, **kwargs):  # every step is one call: nothing of mq's is open here
    if function == step:
        Link.call = real
        os.kill(os.getpid(), signal.SIGSTOP)
    return real(self, function, *args, **kwargs)


Link.call = stopping


def engine():
    return PgEngine(conninfo + " application_name=mqstops", inventory, grace=10.0,
                    on_reconnect=lambda message: print("reconnect:", message, file=sys.stderr, flush=True))


try:
    with engine() as waiter:
        grant = waiter.wait("b1", key="K", budget=30)
    print(json.dumps({"board": grant.board}), flush=True)
    with engine() as releaser:
        print(json.dumps({"released": [r.board for r in releaser.signal("b1", key="K")]}), flush=True)
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
'''


@pytest.mark.slow
@pytest.mark.parametrize("step", ["mq_take", "mq_release"])
def test_a_client_stopped_mid_step_holds_nothing_and_goes_on_when_continued(fault_database: str,
                                                                           step: str) -> None:
    """Every step is one call of the server's, one transaction there: a client stopped (SIGSTOP) at
    any moment has no transaction open (its session is idle), so the others go on meanwhile (no
    timeout has to end anything); continued, it does what it was doing."""
    client = subprocess.Popen([sys.executable, "-c", STOPS_BEFORE, fault_database, step], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(functools.partial(_stopped, client.pid), what="the client stopped before its call")
        assert _states(fault_database) and all(state == "idle" for state in _states(fault_database))
        with PgEngine(fault_database, INVENTORY, grace=GRACE) as other:  # the queue is not frozen meanwhile
            if step == "mq_release":
                assert other.info("b1")[0].holder is not None
            assert other.wait("b2", key="other", budget=20).board == "b2"
    finally:
        os.kill(client.pid, signal.SIGCONT)
    out, err = client.communicate(timeout=60)
    replies = [json.loads(line) for line in out.splitlines()]
    assert replies == [{"board": "b1"}, {"released": ["b1"]}], f"{replies}\n{err}"


def _states(conninfo: str) -> list[str]:
    """The states of the stopped client's sessions."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT state FROM pg_stat_activity WHERE application_name = 'mqstops'").fetchall()
    return [str(state) for (state,) in rows]
