"""Run the test suite under one of the conditions it must pass in, and report the run.

    python tests/run_under.py quiet   [-- PYTEST ARGS]
    python tests/run_under.py busy    [--workers 2] [-- PYTEST ARGS]
    python tests/run_under.py ignored [-- PYTEST ARGS]

``quiet`` runs pytest as it is; ``busy`` first starts ``--workers`` busy loops (one
process each, at normal priority, like ``stress-ng --cpu N``) and stops them when
pytest ends; ``ignored`` starts pytest with SIGINT and SIGHUP ignored, as a background
job of a script or ``nohup`` starts it. Every condition samples the load average while
pytest runs and prints one summary line at the end:

    run_under: busy (2 workers): exit 0, 980 passed, 5 skipped in 1105 s; load 1-min min 3.1 median 5.8 max 41.2

The exit status is pytest's. See tests/README.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def busy_loop() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        pass


def ignore_int_and_hup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def default_int_and_hup() -> None:
    """``quiet`` and ``busy`` start pytest as an interactive shell would, even when this
    script itself was started ignoring them (``nohup``, ``&``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def load_sampler(samples: list[float], stop: threading.Event, every: float = 5.0) -> None:
    while True:
        samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
        if stop.wait(every):
            return


def summary_of(output: str) -> str:
    """pytest's last line without its ``=`` rule and colours (``980 passed, 5 skipped in 1105.2s``)."""
    lines = [line for line in output.splitlines() if re.search(r"\b(passed|failed|error|no tests ran)\b", line)]
    return re.sub(r"\x1b\[[0-9;]*m|^=+ | =+$", "", lines[-1]).strip() if lines else "no summary"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("condition", choices=["quiet", "busy", "ignored"])
    parser.add_argument("--workers", type=int, default=2, help="busy loops for 'busy' (default 2)")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args()

    workers: list[multiprocessing.Process] = []
    if args.condition == "busy":
        for _ in range(args.workers):
            worker = multiprocessing.Process(target=busy_loop, daemon=True)
            worker.start()
            workers.append(worker)
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=load_sampler, args=(samples, stop), daemon=True)
    sampler.start()
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", *args.pytest_args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ignore_int_and_hup if args.condition == "ignored" else default_int_and_hup)  # noqa: PLW1509
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        output.append(line)
    code = proc.wait()
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    for worker in workers:
        worker.terminate()
        worker.join()
    what = f"busy ({args.workers} workers)" if args.condition == "busy" else args.condition
    load = f"min {min(samples):.1f} median {statistics.median(samples):.1f} max {max(samples):.1f}"
    print(f"run_under: {what}: exit {code}, {summary_of(''.join(output))}; wall {wall:.0f} s; "
          f"load 1-min {load}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
