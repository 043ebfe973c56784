"""Queue policies (issue 12): priorities, aging that bounds how long anyone is passed, per-pool
policies, and how the CLI shows them.

The rule (README "Queue policies", ``mq.engine.core.policy``): under ``policy = "priority"`` with
``aging = A``, each waiter is served in the order of its virtual arrival time ``created - p*A``
(arrival order on a tie); without aging, by priority, then arrival. The 20-waiter scenario
below predicts the grant order from that rule alone, written out here again, and checks the
engine's grants (real processes, one board) against it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import LabFixture, Procs, engine, queued, run_mq, spawn_mq, ticket_pids, wait_for
from mq.engine.core import policy
from mq.engine.core.inventory import Inventory, Pool, System
from mq.engine.core.results import Ticket

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from mq.engine.core.inventory import load_inventory
    from mq.engine.lockdir.semaphore import Engine

    base, key, priority = sys.argv[1], sys.argv[2], int(sys.argv[3])
    eng = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
    grant = eng.wait("b1", key=key, budget=None, priority=priority)
    time.sleep(0.02)
    eng.signal(grant.board, key=key)
    """
)


def with_queue(lab: LabFixture, text: str) -> None:
    with open(lab.inventory, "a") as toml:
        toml.write("\n" + textwrap.dedent(text))


def tickets(lab: LabFixture) -> list[dict[str, object]]:
    queue = lab.base / ".mq" / "queue"
    return [json.loads((queue / name).read_text()) for name in queued(lab)]


def granted_keys(lab: LabFixture) -> list[str]:
    return [str(e["key"]) for e in lab.audit() if e["event"] == "grant"]


