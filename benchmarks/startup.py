#!/usr/bin/env python3
"""Hand-run start-up figures: what one ``mq`` command costs beyond the interpreter or ``ssh``.

Not part of CI. Run from the repository (mq installed, editable is fine)::

    python3 benchmarks/startup.py              # about 1 minute (as root: with the SSH part)
    python3 benchmarks/startup.py --runs 40
    python3 benchmarks/startup.py --no-ssh     # local figures only (no root needed)
    git worktree add /tmp/mq-old HEAD~1        # before and after a change, in one run:
    python3 benchmarks/startup.py --compare /tmp/mq-old/src

Makes a private lab directory (board b1 held, so ``-info`` reads a lock and
its key) and, as root, starts its own OpenSSH sshd on 127.0.0.1 as
``benchmarks/ssh_latency.py`` does (``tests/sshd.py``; the test user mqalice
logs in). Then measures wall time, interleaved round-robin in one run so
drift hits every variant alike, of:

* ``python3 -c pass`` (the interpreter alone: the local baseline), and a two-command Typer
  app that prints one line (the framework's floor: CPU time is compared with it)
* ``mq sem -info b1`` and ``mq --help`` on the local lab (no SSH)
* ``mq.sh sem -info b1`` (mq invoked as mq.sh: its own parser, typer never imported)
* bare ``ssh labhost true`` (the SSH baseline) and ``mq sem -info b1`` over
  SSH (paramiko, the default transport)

``mq`` is the console script next to this interpreter (as installed), else
``python3 -m mq``. With ``--compare DIR`` every mq command is also run with
the mq of that source tree (``PYTHONPATH=DIR``), interleaved with the rest.
Every child gets ``PYTHONPYCACHEPREFIX`` (a temp dir) and no
``PYTHONDONTWRITEBYTECODE``, so bytecode is cached as on a normal install. It
prints medians, min and max, the ratios against the targets of issue 8, and
the load average (the figures mean little on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _prereqs import ssh_bench_ready

REPO = Path(__file__).resolve().parent.parent
LAB = '[systems.b1]\narch = "arm"\n[systems.b2]\narch = "arm"\n[pools.p]\nsystems = ["b1", "b2"]\n'
ALIAS = "labhost"
SSH_USER = "mqalice"

# (numerator, denominator, target ratio, measure): wall time (issue 8), and CPU time against the
# framework's own floor, a two-command Typer app printing one line (issue 22)
FLOOR = "typer floor app"
TARGETS = [("mq sem -info b1", "python3 -c pass", 4.0, "wall"),
           ("mq --help", "python3 -c pass", 4.0, "wall"),
           ("mq.sh sem -info b1", "python3 -c pass", 4.0, "wall"),
           ("mq sem -info b1 (ssh)", "ssh labhost true", 1.1, "wall"),
           ("mq sem -info b1", FLOOR, 1.5, "cpu"),
           ("mq --help", FLOOR, 1.0, "cpu")]
FLOOR_APP = """import typer

app = typer.Typer()


@app.command()
def hello() -> None:
    print("hello")


@app.command()
def other() -> None:
    print("other")


