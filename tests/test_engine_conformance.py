"""Engine conformance: every lock engine, reached every way, keeps the same promises.

One suite over ``engines.KINDS``: the file engine in this process, the same
engine behind the host agent's JSON-lines protocol over a pipe, and over a
real sshd (when test users can be made). A second engine (PostgreSQL) is
one more kind there, and must pass all of this unchanged:

* fairness: board and pool waiters share one arrival order; a board in two
  pools goes to the earliest waiter of either; a free board no earlier waiter
  can use goes to a later one at once;
* reclaim: a lock past its ``-T`` timeout is reclaimed, by exactly one waiter;
* liveness: a dead waiter is skipped; a dead ``run`` holder's lock is reclaimed;
* hostile names are refused, hostile keys stored literally, bad keys refused;
* cancel, budgets, releases, undo and listings;
* boards out of service (``set_offline``/``set_online``): pools skip them, a wait
  for one alone fails at once, a queued waiter keeps its place, a holder's release
  or expired lock leaves the maintenance lock, never a free board.

Every waiter is a ``Worker``: a process of its own that opens an engine the
same way as the test, so it can sleep, be cancelled, or die.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import LabFixture, make_lab, wait_for
from engines import KINDS, Kind
from mq.engine.core import protocol
from mq.engine.core.errors import (
    AlreadyHeldError,
    BadInputError,
    BoardOfflineError,
    ExitCode,
    NotAcquiredError,
    NotHolderError,
    UnknownTargetError,
)
from mq.engine.core.interface import LockEngine
from mq.engine.core.results import Grant

TESTS = str(Path(__file__).resolve().parent)
WORKER = "import sys; sys.path.insert(0, sys.argv[3]); from engines import serve; serve(sys.argv[1], sys.argv[2])"
REPLY = 20.0  # seconds a reply that must come may take (an SSH worker connects first)
QUIET = 0.5  # seconds without a reply that show a waiter is still waiting


class Worker:
    """A process with an engine of its own, called one request at a time over a pipe."""

    def __init__(self, kind: Kind, base: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as errors:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER, kind.name, base, TESTS], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                         start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout.fileno()
        self._buffer = b""
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """The process holding this worker's tickets and session locks (itself, or its agent)."""
        if self._pid is None:
            self._pid = int(self._reply(REPLY)["pid"])
        return self._pid

    def start(self, method: str, **kwargs: Any) -> None:
        assert self.pid
        self._in.write(json.dumps({"method": method, "kwargs": kwargs}).encode() + b"\n")
        self._in.flush()

    def result(self, timeout: float = REPLY) -> Any:
        reply = self._reply(timeout)
        if not reply["ok"]:
            raise protocol.error_from_wire(reply["error"])
        return reply["result"]

    def call(self, method: str, **kwargs: Any) -> Any:
        self.start(method, **kwargs)
        return self.result()

    def grant(self, timeout: float = REPLY) -> Grant:
        return Grant(**self.result(timeout))

    def waiting(self) -> bool:
        """No reply for ``QUIET`` seconds (one that came is kept for ``result``)."""
        return not self._fill(time.monotonic() + QUIET)

    def kill(self) -> None:
        """Die at once, as kill -9 does: the engine's process and the worker."""
        os.kill(self.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _fill(self, deadline: float) -> bool:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                return False
            chunk = os.read(self._out, 65536)
            if not chunk:
                raise AssertionError(f"worker ended: {self.log.read_text(errors='replace')[-2000:]}")
            self._buffer += chunk
        return True

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self._fill(time.monotonic() + timeout), f"no reply within {timeout} s"
        line, self._buffer = self._buffer.split(b"\n", 1)
        value: dict[str, Any] = json.loads(line)
        return value


@dataclass
class Site:
    """One lab, one engine of the kind under test for the test itself, and its workers."""

    kind: Kind
    lab: LabFixture
    env: dict[str, str]
    engine: LockEngine
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def spawn(self, count: int = 1) -> list[Worker]:
        """``count`` workers, started together, each ready."""
        first = len(self.workers)
        started = [Worker(self.kind, str(self.lab.base), self.env, self.logs / f"worker{first + n}.log")
                   for n in range(count)]
        self.workers += started
        for worker in started:
            assert worker.pid
        return started

    def queue(self, name: str, key: str, **kwargs: Any) -> Worker:
        """A worker waiting for ``name`` with ``key``, once it is in the queue."""
        worker = self.spawn()[0]
        return self.enqueue(worker, name, key, **kwargs)

    def enqueue(self, worker: Worker, name: str, key: str, **kwargs: Any) -> Worker:
        worker.start("wait", name=name, key=key, **kwargs)
        wait_for(lambda: key in self.queued(name), what=f"{key} queued for {name}")
        return worker

    def queued(self, name: str) -> list[str]:
        """The keys of the live waiters for ``name``, in arrival order."""
        tickets = {t.name: t for state in self.engine.info(name) for t in state.waiters}
        return [t.key for t in sorted(tickets.values(), key=lambda t: t.seq)]

    def served(self, board: str) -> list[str]:
        """The keys of the live waiters for ``board``, in the order they are to be served."""
        return [t.key for t in self.engine.info(board)[0].waiters]

    def holders(self, name: str) -> dict[str, str | None]:
        """Board -> key of its holder (None: free)."""
        return {s.board: s.holder.key if s.holder else None for s in self.engine.info(name)}

    def hold(self, name: str, key: str = "H", count: int = 1, timeout: int = 0) -> list[str]:
        return [self.engine.wait(name, key=key, timeout=timeout, budget=0).board for _ in range(count)]


@pytest.fixture(scope="module")
def engines_sshd() -> Iterator[Any]:
    """A real sshd for the ``ssh`` kind (started once, only if that kind runs)."""
    import conftest
    from sshd import SSHD, start_sshd

    if not Path(SSHD).exists() or not conftest._ensure_users():
        pytest.skip("needs openssh-server and root (test users)")
    server = start_sshd(Path("/tmp") / f"mq-sshd-engines-{os.getpid()}", conftest.TEST_USERS)
    yield server
    server.stop()


@pytest.fixture(params=list(KINDS), ids=str)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    kind = KINDS[request.param]
    env = dict(os.environ)
    if kind.name == "ssh":
        from sshd import client_config

        server = request.getfixturevalue("engines_sshd")
        lab = make_lab(server.root / f"lab-{tmp_path.name}", shared=True)
        client = tmp_path / "client"
        client.mkdir()
        known = client / "known_hosts"
        known.write_text(server.known_hosts_line() + "\n")
        config = client_config(server, "mqalice", client / "config", known_hosts=known)
        env.update({"MQ_HOST": "labhost", "MQ_BASE": str(lab.base), "MQ_SSH_CONFIG": str(config),
                    "MQ_LAB": str(lab.inventory), "HOME": str(client)})
    else:
        lab = make_lab(tmp_path / "lab")
    extra = request.node.get_closest_marker("inventory_extra")
    if extra is not None:  # e.g. a [queue] policy, in place before the engine reads the inventory
        with open(lab.inventory, "a") as toml:
            toml.write(extra.args[0])
    with kind.open(str(lab.base), env) as opened:
        here = Site(kind, lab, env, opened.engine, tmp_path)
        try:
            yield here
        finally:
            for worker in here.workers:
                worker.close()


# -- fairness ---------------------------------------------------------------------------
def test_pool_waiters_are_served_in_arrival_order(site: Site) -> None:
    site.hold("trio", count=3)
    workers = site.spawn(4)
    for index, worker in enumerate(workers):
        site.enqueue(worker, "trio", f"w{index}")
    assert site.queued("trio") == ["w0", "w1", "w2", "w3"]
    for index, board in enumerate(["b2", "b1", "b3"]):
        site.engine.signal(board, key="H")
        assert workers[index].grant().board == board
        assert [w.waiting() for w in workers[index + 1:]] == [True] * (3 - index)
    assert site.queued("trio") == ["w3"]
    workers[0].call("signal", name="b2", key="w0")
    assert workers[3].grant().board == "b2"


@pytest.mark.parametrize(("first", "second"), [("b3", "trio"), ("trio", "b3")])
def test_board_and_pool_waiters_share_one_arrival_order(site: Site, first: str, second: str) -> None:
    """A b3 waiter and a trio waiter: whichever came first takes b3 when it frees."""
    site.hold("trio", count=3)
    earlier = site.queue(first, "earlier")
    later = site.queue(second, "later")
    site.engine.signal("b3", key="H")
    assert earlier.grant().board == "b3"
    assert later.waiting()
    earlier.call("signal", name="b3", key="earlier")
    assert later.grant().board == "b3"


@pytest.mark.parametrize(("first", "second", "freed", "served"), [
    ("pair", "trio", "b3", "first"),  # b3 is in both pools: the earlier waiter's
    ("trio", "pair", "solo", "second"),  # solo is only pair's: its waiter need not wait behind trio's
])
def test_a_freed_board_goes_to_the_earliest_waiter_that_can_use_it(site: Site, first: str, second: str,
                                                                   freed: str, served: str) -> None:
    site.hold("trio", count=3)
    site.hold("solo")
    waiters = {"first": site.queue(first, "first"), "second": site.queue(second, "second")}
    waiting = "second" if served == "first" else "first"  # the trio waiter, in both cases
    site.engine.signal(freed, key="H")
    assert waiters[served].grant().board == freed
    assert waiters[waiting].waiting()
    assert site.queued("trio") == [waiting]
    site.engine.signal("b2", key="H")  # a trio member only
    assert waiters[waiting].grant().board == "b2"


# -- queue policies -----------------------------------------------------------------------
PRIORITY_QUEUE = "\n[queue]\npolicy = \"priority\"\n"
AGING_QUEUE = "\n[queue]\npolicy = \"priority\"\naging = 1\n"
RANKED_TRIO = "\n[queue]\nkeys = { \"ci-*\" = -3 }\n"  # the lab stays FIFO; trio's own policy below


def test_fifo_keeps_arrival_order_whatever_the_priorities(site: Site) -> None:
    site.hold("b1")
    workers = [site.queue("b1", f"w{n}", priority=p) for n, p in enumerate([0, 7, -2])]
    assert site.served("b1") == ["w0", "w1", "w2"]
    assert [(t.priority, t.effective) for t in site.engine.info("b1")[0].waiters] == [(0, None), (7, None), (-2, None)]
    site.engine.signal("b1", key="H")
    assert workers[0].grant().board == "b1"
    assert workers[1].waiting()


@pytest.mark.inventory_extra(PRIORITY_QUEUE)
def test_higher_priority_first_then_arrival_order(site: Site) -> None:
    site.hold("b1")
    priorities = {"w0": 0, "w1": 5, "w2": 1, "w3": 5}
    workers = {key: site.queue("b1", key, priority=p) for key, p in priorities.items()}
    assert site.served("b1") == ["w1", "w3", "w2", "w0"]
    assert [t.effective for t in site.engine.info("b1")[0].waiters] == [5, 5, 1, 0]
    holder = "H"
    for key in ["w1", "w3", "w2", "w0"]:
        site.engine.signal("b1", key=holder) if holder == "H" else workers[holder].call("signal", name="b1",
                                                                                       key=holder)
        assert workers[key].grant().board == "b1"
        assert all(w.waiting() for k, w in workers.items() if k in site.served("b1"))
        holder = key


@pytest.mark.inventory_extra(AGING_QUEUE)
def test_aging_serves_by_virtual_arrival_time(site: Site) -> None:
    """aging = 1: a priority step is worth one second of waiting."""
    site.hold("b1")
    early = site.queue("b1", "early", priority=0)
    t0 = site.engine.info("b1")[0].waiters[0].created
    wait_for(lambda: time.time() > t0 + 2.5, what="2.5 s", step=0.05)
    late = site.queue("b1", "late", priority=2)  # came 2.5 s later: 2 steps are not enough
    urgent = site.queue("b1", "urgent", priority=5)  # 5 steps are
    assert site.served("b1") == ["urgent", "early", "late"]
    effective = {t.key: t.effective for t in site.engine.info("b1")[0].waiters}
    assert effective["early"] is not None and effective["early"] >= 2.5
    site.engine.signal("b1", key="H")
    assert urgent.grant().board == "b1"
    urgent.call("signal", name="b1", key="urgent")
    assert early.grant().board == "b1"
    assert late.waiting()


@pytest.mark.inventory_extra(PRIORITY_QUEUE)
def test_a_high_priority_board_waiter_does_not_block_a_pool_waiter_on_another_member(site: Site) -> None:
    site.hold("trio", count=3)
    high = site.queue("b1", "high", priority=9)
    low = site.queue("trio", "low", priority=0)
    site.engine.signal("b2", key="H")  # high cannot use b2: low takes it at once
    assert low.grant().board == "b2"
    assert high.waiting()
    site.engine.signal("b1", key="H")
    assert high.grant().board == "b1"


@pytest.mark.inventory_extra(RANKED_TRIO + "\n[pools.ranked]\nsystems = [\"b1\"]\npolicy = \"priority\"\n")
def test_a_pools_own_policy_and_the_inventorys_key_priorities(site: Site) -> None:
    site.hold("b1")
    fifo_first = site.queue("b1", "plain", priority=4)  # the lab is FIFO: 4 orders nothing here
    ci = site.queue("ranked", "ci-7")  # priority -3 from [queue.keys]
    ranked = site.queue("ranked", "mine", priority=1)
    waiters = {t.key: t for t in site.engine.info("b1")[0].waiters}
    assert (waiters["ci-7"].priority, waiters["mine"].priority) == (-3, 1)
    assert waiters["plain"].effective is None and waiters["mine"].effective == 1
    # plain: virtual arrival = its arrival; mine: a class ahead of it; ci-7: three classes behind
    assert site.served("b1") == ["mine", "plain", "ci-7"]
    site.engine.signal("b1", key="H")
    assert ranked.grant().board == "b1"
    assert fifo_first.waiting() and ci.waiting()


# -- reclaim ----------------------------------------------------------------------------
def test_a_lock_past_its_timeout_is_reclaimed(site: Site) -> None:
    site.hold("b1", timeout=1)
    worker = site.queue("b1", "late", budget=30)
    grant = worker.grant()
    assert (grant.board, grant.reclaimed_from) == ("b1", site.engine.user)
    assert site.holders("b1") == {"b1": "late"}
    with pytest.raises(NotHolderError):
        site.engine.signal("b1", key="H")


def test_exactly_one_of_several_reclaimers_wins(site: Site) -> None:
    reclaimers = site.spawn(4)
    site.hold("b1", timeout=2)
    for index, worker in enumerate(reclaimers):
        site.enqueue(worker, "b1", f"r{index}")
    winner = reclaimers[0].grant()
    assert (winner.board, winner.reclaimed_from) == ("b1", site.engine.user)
    assert [w.waiting() for w in reclaimers[1:]] == [True] * 3
    assert site.holders("b1") == {"b1": "r0"}
    assert site.queued("b1") == ["r1", "r2", "r3"]


# -- liveness ---------------------------------------------------------------------------
def test_a_dead_waiter_is_skipped(site: Site) -> None:
    site.hold("b1")
    doomed = site.queue("b1", "doomed")
    survivor = site.queue("b1", "survivor")
    doomed.kill()
    wait_for(lambda: site.queued("b1") == ["survivor"], what="the dead waiter to drop out of the queue")
    site.engine.signal("b1", key="H")
    assert survivor.grant().board == "b1"


def test_a_dead_run_holders_lock_is_reclaimed(site: Site) -> None:
    runner = site.spawn()[0]
    assert runner.call("wait", name="b1", key="run", session=True, budget=0)["board"] == "b1"
    holder = site.engine.info("b1")[0].holder
    assert holder is not None and holder.session == "live"
    runner.kill()
    wait_for(lambda: (site.engine.info("b1")[0].holder or holder).session == "dead", what="the session to die")
    grant = site.engine.wait("b1", key="next", budget=10)
    assert (grant.board, grant.reclaimed_from) == ("b1", site.engine.user)
    assert site.holders("b1") == {"b1": "next"}


def test_a_live_run_holders_lock_is_not_reclaimed(site: Site) -> None:
    runner = site.spawn()[0]
    runner.call("wait", name="b1", key="run", session=True, budget=0)
    with pytest.raises(NotAcquiredError):
        site.engine.wait("b1", key="next", budget=0.5)
    assert site.holders("b1") == {"b1": "run"}


# -- hostile input ----------------------------------------------------------------------
HOSTILE_NAMES = ["../b1", "b1/../b2", "/etc/passwd", "b1\n", "b1\x00", "", ".", "..", "-f", "b1.lock", "b1.key",
                 "$(touch pwned)", "`touch pwned`", "b1;touch pwned", "b1 b2", "*", "\u202eb1"]


@pytest.mark.parametrize("operation", ["wait", "signal", "info", "cancel"])
def test_hostile_names_are_refused(site: Site, operation: str) -> None:
    before = sorted(os.listdir(site.lab.base))
    for name in HOSTILE_NAMES:
        with pytest.raises(UnknownTargetError):
            if operation == "wait":
                site.engine.wait(name, key="k", budget=0)
            else:
                getattr(site.engine, operation)(name)
    assert sorted(set(os.listdir(site.lab.base)) - {".mq", "audit.jsonl"}) == \
        sorted(set(before) - {".mq", "audit.jsonl"})
    assert not list(Path(site.lab.base).rglob("pwned"))


HOSTILE_KEYS = ["'; rm -rf ~ #", "$(touch pwned)", "`id`", "a\\nb", 'say "hi"', "-k", " padded ", "ключ-鍵-🔑",
                "%s%n", "x" * 256]


def test_hostile_keys_are_stored_literally(site: Site) -> None:
    for key in HOSTILE_KEYS:
        assert site.engine.wait("b1", key=key, budget=0).key == key
        assert site.holders("b1") == {"b1": key}
        released = site.engine.signal("b1", key=key)
        assert [(r.board, r.holder.key) for r in released] == [("b1", key)]
    assert not list(Path(site.lab.base).rglob("pwned"))


@pytest.mark.parametrize("key", ["", "a\nb", "a\x00b", "\x1b[31mred", "tab\there", "del\x7f", "x" * 257])
def test_bad_keys_are_refused(site: Site, key: str) -> None:
    with pytest.raises(BadInputError):
        site.engine.wait("b1", key=key, budget=0)
    with pytest.raises(BadInputError):
        site.engine.cancel("b1", key=key)
    assert site.holders("b1") == {"b1": None}


# -- cancel, budgets, releases ------------------------------------------------------------
def test_cancel_ends_the_callers_wait_with_that_key(site: Site) -> None:
    site.hold("trio", count=3)
    board_waiter = site.queue("b1", "C")
    pool_waiter = site.queue("trio", "P")
    assert site.engine.cancel("b1", key="other") == 0
    assert board_waiter.waiting()
    assert site.engine.cancel("b1", key="C") == 1
    with pytest.raises(NotAcquiredError, match="cancelled"):
        board_waiter.result()
    assert site.engine.cancel("b2", key="P") == 1  # a board of the pool names the pool's waits
    with pytest.raises(NotAcquiredError, match="cancelled"):
        pool_waiter.result()
    assert site.queued("trio") == []


def test_a_wait_budget_runs_out(site: Site) -> None:
    site.hold("b1")
    worker = site.spawn()[0]
    with pytest.raises(NotAcquiredError):
        worker.call("wait", name="b1", key="W", budget=0.3)
    assert site.queued("b1") == []
    assert site.holders("b1") == {"b1": "H"}


def test_holding_twice_and_releasing_with_the_wrong_key(site: Site) -> None:
    site.engine.wait("b1", key="K", budget=0)
    with pytest.raises(AlreadyHeldError):
        site.engine.wait("b1", key="K", budget=0)
    with pytest.raises(NotHolderError) as wrong:
        site.engine.signal("b1", key="other")
    assert wrong.value.why == NotHolderError.WRONG_KEY
    released = site.engine.signal("b1", key="K")
    assert [(r.board, r.holder.key, r.forced) for r in released] == [("b1", "K", False)]
    with pytest.raises(NotHolderError):
        site.engine.signal("b1", key="K")


def test_force_releases_another_key(site: Site) -> None:
    site.hold("b2", key="theirs")
    released = site.engine.signal("b2", key="mine", force=True)
    assert [(r.board, r.holder.key, r.forced) for r in released] == [("b2", "theirs", True)]
    assert site.holders("b2") == {"b2": None}


def test_undo_grant_gives_back_only_that_grant(site: Site) -> None:
    grant = site.engine.wait("trio", key="U", budget=0)
    assert not site.engine.undo_grant(grant.board, "U", grant.grant + 1)
    assert site.engine.undo_grant(grant.board, "U", grant.grant)
    assert site.holders("trio") == {"b1": None, "b2": None, "b3": None}
    assert not site.engine.undo_grant(grant.board, "U", grant.grant)


def test_grant_numbers_increase(site: Site) -> None:
    numbers = []
    for _ in range(3):
        grant = site.engine.wait("b1", key="G", budget=0)
        numbers.append(grant.grant)
        site.engine.signal("b1", key="G")
    assert numbers == sorted(set(numbers))


def test_listings(site: Site) -> None:
    assert list(site.engine.inventory.members("trio")) == ["b1", "b2", "b3"]
    site.hold("x86a", key="X")
    site.hold("b1", key="B")
    assert [(s.board, s.holder.key if s.holder else None) for s in site.engine.dumpall()] == \
        [("b1", "B"), ("x86a", "X")]
    assert sorted(s.board for s in site.engine.dumpall(order="directory")) == ["b1", "x86a"]
    states = site.engine.info("x86")
    assert [(s.board, s.holder.user if s.holder else None) for s in states] == \
        [("x86a", site.engine.user), ("x86b", None)]


# -- the run job's lock (host side) -------------------------------------------------------
def test_a_run_jobs_lock_is_checked_and_released(site: Site) -> None:
    if not site.kind.host_side:
        pytest.skip("host side only: over the wire a job's lock is taken and released inside job_run")
    grant = site.engine.wait("trio", key="J", session=True, budget=0)
    assert site.engine.check_held("trio", "J") == grant.board
    assert site.engine.check_held("trio", "J", boards=[grant.board]) == grant.board
    with pytest.raises(NotHolderError):
        site.engine.check_held("trio", "other")
    assert site.engine.end_session_lock(grant.board, "J", reason="run ended")
    assert site.holders("trio") == {"b1": None, "b2": None, "b3": None}
    assert not site.engine.end_session_lock(grant.board, "J", reason="run ended")


def test_a_run_jobs_release_spares_a_lock_that_replaced_it(site: Site) -> None:
    """``lockfile -l`` by the same user replaces a run's lock (same owner, the old key file
    left behind): the run's end must not remove the new lock."""
    if not site.kind.host_side:
        pytest.skip("host side only: over the wire a job's lock is taken and released inside job_run")
    if not site.kind.lock_files:
        pytest.skip("lock files only: no other tool replaces a lock held in a database")
    site.engine.wait("b1", key="J", session=True, budget=0)
    lock = site.lab.lock("b1")
    lock.unlink()  # what lockfile -l does: remove the stale lock, then create its own
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    replaced = os.stat(lock)
    assert site.lab.key("b1").exists()  # the old key still names "J"
    assert not site.engine.end_session_lock("b1", "J", reason="run ended")
    assert os.stat(lock).st_ino == replaced.st_ino


# -- boards out of service ------------------------------------------------------------------
MAINTENANCE_KEY = "offline: new firmware"


def test_a_pool_skips_an_offline_member(site: Site) -> None:
    offline = site.engine.set_offline("b1", "new firmware")
    assert (offline.reason, offline.user, offline.locked) == ("new firmware", site.engine.user, True)
    assert abs(offline.since - time.time()) < 60
    state = site.engine.info("b1")[0]
    assert state.offline == offline
    assert state.holder is not None and (state.holder.user, state.holder.key) == (site.engine.user, MAINTENANCE_KEY)
    assert [(s.board, s.offline is not None) for s in site.engine.dumpall()] == [("b1", True)]
    if site.kind.lock_files:
        assert site.lab.lock("b1").read_text() == "0\n"  # a lock file as lockfile(1) makes it
    assert site.engine.wait("trio", key="P", budget=0).board == "b2"  # b1 is first and, to old tools, held
    assert site.engine.wait("trio", key="Q", budget=0).board == "b3"
    with pytest.raises(NotAcquiredError):
        site.engine.wait("trio", key="R", budget=0.3)


def test_a_pool_whose_every_member_is_offline_keeps_waiting(site: Site) -> None:
    site.engine.set_offline("b3", "rack move")
    site.engine.set_offline("solo", "rack move")
    waiter = site.queue("pair", "W")
    assert waiter.waiting()
    assert site.engine.set_online("solo") is not None
    assert waiter.grant().board == "solo"
    assert site.holders("pair") == {"b3": "offline: rack move", "solo": "W"}


def test_a_wait_for_an_offline_board_alone_fails_at_once(site: Site) -> None:
    site.engine.set_offline("b1", "new firmware")
    started = time.monotonic()
    with pytest.raises(BoardOfflineError) as refused:
        site.engine.wait("b1", key="W", budget=30)
    assert time.monotonic() - started < 5
    assert refused.value.exit_code == ExitCode.BOARD_OFFLINE == 16
    assert (refused.value.name, refused.value.reason, refused.value.user) == ("b1", "new firmware", site.engine.user)
    assert refused.value.message.startswith(f"b1 is offline: new firmware (by {site.engine.user} since ")
    assert site.queued("b1") == []
    with pytest.raises(BoardOfflineError):  # its maintenance lock is ended by set_online only
        site.engine.signal("b1", key=MAINTENANCE_KEY, force=True)
    with pytest.raises(NotHolderError):  # a pool release passes it by
        site.engine.signal("trio", key=MAINTENANCE_KEY, force=True)
    assert site.holders("b1") == {"b1": MAINTENANCE_KEY}


def test_offline_and_online_refuse_what_is_not_a_board(site: Site) -> None:
    with pytest.raises(UnknownTargetError):
        site.engine.set_offline("nosuch", "x")
    with pytest.raises(BadInputError, match="not a pool"):
        site.engine.set_offline("trio", "x")
    with pytest.raises(BadInputError, match="not a pool"):
        site.engine.set_online("trio")
    for reason in ["", "   ", "a\nb", "\x1b[31mred", "x" * 300]:
        with pytest.raises(BadInputError):
            site.engine.set_offline("b1", reason)
    assert site.engine.set_online("b1") is None  # not offline: nothing changes
    assert site.holders("trio") == {"b1": None, "b2": None, "b3": None}


def test_offline_again_gives_a_new_reason(site: Site) -> None:
    first = site.engine.set_offline("b2", "flaky UART")
    second = site.engine.set_offline("b2", "flaky UART; cable ordered")
    assert (second.reason, second.since, second.locked) == ("flaky UART; cable ordered", first.since, True)
    assert site.holders("b2") == {"b2": "offline: flaky UART; cable ordered"}
    assert site.engine.set_online("b2") == second
    assert site.holders("b2") == {"b2": None}


def test_a_holders_release_leaves_the_maintenance_lock(site: Site) -> None:
    site.hold("b2", key="H")
    pending = site.engine.set_offline("b2", "new firmware")
    assert not pending.locked  # still the holder's
    state = site.engine.info("b2")[0]
    assert state.offline == pending and state.holder is not None and state.holder.key == "H"
    released = site.engine.signal("b2", key="H")
    assert [(r.board, r.holder.key) for r in released] == [("b2", "H")]
    assert site.holders("b2") == {"b2": MAINTENANCE_KEY}  # never free in between
    assert site.engine.info("b2")[0].offline == dataclasses.replace(pending, locked=True)
    with pytest.raises(NotAcquiredError):
        site.engine.wait("trio", key="P", boards=["b2"], budget=0.3)
    was = site.engine.set_online("b2")
    assert was is not None and was.reason == "new firmware"
    assert site.holders("b2") == {"b2": None}
    assert site.engine.wait("b2", key="again", budget=0).board == "b2"


def test_a_queued_waiter_keeps_waiting_and_gets_the_board_after_online(site: Site) -> None:
    site.hold("b1", key="H")
    waiter = site.queue("b1", "W")
    site.engine.set_offline("b1", "new firmware")
    assert waiter.waiting()
    assert site.queued("b1") == ["W"]
    site.engine.signal("b1", key="H")
    assert waiter.waiting()  # the maintenance lock, not the waiter, took the board
    assert site.holders("b1") == {"b1": MAINTENANCE_KEY}
    state = site.engine.info("b1")[0]
    assert state.offline is not None and state.offline.locked and [t.key for t in state.waiters] == ["W"]
    site.engine.set_online("b1")
    assert waiter.grant().board == "b1"
    assert site.holders("b1") == {"b1": "W"}


def test_an_expired_lock_on_an_offline_board_becomes_the_maintenance_lock(site: Site) -> None:
    site.hold("b1", key="T", timeout=1)
    site.hold("b2", key="H")
    site.hold("b3", key="H")
    waiter = site.queue("trio", "W")
    assert not site.engine.set_offline("b1", "new firmware").locked
    wait_for(lambda: site.holders("b1") == {"b1": MAINTENANCE_KEY}, what="the maintenance lock to replace it")
    assert waiter.waiting()
    site.engine.set_online("b1")
    assert waiter.grant().board == "b1"


def test_a_dead_run_holders_lock_on_an_offline_board_becomes_the_maintenance_lock(site: Site) -> None:
    runner = site.spawn()[0]
    assert runner.call("wait", name="b1", key="run", session=True, budget=0)["board"] == "b1"
    site.hold("b2", key="H")
    site.hold("b3", key="H")
    waiter = site.queue("trio", "W")
    assert not site.engine.set_offline("b1", "new firmware").locked
    runner.kill()
    wait_for(lambda: site.holders("b1") == {"b1": MAINTENANCE_KEY}, what="the maintenance lock to replace it")
    assert waiter.waiting()
    site.engine.signal("b3", key="H")
    assert waiter.grant().board == "b3"
