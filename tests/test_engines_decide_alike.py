"""Both engines decide alike (issue 22, item 3): the same scenario, played against the file
engine and against the PostgreSQL queue, hands the same boards to the same waiters, step by
step.

The queue's rules are written twice: in Python for the lock directory
(``engine/lockdir/queue.walk_queue`` with ``engine/core/policy``) and in SQL for the database
(``pgengine/queue.sql``, for speed: one round trip per step). A Hypothesis strategy draws
scenarios on a small lab (three boards; two pools sharing ``b2``; a strict priority policy):
clients wait for a board or a pool with a priority, release what they hold, cancel their
wait, are killed while they wait or while they hold; boards go offline and come back. Each
scenario runs on both engines, every client a process of its own (``Worker``), and after
each step the lab is let settle (every client the test thinks waits is in the queue or has
its answer, and no free board is wanted by a waiter). What each step decided (who got which
board, whose wait ended how) must be the same. A failure shrinks to the smallest scenario.

The scenarios are the same every run (``MQ_ALIKE_RANDOM=1``: new ones, by hand). Not
covered here (each has tests of its own in both engines): ``-T`` expiries and aging, which
depend on the clock, not on the rules.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pgserver
from conftest import make_lab, wait_for
from engines import KINDS, Opened
from test_engine_conformance import Worker

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

LAB = """
[systems.b1]
arch = "arm"
[systems.b2]
arch = "arm"
[systems.b3]
arch = "arm"
[pools.p12]
systems = ["b1", "b2"]
[pools.p23]
systems = ["b2", "b3"]
[queue]
policy = "priority"
"""
BOARDS = ("b1", "b2", "b3")
TARGETS = ("b1", "b2", "b3", "p12", "p23")
MEMBERS = {"b1": ("b1",), "b2": ("b2",), "b3": ("b3",), "p12": ("b1", "b2"), "p23": ("b2", "b3")}
CLIENTS = 4
QUICK, SLOW = 25, 150  # scenarios per run (the slow run: ``-m slow``)
RANDOM = bool(os.environ.get("MQ_ALIKE_RANDOM"))  # new scenarios every run (by hand); else the same ones

Step = tuple[Any, ...]
steps = st.one_of(
    st.tuples(st.just("wait"), st.integers(0, CLIENTS - 1), st.sampled_from(TARGETS), st.integers(0, 2)),
    st.tuples(st.just("release"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("cancel"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("kill"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("offline"), st.sampled_from(BOARDS)),
    st.tuples(st.just("online"), st.sampled_from(BOARDS)),
)
scenarios = st.lists(steps, min_size=1, max_size=14)


@dataclass
class Client:
    """One client slot: its worker process, and what the test knows of it."""

    worker: Worker | None = None
    generation: int = 0
    waiting: str = ""  # the target of its wait, while it waits
    holds: str = ""  # the board it holds ("" none)

    @property
    def key(self) -> str:
        return f"k{self.generation}"


@dataclass
class Lab:
    """One engine kind's lab, kept across scenarios (cleared in between): the test's own
    engine (an admin's: it forces, cancels and takes boards offline) and the client slots."""

    kind: str
    base: Path
    env: dict[str, str]
    opened: Opened
    logs: Path
    clients: list[Client] = field(default_factory=lambda: [Client() for _ in range(CLIENTS)])
    spawned: int = 0

    @property
    def engine(self) -> Any:
        return self.opened.engine

    def client(self, number: int) -> Client:
        slot = self.clients[number]
        if slot.worker is None:
            self.spawned += 1
            slot.generation = self.spawned
            slot.worker = Worker(KINDS[self.kind], str(self.base), self.env, self.logs / f"w{self.spawned}.log")
            assert slot.worker.pid
        return slot

    # -- a step ------------------------------------------------------------------------------
    def play(self, step: Step) -> list[tuple[Any, ...]]:
        """Do ``step``, let the lab settle; what was decided meanwhile (sorted)."""
        what = step[0]
        decided: list[tuple[Any, ...]] = []
        if what == "wait":
            number, target, priority = step[1], step[2], step[3]
            slot = self.client(number)
            if slot.waiting or slot.holds:
                return []  # one thing at a time per client
            assert slot.worker is not None
            slot.worker.start("wait", name=target, key=slot.key, priority=priority or None)
            slot.waiting = target
        elif what == "release":
            slot = self.clients[step[1]]
            if not slot.holds or slot.worker is None:
                return []
            slot.worker.call("signal", name=slot.holds, key=slot.key)
            slot.holds = ""
        elif what == "cancel":
            slot = self.clients[step[1]]
            if not slot.waiting:
                return []
            self.engine.cancel(slot.waiting, key=slot.key)
        elif what == "kill":
            slot = self.clients[step[1]]
            if slot.worker is None or not (slot.waiting or slot.holds):
                return []
            held = slot.holds
            slot.worker.kill()
            slot.worker, slot.waiting, slot.holds = None, "", ""
            if held:  # a sem lock outlives its client: the operator releases it, as the lab would
                self.engine.signal(held, key="k" + str(slot.generation), force=True)
            decided.append(("killed", step[1], bool(held)))
        elif what == "offline":
            self.engine.set_offline(step[1], "decide-alike")
        elif what == "online":
            self.engine.set_online(step[1])
        return sorted(decided + self.settle(), key=repr)

    def settle(self) -> list[tuple[Any, ...]]:
        """Wait until nothing more will happen by itself; the answers that came meanwhile."""
        decided: list[tuple[Any, ...]] = []
        seen: list[Any] = []

        def settled() -> bool:
            for number, slot in enumerate(self.clients):
                if slot.waiting and slot.worker is not None and answered(slot.worker):
                    decided.append(self._answer(number, slot))
            states = [state for board in BOARDS for state in self.engine.info(board)]
            seen[:] = [(s.board, s.holder.key if s.holder else None, [t.key for t in s.waiters],
                        bool(s.offline)) for s in states]
            queued = {t.key for s in states for t in s.waiters}
            if any(slot.waiting and slot.key not in queued for slot in self.clients):
                return False  # its answer is on its way
            waiting = {slot.key for slot in self.clients if slot.waiting}
            if any(s.holder is not None and (s.holder.key is None or s.holder.key in waiting) for s in states):
                return False  # a lock being made (its key not written yet, its ticket not gone yet)
            free = {s.board for s in states if s.holder is None and s.offline is None}
            return not any(free & set(MEMBERS[slot.waiting]) for slot in self.clients if slot.waiting)

        try:
            wait_for(settled, timeout=30, what=f"the {self.kind} lab settled")
        except AssertionError as exc:
            clients = [(c.key, c.waiting, c.holds) for c in self.clients]
            raise AssertionError(f"{exc}: boards {seen}, clients {clients}") from None
        return decided

    def _answer(self, number: int, slot: Client) -> tuple[Any, ...]:
        assert slot.worker is not None
        target, slot.waiting = slot.waiting, ""
        try:
            board = slot.worker.grant().board
        except Exception as exc:  # an engine's error, rebuilt: cancelled, or offline (refused at once)
            return ("ended", number, target, type(exc).__name__)
        slot.holds = board
        return ("granted", number, target, board)

    # -- between scenarios -------------------------------------------------------------------
    def clear(self) -> None:
        for number, slot in enumerate(self.clients):
            if slot.worker is not None and (slot.waiting or slot.holds):
                slot.worker.kill()
                self.clients[number] = Client()
        for board in BOARDS:
            with contextlib.suppress(Exception):
                self.engine.set_online(board)
        wait_for(lambda: not any(t for s in self.engine.dumpall() for t in s.waiters), timeout=30,
                 what="the dead waiters gone")
        for state in self.engine.dumpall():
            if state.holder is not None:
                self.engine.signal(state.board, key=state.holder.key, force=True)
        states = [state for board in BOARDS for state in self.engine.info(board)]
        left = [(s.board, s.holder, s.waiters, s.offline) for s in states if s.holder or s.waiters or s.offline]
        assert not left, f"the {self.kind} lab not cleared: {left}"

    def close(self) -> None:
        for slot in self.clients:
            if slot.worker is not None:
                slot.worker.close()


def answered(worker: Worker) -> bool:
    """The worker's answer has come (looked at without waiting for one)."""
    return worker._fill(time.monotonic() + 0.005)


@contextlib.contextmanager
def open_lab(kind: str, root: Path) -> Iterator[Lab]:
    lab = make_lab(root / kind / "lab")
    (lab.base / "lab.toml").write_text(LAB)
    logs = root / kind / "logs"
    logs.mkdir()
    env = dict(os.environ)
    with KINDS[kind].open(str(lab.base), env) as opened:
        site = Lab(kind, lab.base, env, opened, logs)
        try:
            yield site
        finally:
            site.close()


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    root = tmp_path_factory.mktemp("alike")
    with open_lab("engine", root) as files, open_lab("postgresql", root) as database:
        yield {"engine": files, "postgresql": database}


def play(labs: dict[str, Lab], scenario: list[Step]) -> None:
    decisions = {}
    for kind, lab in labs.items():
        lab.clear()
        decisions[kind] = [(step, lab.play(step)) for step in scenario]
    for number, ((step, files), (_, database)) in enumerate(zip(decisions["engine"], decisions["postgresql"],
                                                                 strict=True)):
        assert files == database, (f"step {number} {step}: the file engine decided {files}, "
                                   f"PostgreSQL {database}\nscenario: {scenario}")


def test_a_known_scenario_decides_alike(labs: dict[str, Lab]) -> None:
    """Pools sharing a board, priorities, an offline board, a cancel and a kill, in one go."""
    play(labs, [("wait", 0, "b2", 0), ("wait", 1, "p12", 0), ("wait", 2, "p23", 2), ("wait", 3, "p12", 1),
                ("offline", "b1"), ("release", 0), ("cancel", 3), ("kill", 2), ("online", "b1"),
                ("release", 1)])


@settings(max_examples=QUICK, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios)
def test_random_scenarios_decide_alike(labs: dict[str, Lab], scenario: list[Step]) -> None:
    play(labs, scenario)


@pytest.mark.slow
@settings(max_examples=SLOW, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios)
def test_many_random_scenarios_decide_alike(labs: dict[str, Lab], scenario: list[Step]) -> None:
    play(labs, scenario)


def test_a_difference_is_seen(labs: dict[str, Lab], monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison itself: a lab that decides otherwise fails it."""
    original = Lab.play

    def lying(self: Lab, step: Step) -> list[tuple[Any, ...]]:
        decided = original(self, step)
        return [("granted", 9, "b9", "b9")] if self.kind == "postgresql" and decided else decided

    monkeypatch.setattr(Lab, "play", lying)
    with pytest.raises(AssertionError, match="decided"):
        play(labs, [("wait", 0, "b1", 0)])

