#!/usr/bin/env python3
"""Hand-run start-up figures: ``mq`` and ``mq`` invoked as ``mq.sh`` on a local lab.

Not part of CI. Run from the repository (mq installed, editable is fine)::

    python3 benchmarks/mqsh_startup.py            # about 30 s
    python3 benchmarks/mqsh_startup.py --runs 50

Makes a private lab directory (one board held, so ``-info`` reads a lock and
its key) and measures wall time, interleaved round-robin so drift hits every
variant alike, of:

* ``python3 -c pass`` (the interpreter alone: the baseline)
* ``mq sem -info b1``, ``mq sem -mr-info b1``
* ``mq.sh sem -info b1``, ``mq.sh sem -mr-info b1`` (mq.sh's own parser: typer
  is never imported)

and prints medians, min and max, and each median as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAB = '[systems.b1]\narch = "arm"\n[systems.b2]\narch = "arm"\n[pools.p]\nsystems = ["b1", "b2"]\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=25)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mq-bench-") as tmp:
        base = Path(tmp) / "lab"
        base.mkdir()
        (base / "lab.toml").write_text(LAB)
        mqsh = Path(tmp) / "mq.sh"
        mqsh.write_text(f"#!{sys.executable}\nfrom mq.cli.launch import run\nrun()\n")
        mqsh.chmod(0o755)
        env = {**os.environ, "MQ_HOST": "local", "MQ_BASE": str(base), "HOME": tmp, "MQ_NO_EARLY": "1"}
        mq = [sys.executable, "-m", "mq"]
        subprocess.run([*mq, "sem", "-wait", "b1", "-k", "bench"], env=env, check=True, capture_output=True)
        variants = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "mq sem -info b1": [*mq, "sem", "-info", "b1"],
            "mq sem -mr-info b1": [*mq, "sem", "-mr-info", "b1"],
            "mq.sh sem -info b1": [str(mqsh), "sem", "-info", "b1"],
            "mq.sh sem -mr-info b1": [str(mqsh), "sem", "-mr-info", "b1"],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for argv in variants.values():  # warm the page cache and bytecode
            subprocess.run(argv, env=env, check=True, capture_output=True)
        for _ in range(opts.runs):
            for name, argv in variants.items():
                started = time.perf_counter()
                subprocess.run(argv, env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - started)
    baseline = statistics.median(times["python3 -c pass"])
    print(f"{'command':<24} {'median ms':>10} {'min':>8} {'max':>8} {'x baseline':>11}   ({opts.runs} runs)")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<24} {median * 1000:>10.1f} {min(samples) * 1000:>8.1f} {max(samples) * 1000:>8.1f} "
              f"{median / baseline:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