def spawn_worker(lab: LabFixture, procs: Procs, key: str, priority: int) -> None:
    count = len(queued(lab))
    procs.add_group(subprocess.Popen([sys.executable, "-c", WORKER, str(lab.base), key, str(priority)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env,
                                     start_new_session=True))
    wait_for(lambda: len(queued(lab)) == count + 1, what=f"ticket of {key}")


# -- the rule, as the README states it --------------------------------------------------------
def ticket(seq: int, created: float, priority: int = 0, target: str = "b1") -> Ticket:
    return Ticket(name=f"T{seq}", seq=seq, uid=0, user="u", pid=1, host="h", key=f"k{seq}", target=target,
                  boards=("b1",), created=created, priority=priority)


def inventory(rule: policy.Rule, pool_rule: tuple[str | None, float | None] = (None, None)) -> Inventory:
    return Inventory("lab.toml", {"b1": System("b1")}, {"p": Pool("p", ("b1",), *pool_rule)},
                     policy.QueueConfig(rule))


def test_fifo_is_arrival_order_whatever_the_priorities() -> None:
    listed = [ticket(1, 100.0, 0), ticket(2, 101.0, 9), ticket(3, 102.0, -9)]
    assert [t.seq for t in policy.order(reversed(listed), inventory(policy.Rule()))] == [1, 2, 3]


def test_priority_without_aging_is_strict_classes() -> None:
    listed = [ticket(1, 100.0, 0), ticket(2, 5000.0, 1), ticket(3, 102.0, 1), ticket(4, 103.0, -1)]
    inv = inventory(policy.Rule("priority"))
    assert [t.seq for t in policy.order(listed, inv)] == [3, 2, 1, 4]


def test_aging_serves_by_virtual_arrival_and_never_reorders_waiters() -> None:
    inv = inventory(policy.Rule("priority", 10.0))
    listed = [ticket(1, 100.0, 0), ticket(2, 105.0, 1), ticket(3, 125.0, 2), ticket(4, 95.0 + 10, 0)]
    # virtual: 100, 95, 105, 105 (a tie: arrival order)
    assert [t.seq for t in policy.order(listed, inv)] == [2, 1, 3, 4]
    at = {t.seq: t.effective for t in policy.annotate(listed, inv, 130.0)}
    assert at == {1: 3.0, 2: 3.5, 3: 2.5, 4: 2.5}


def test_a_pools_own_policy_and_a_fifo_waiter_compare_by_virtual_arrival() -> None:
    inv = inventory(policy.Rule(), ("priority", 10.0))
    listed = [ticket(1, 100.0, 5, target="b1"), ticket(2, 120.0, 3, target="p")]
    assert [t.seq for t in policy.order(listed, inv)] == [2, 1]  # 120 - 30 < 100; the b1 waiter's 5 counts not
    assert policy.rule_for(inv, "b1") == policy.Rule()
    assert policy.rule_for(inv, "p") == policy.Rule("priority", 10.0)


def test_priorities_from_the_inventory() -> None:
    config = policy.QueueConfig(policy.Rule("priority"), users=(("alice", 4),), keys=(("ci-*", -2), ("*", 1)))
    assert config.priority_for("alice", "ci-17") == -2  # a key pattern first
    assert config.priority_for("alice", "0") == 1
    assert config.priority_for("bob", "ci-1", requested=3) == 3  # the wait's own
    assert policy.QueueConfig(users=(("alice", 4),)).priority_for("alice", "0") == 4


# -- the inventory's [queue] -----------------------------------------------------------------
@pytest.mark.parametrize(("text", "message"), [
    ('[queue]\npolicy = "lifo"\n', 'queue.policy: expected "fifo" or "priority", got "lifo"'),
    ("[queue]\naging = -1\n", "queue.aging: expected seconds per priority step"),
    ("[queue]\nusers = { alice = 1.5 }\n", "queue.users.alice: priority must be an integer, got 1.5"),
    ('[queue]\nkeys = { "ci-*" = 5000 }\n', 'queue.keys."ci-*": priority must be between -1000 and 1000'),
    ("[queue]\nweights = 1\n",
     "queue.weights: unknown key (expected one of: policy, aging, users, keys, grace, max_priority)"),
    ("[queue]\nmax_priority = 5000\n", "queue.max_priority: priority must be between -1000 and 1000, got 5000"),
    ('[queue]\ngrace = "30s"\n', "queue.grace: expected seconds from 0 to 86400, got '30s'"),
    ("[queue]\ngrace = 100000\n", "queue.grace: expected seconds from 0 to 86400, got 100000"),
    ('[pools.p]\nsystems = ["b1"]\npolicy = "random"\n', 'pools.p.policy: expected "fifo" or "priority"'),
])
def test_queue_mistakes_are_named_and_nothing_is_locked(lab: LabFixture, text: str, message: str) -> None:
    with_queue(lab, text)
    proc = run_mq(lab, "check")
    assert proc.returncode == 6 and message in proc.stdout, proc.stdout
    proc = run_mq(lab, "sem", "-wait", "b1", "-t", "0")
    assert proc.returncode == 6 and message in proc.stderr and proc.stdout == ""
    assert lab.held() == set()


# -- real waiters, one board -----------------------------------------------------------------
def predicted(found: list[dict[str, object]], aging: float) -> list[str]:
    """The README's rule: by created - priority * aging, then arrival."""
    ranked = sorted(enumerate(found), key=lambda pair: (float(pair[1]["created"])  # type: ignore[arg-type]
                                                         - int(pair[1]["priority"]) * aging, pair[0]))  # type: ignore[call-overload]
    return [str(t["key"]) for _, t in ranked]


@pytest.mark.slow
def test_twenty_waiters_with_mixed_priorities_and_aging_are_served_as_the_rule_predicts(
        lab: LabFixture, procs: Procs) -> None:
    aging = 1.5
    with_queue(lab, f'[queue]\npolicy = "priority"\naging = {aging}\n')
    eng = engine(lab)
    eng.wait("b1", key="hold", budget=0)
    rng = random.Random(12)
    for n in range(20):
        spawn_worker(lab, procs, f"w{n:02d}", rng.choice([0, 0, 1, 2, 3, -1]))
        time.sleep(rng.choice([0.0, 0.1, 0.4]))
    found = tickets(lab)
    order = predicted(found, aging)
    assert order != [str(t["key"]) for t in found], "the scenario must reorder something"
    assert [t.key for t in eng.info("b1")[0].waiters] == order  # -info shows the same order
    eng.signal("b1", key="hold")
    wait_for(lambda: len(granted_keys(lab)) == 21 and not lab.held(), timeout=60, what="all 20 served")
    assert granted_keys(lab)[1:] == order


@pytest.mark.slow
def test_aging_bounds_how_long_a_low_priority_waiter_is_passed(lab: LabFixture, procs: Procs) -> None:
    """aging A = 1 s, gap G = 2: only waiters arriving less than G*A = 2 s after it pass it."""
    with_queue(lab, '[queue]\npolicy = "priority"\naging = 1\n')
    eng = engine(lab)
    eng.wait("b1", key="hold", budget=0)
    spawn_worker(lab, procs, "low", 0)
    t0 = float(tickets(lab)[0]["created"])  # type: ignore[arg-type]
    for n, offset in enumerate([0.3, 1.2, 2.6, 3.5, 5.0]):
        wait_for(lambda offset=offset: time.time() >= t0 + offset, what=f"+{offset} s", step=0.02)
        spawn_worker(lab, procs, f"high{n}", 2)
    found = {str(t["key"]): float(t["created"]) for t in tickets(lab)}  # type: ignore[arg-type]
    eng.signal("b1", key="hold")
    wait_for(lambda: len(granted_keys(lab)) == 7 and not lab.held(), timeout=30, what="all served")
    order = granted_keys(lab)[1:]
    passed = order[:order.index("low")]
    behind = order[order.index("low") + 1:]
    assert passed and behind, order  # the bound is not vacuous here
    assert all(found[k] - t0 < 2.0 for k in passed), (order, found)
    assert all(found[k] - t0 > 2.0 for k in behind), (order, found)
    assert order == predicted([{"key": k, "created": c, "priority": 0 if k == "low" else 2}
                               for k, c in sorted(found.items(), key=lambda kv: kv[1])], 1.0)


# -- the CLI -----------------------------------------------------------------------------------
def test_priority_shows_in_info_status_and_the_waiting_line(lab: LabFixture, procs: Procs) -> None:
    with_queue(lab, '[queue]\npolicy = "priority"\naging = 60\n[queue.users]\nroot = 1\n')
    run_mq(lab, "sem", "-wait", "b1", "-k", "hold", "-T", "300", check=True)
    first = spawn_mq(lab, "sem", "-wait", "b1", "-k", "plain")  # priority 1: its user's
    procs.append(first)
    wait_for(lambda: first.pid in ticket_pids(lab), what="plain queued")
    urgent = spawn_mq(lab, "sem", "-wait", "b1", "-k", "urgent", "--priority", "5")
    procs.append(urgent)
    wait_for(lambda: urgent.pid in ticket_pids(lab), what="urgent queued")

    def waiting_lines() -> list[str]:
        return [line for line in run_mq(lab, "sem", "-info", "b1", check=True).stdout.splitlines()
                if "waiting" in line]

    waiting = waiting_lines()
    assert "urgent" in waiting[0] and ", priority 5" in waiting[0], waiting
    assert "plain" in waiting[1] and ", priority 1" in waiting[1], waiting
    # aging 60 s: plain's effective priority shows (1.01) once it has waited 0.3 s
    waiting = wait_for(lambda: (lines := waiting_lines()) and "(effective 1." in lines[1] and lines,
                       what="plain's effective priority to rise above 1")
    assert "urgent" in waiting[0] and ", priority 5" in waiting[0], waiting  # still first: 5 and more
    data = json.loads(run_mq(lab, "status", "b1", "--json", check=True).stdout)["data"]
    waiters = data[0]["waiters"]
    assert [(w["key"], w["position"], w["priority"]) for w in waiters] == [("urgent", 1, 5), ("plain", 2, 1)]
    assert waiters[0]["eta"] == pytest.approx(data[0]["holder"]["since"] + 300, abs=0.01)  # the -T expiry
    assert "after" in waiters[1]["eta_basis"] or waiters[1]["eta"] is None
    table = run_mq(lab, "status", check=True).stdout
    assert "1. " in table and "priority 5" in table
    run_mq(lab, "sem", "-signal", "b1", "-k", "hold", check=True)
    out, err = urgent.communicate(timeout=20)
    assert out.strip() == "b1"
    assert "position 1 of 2 for b1, priority 5" in err, err  # the plain waiting line (not a terminal)
    assert first.poll() is None


def test_fifo_shows_a_priority_that_orders_nothing(lab: LabFixture, procs: Procs) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "hold", check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "w", "--priority", "3")
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab), what="queued")
    assert "priority 3 (FIFO)" in run_mq(lab, "sem", "-info", "b1", check=True).stdout


@pytest.mark.parametrize(("value", "code", "message"), [
    ("1001", 5, "--priority 1001: out of range (-1000 to 1000)"),
    ("-5000", 5, "--priority -5000: out of range"),
    ("high", 64, "'high' is not a valid integer"),
])
def test_a_bad_priority_is_one_line_and_locks_nothing(lab: LabFixture, value: str, code: int, message: str) -> None:
    for args in (["sem", "-wait", "b1"], ["run", "-s", "b1", "-r"]):
        proc = run_mq(lab, *args, "--priority", value)
        assert proc.returncode == code and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert lab.held() == set() and queued(lab) == []


def test_the_priority_reaches_the_audit_log(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "a", "--priority", "7", check=True)
    grant = [e for e in lab.audit() if e["event"] == "grant"][-1]
    assert grant["priority"] == 7