app()
"""


COMPARED = " (compared)"  # the suffix of a variant run with the --compare tree


@dataclass
class Variant:
    name: str
    argv: list[str]
    env: dict[str, str]
    runs_mq: bool = True
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds of the child

    def compared(self, src: str) -> Variant:
        return Variant(self.name + COMPARED, self.argv, {**self.env, "PYTHONPATH": src})

    def run(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) of one run."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def mq_command() -> list[str]:
    script = Path(sys.executable).parent / "mq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mq"]


def local_variants(tmp: Path, env: dict[str, str]) -> list[Variant]:
    base = tmp / "lab"
    base.mkdir()
    (base / "lab.toml").write_text(LAB)
    mqsh = tmp / "mq.sh"
    mqsh.write_text(f"#!{sys.executable}\nfrom mq.cli.launch import run\nrun()\n")
    mqsh.chmod(0o755)
    local = {**env, "MQ_HOST": "local", "MQ_BASE": str(base)}
    mq = mq_command()
    subprocess.run([*mq, "sem", "-wait", "b1", "-k", "bench"], env=local, check=True, capture_output=True)
    floor = tmp / "floor.py"
    floor.write_text(FLOOR_APP)
    return [Variant("python3 -c pass", [sys.executable, "-c", "pass"], env, runs_mq=False),
            Variant(FLOOR, [sys.executable, str(floor), "hello"], env, runs_mq=False),
            Variant("mq sem -info b1", [*mq, "sem", "-info", "b1"], local),
            Variant("mq --help", [*mq, "--help"], local),
            Variant("mq.sh sem -info b1", [str(mqsh), "sem", "-info", "b1"], local)]


def ssh_variants(tmp: Path, env: dict[str, str], sshd: Any) -> list[Variant]:
    import conftest
    from sshd import client_config

    lab = conftest.make_lab(Path(sshd.root) / "lab", shared=True)
    known = tmp / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    cfg = client_config(sshd, SSH_USER, tmp / "ssh_config", known_hosts=known)
    remote = {**env, "MQ_HOST": ALIAS, "MQ_BASE": str(lab.base), "MQ_SSH_CONFIG": str(cfg)}
    return [Variant("ssh labhost true", ["ssh", "-F", str(cfg), ALIAS, "true"], env, runs_mq=False),
            Variant("mq sem -info b1 (ssh)", [*mq_command(), "sem", "-info", "b1"], remote)]


def measure(variants: list[Variant], runs: int, warmup: int = 2) -> None:
    for index in range(warmup + runs):
        for variant in variants:
            elapsed, cpu = variant.run()
            if index >= warmup:
                variant.times.append(elapsed)
                variant.cpu.append(cpu)


def report(variants: list[Variant]) -> None:
    medians = {"wall": {v.name: statistics.median(v.times) for v in variants},
               "cpu": {v.name: statistics.median(v.cpu) for v in variants}}
    runs = len(variants[0].times)
    print(f"{'command':<35} {'median ms':>10} {'min':>8} {'max':>8} {'CPU ms':>8}   ({runs} runs each)")
    for v in variants:
        print(f"{v.name:<35} {medians['wall'][v.name] * 1000:>10.1f} {min(v.times) * 1000:>8.1f} "
              f"{max(v.times) * 1000:>8.1f} {medians['cpu'][v.name] * 1000:>8.1f}")
    print("\nratios of medians (targets of issues 8 and 22)")
    for command, baseline, target, measure_ in TARGETS:
        found = medians[measure_]
        for name in (command, command + COMPARED):
            if name in found and baseline in found:
                ratio = found[name] / found[baseline]
                verdict = "meets" if ratio <= target else "MISSES"
                print(f"  {name:<35} / {baseline:<18} {measure_:>4} {ratio:5.2f}x   (target <= {target}x: {verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per command (default 20)")
    parser.add_argument("--no-ssh", action="store_true", help="skip the SSH figures (they need root and sshd)")
    parser.add_argument("--compare", metavar="DIR", help="also run every mq command with the mq of this source tree")
    args = parser.parse_args()
    with_ssh = not args.no_ssh and ssh_bench_ready()
    tmp = Path(tempfile.mkdtemp(prefix="mqs-"))
    root = Path("/tmp") / f"mq-bench-startup-{os.getpid()}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MQ_", "SSH_", "XDG_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HOME=str(tmp), PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    sshd = None
    try:
        variants = local_variants(tmp, env)
        if with_ssh:
            import conftest
            from sshd import start_sshd

            sshd = start_sshd(root, conftest.TEST_USERS)
            variants += ssh_variants(tmp, env, sshd)
        if args.compare:
            variants += [v.compared(os.path.abspath(args.compare)) for v in variants if v.runs_mq]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"mq start-up: python {sys.version.split()[0]}, mq as {' '.join(mq_command())}; "
              f"{os.cpu_count()} CPUs, load average {load} at start\n")
        measure(variants, args.runs)
        report(variants)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nload average {load} at end")
        return 0
    finally:
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
