#!/usr/bin/env python3
"""Fair turns between an ``mq.sh`` waiter and an ``mq`` waiter on one board (issue 19, item 4).

    python3 benchmarks/mqsh_fairness.py [--trials 10] [--gap 2] [--period 8]

Each trial holds board b1 of a throw-away lab, starts two waiters ``--gap``
seconds apart (the earlier alternates between the tools): an ``mq.sh`` waiter
exactly as ``mq.sh`` starts it on the host (a shell running ``lockfile -'8'
-r '-1' BASE/b1.lock && ... printf 'KEY' > BASE/b1.key ...``), and ``mq sem
-wait b1``. Then b1 is released; the trial records who got it first and how
long the board stood free before each grant. Prints one line per trial and the
count of trials in which the earlier waiter went first. Needs procmail's
``lockfile``. Prints figures, asserts nothing.
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

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "src"))

from mq.engine.core.inventory import parse_inventory  # noqa: E402
from mq.engine.lockdir.legacy_waiters import Scan  # noqa: E402
from mq.engine.lockdir.semaphore import Engine  # noqa: E402

LAB = "[systems.b1]\n"


def mqsh_shell(base: str, key: str, period: int) -> str:
    lock, keyfile = f"{base}/b1.lock", f"{base}/b1.key"
    return (f"umask 0111 && lockfile -'{period}'  -r '-1' '{lock}' && rm -f '{keyfile}' && "
            f"printf '{key}' > '{keyfile}' && chmod a-w,g+r '{keyfile}' && chmod u+w {lock} && "
            f"printf '0' > {lock} && chmod a-w {lock}")


def holder_key(base: str) -> str | None:
    try:
        return Path(base, "b1.key").read_text() if os.path.lexists(f"{base}/b1.lock") else None
    except OSError:
        return None


def wait_until(what: str, check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def release(base: str, winner: subprocess.Popen[bytes]) -> None:
    """As mq.sh releases: the key, then the lock (once the winner, an mq.sh shell or mq, is done with them)."""
    winner.wait(timeout=60)
    for name in ("b1.key", "b1.lock"):
        path = Path(base, name)
        if path.exists():
            path.chmod(0o644)
            path.unlink()


def trial(number: int, mqsh_first: bool, gap: float, period: int) -> tuple[str, float]:
    base = tempfile.mkdtemp(prefix="mq-fair-")
    env = dict(os.environ, MQ_HOST="local", MQ_BASE=base, MQ_LAB=f"{base}/lab.toml",
               PYTHONPATH=str(HERE / "src"))
    Path(base, "lab.toml").write_text(LAB)
    engine = Engine(base, parse_inventory(LAB, f"{base}/lab.toml"))
    engine.wait("b1", key="holder", budget=0)
    starters = [("mq.sh", lambda: subprocess.Popen(["sh", "-c", mqsh_shell(base, "mqsh", period)], env=env,
                                                    start_new_session=True)),
                ("mq", lambda: subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "mq"],
                                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))]
    if not mqsh_first:
        starters.reverse()
    procs = []
    arrived = {"mq.sh": lambda: Scan(base).waiters(["b1"]),  # its lockfile runs
               "mq": lambda: os.listdir(f"{base}/.mq/queue") if os.path.isdir(f"{base}/.mq/queue") else []}
    for index, (tool, start) in enumerate(starters):
        procs.append(start())
        wait_until(f"the {tool} waiter", arrived[tool])
        if index == 0:
            time.sleep(gap)  # the second arrives this much later
    engine.signal("b1", key="holder")
    freed = time.monotonic()
    first = wait_until("a first grant", lambda: holder_key(base) if holder_key(base) not in (None, "holder") else None)
    first_after = time.monotonic() - freed
    by_tool = {tool: proc for (tool, _), proc in zip(starters, procs, strict=True)}
    got = "mq.sh" if first == "mqsh" else "mq"
    release(base, by_tool[got])
    wait_until("the second grant", lambda: holder_key(base) not in (None, first))
    release(base, by_tool["mq" if got == "mq.sh" else "mq.sh"])
    earlier = starters[0][0]
    print(f"trial {number:2d}: {earlier:5s} came {gap:g} s earlier; {got:5s} got b1 first, "
          f"{first_after * 1000:7.1f} ms after the release; {'fair' if got == earlier else 'UNFAIR'}")
    return got, first_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--period", type=int, default=8, help="the mq.sh waiter's -w (lockfile's sleep)")
    args = parser.parse_args()
    fair = 0
    waits: dict[str, list[float]] = {"mq.sh": [], "mq": []}
    for number in range(1, args.trials + 1):
        mqsh_first = number % 2 == 1
        got, after = trial(number, mqsh_first, args.gap, args.period)
        fair += got == ("mq.sh" if mqsh_first else "mq")
        waits[got].append(after)
    print(f"the earlier waiter went first in {fair} of {args.trials} trials")
    for tool, values in waits.items():
        if values:
            print(f"board free before an {tool} grant: median {statistics.median(values) * 1000:.1f} ms "
                  f"(max {max(values) * 1000:.1f} ms, {len(values)} grants)")


if __name__ == "__main__":
    main()
