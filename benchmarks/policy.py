#!/usr/bin/env python3
"""Hand-off latency under ``policy = "priority"`` (with aging) against FIFO, in one run.

Not part of CI. Run from the repository (mq installed, editable is fine)::

    python3 benchmarks/policy.py             # about 30 seconds
    python3 benchmarks/policy.py --handoffs 60 --others 100

Two throw-away labs, the same but for ``[queue]``: FIFO, and priority with
aging. In each, ``--others`` idle waiters with mixed priorities (-2..3) queue
for b2 (held all along), so every walk of the queue orders all of them under
the lab's policy; then one waiter takes b1 from a holder ``--handoffs`` times
(``handoff.handoff_mq``: from just before ``signal()`` to the waiter's first
instruction after ``wait`` returns). The labs alternate in rounds so a
machine's drift hits both alike. Target: the priority median within 2x of FIFO's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from handoff import PYTHON, child_env, engine_for, handoff_mq, kill_all, tickets, wait_for

TARGET_RATIO = 2.0
LAB = '[systems.b1]\narch = "arm"\n[systems.b2]\narch = "arm"\n'
QUEUES = {"fifo": "", "priority": '[queue]\npolicy = "priority"\naging = 60\n'}

OTHER = """
import os, sys
from mq.engine.core.inventory import load_inventory
from mq.engine.lockdir.semaphore import Engine
base, key, priority = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = Engine(base, load_inventory(os.path.join(base, "lab.toml")))
engine.wait("b2", key=key, budget=None, priority=priority)
"""


def make_lab(queue: str) -> str:
    root = tempfile.mkdtemp(prefix="mq-bench-policy-")
    with open(os.path.join(root, "lab.toml"), "w") as handle:
        handle.write(LAB + queue)
    with open(os.path.join(root, "empty-config.toml"), "w"):
        pass
    return root


def queue_others(base: str, count: int, rng: random.Random) -> List[subprocess.Popen]:  # type: ignore[type-arg]
    engine_for(base).wait("b2", key="b2-holder", budget=0)
    procs = []
    for n in range(count):
        procs.append(subprocess.Popen([PYTHON, "-c", OTHER, base, f"o{n}", str(rng.randint(-2, 3))],
                                      env=child_env(base), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(lambda: len(tickets(base)) >= count, 60, f"{count} waiters for b2", step=0.01)
    return procs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handoffs", type=int, default=40, help="timed hand-offs per policy (default 40)")
    parser.add_argument("--others", type=int, default=50, help="idle waiters for b2 in the queue (default 50)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    labs = {name: make_lab(queue) for name, queue in QUEUES.items()}
    others: List[subprocess.Popen] = []  # type: ignore[type-arg]
    latency: Dict[str, List[float]] = {name: [] for name in labs}
    try:
        for base in labs.values():
            others += queue_others(base, args.others, rng)
        per_round = max(5, args.handoffs // args.rounds)
        for _ in range(args.rounds):
            for name, base in labs.items():
                latency[name] += handoff_mq(base, per_round)[0]
    finally:
        kill_all(others)
        for base in labs.values():
            shutil.rmtree(base, ignore_errors=True)
    print(f"hand-off latency, {args.others} other waiters in the queue, {len(latency['fifo'])} hand-offs each "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    medians = {name: statistics.median(values) for name, values in latency.items()}
    for name, values in latency.items():
        print(f"  {name:9s} median {medians[name]:6.2f} ms   p90 {sorted(values)[int(len(values) * 0.9)]:6.2f} ms"
              f"   max {max(values):6.2f} ms")
    ratio = medians["priority"] / medians["fifo"]
    verdict = "ok" if ratio <= TARGET_RATIO else "FAIL"
    print(f"  ratio priority/fifo (medians): {ratio:.2f}x   target <= {TARGET_RATIO:g}x   {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
