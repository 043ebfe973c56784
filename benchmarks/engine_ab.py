#!/usr/bin/env python3
"""The file engine's hot path, this source tree against another, in alternating rounds.

    python3 benchmarks/engine_ab.py --compare /path/to/other/checkout [--rounds 12] [--seconds 0.5]

Each round runs, for each tree in turn (the order alternates), a fresh Python process
that does ``Engine.wait(budget=0)`` + ``Engine.signal`` on one board of a throw-away
lock directory for ``--seconds`` and prints its rate, then ``Engine.info`` on a pool of
three for as long. Rounds alternate so that a machine busy with something else weighs
on both trees alike; the figures are the medians over the rounds and their ratio
(this tree / the other). Not part of CI: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, os, sys, tempfile, time
from mq.engine.core.inventory import parse_inventory
from mq.engine.lockdir.semaphore import Engine

seconds = float(sys.argv[1])
base = tempfile.mkdtemp(prefix="mq-ab-")
lab = "[systems.b1]\n[systems.b2]\n[systems.b3]\n[pools.trio]\nsystems = ['b1', 'b2', 'b3']\n"
engine = Engine(base, parse_inventory(lab, os.path.join(base, "lab.toml")))
result = {}
for name, step in (("wait+signal", lambda: (engine.wait("b1", key="k", budget=0), engine.signal("b1", key="k"))),
                   ("info", lambda: engine.info("trio"))):
    step()  # warm up: directories made, modules loaded
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    result[name] = count / (time.perf_counter() - started)
print(json.dumps(result))
"""


def one_round(tree: Path, seconds: float) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", WORKER, str(seconds)], env=env, cwd=cwd, check=True,
                             capture_output=True, text=True).stdout
    return {k: float(v) for k, v in json.loads(out).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, required=True, help="the other source tree (a checkout)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    trees = {"this": HERE, "other": args.compare.resolve()}
    rates: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for index in range(args.rounds):
        order = list(trees) if index % 2 == 0 else list(reversed(trees))
        for name in order:
            for op, rate in one_round(trees[name], args.seconds).items():
                rates[name].setdefault(op, []).append(rate)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"{args.rounds} alternating rounds of {args.seconds:g} s each; load average at the end: {load}")
    print(f"{'operation':<14} {'this /s':>10} {'other /s':>10} {'this/other':>11}")
    for op in rates["this"]:
        mine, theirs = statistics.median(rates["this"][op]), statistics.median(rates["other"][op])
        print(f"{op:<14} {mine:>10.0f} {theirs:>10.0f} {mine / theirs:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
