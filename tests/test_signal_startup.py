"""A signal while mq starts: from mq's first line, one line and 128+N (issue 9, item 1).

The real console scripts (``mq``, ``mq.sh``) and ``python -m mq`` get SIGINT, SIGTERM
or SIGHUP at random moments of their first 150 ms. Before mq's first line runs
(the interpreter starting, ``site``, the script's own ``import re``) the signal
is Python's to handle; whether mq's handlers were in place when the signal was
sent is read from ``/proc/PID/status`` (SigCgt: Python itself never catches
TERM or HUP), so every run sent after that point is held to the promise.
Also: a signal ignored at start (``nohup``) stays ignored.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LabFixture, engine, key_of, said, ticket_pids, wait_for

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BIN = Path(sys.executable).parent


def entry_argv(entry: str) -> list[str]:
    """How to start ``entry``: the console script next to the interpreter, else ``python -m mq``."""
    script = BIN / entry
    if entry != "-m" and script.exists():
        return [str(script)]
    if entry == "mq.sh":
        pytest.skip("no mq.sh console script next to the interpreter")
    return [sys.executable, "-m", "mq"]


def signal_mask(pid: int, field: str) -> int:
    """A signal mask of ``pid`` from /proc (``SigCgt``: caught, ``SigIgn``: ignored); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def in_mask(mask: int, signums: tuple[int, ...]) -> bool:
    return all(mask & (1 << (signum - 1)) for signum in signums)


def one_trial(lab: LabFixture, argv: list[str], signum: int, delay: float) -> bool:
    """Start ``argv``, signal it after ``delay`` s, check the outcome; True when mq's
    handlers were already in (the strict case)."""
    proc = subprocess.Popen(argv, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    ours = in_mask(signal_mask(proc.pid, "SigCgt"), SIGNALS)  # once in, mq's handlers stay to the end
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    code = proc.returncode
    what = f"{argv[-4:]} {signal.Signals(signum).name} after {delay * 1000:.1f} ms (mq's handlers in: {ours}): " \
           f"exit {code}\n{err}"
    assert "RuntimeError" not in err, what
    if code == 128 + signum:
        # exactly one line about the signal, the last; before it only what mq had already
        # said by then (a sem -wait past start-up may have printed its waiting line)
        lines = err.splitlines()
        assert lines[-1:] == [f"mq: interrupted by {signal.Signals(signum).name}; nothing left held or queued"], \
            what
        assert said(err) == lines[-1:], what
    elif code != 0:  # only Python's own end is left, for a signal sent before mq's first line
        python_end = code == -signum or (signum == signal.SIGINT and code == 1)  # 1: in `site`, at start-up
        assert not ours and python_end, what
        assert "/mq/" not in err, what  # a traceback, if any, is the interpreter's or the script's, not mq's
    if ours:
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, what
    return ours


def trials(lab: LabFixture, entry: str, count: int, seed: int) -> None:
    """``count`` trials spread over the first 150 ms: half a quick ``sem -info`` (may
    finish first), half a ``sem -wait`` on a held board (never finishes by itself)."""
    eng = engine(lab)
    eng.wait("b1", key="hold", budget=0)
    rng = random.Random(seed)
    argv = entry_argv(entry)
    strict = 0
    for index in range(count):
        delay = (index + rng.random()) * 0.150 / count
        command = ["sem", "-info", "b1"] if index % 2 else ["sem", "-wait", "b1", "-k", f"w{index}"]
        strict += one_trial(lab, [*argv, *command], SIGNALS[rng.randrange(3)], delay)
    assert lab.tickets() == [] and key_of(lab, "b1") == "hold"  # nothing queued or taken behind
    assert strict >= count // 4, f"only {strict} of {count} signals reached mq's own handlers"


@pytest.mark.parametrize("entry", ["mq", "mq.sh", "-m"])
def test_signal_while_starting_quick(lab: LabFixture, entry: str) -> None:
    trials(lab, entry, 10, seed=9)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["mq", "mq.sh", "-m"])
def test_signal_while_starting_many(lab: LabFixture, entry: str) -> None:
    trials(lab, entry, 60, seed=int(time.time()))


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_ignored_at_start_stays_ignored(lab: LabFixture, signum: int) -> None:
    """``nohup mq sem -wait b1`` (or INT/TERM ignored by whoever started mq): the signal
    changes nothing, the wait goes on and gets the board when it is released."""
    eng = engine(lab)
    eng.wait("b1", key="hold", budget=0)
    proc = subprocess.Popen([*entry_argv("mq"), "sem", "-wait", "b1", "-k", "nohup"], env=lab.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN))  # noqa: PLW1509
    try:
        wait_for(lambda: proc.pid in ticket_pids(lab) or proc.poll() is not None, what="the waiter's ticket")
        assert in_mask(signal_mask(proc.pid, "SigIgn"), (signum,)), "mq took over an ignored signal"
        proc.send_signal(signum)
        assert proc.poll() is None and proc.pid in ticket_pids(lab)
        eng.signal("b1", key="hold")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out) == (0, "b1\n"), (proc.returncode, out, err)
    assert key_of(lab, "b1") == "nohup"



HELD_BY_AN_IMPORT = """
import sys, threading, time
from pathlib import Path
from mq.engine.core.errors import Interrupted
from mq.engine.core.signals import GUARD

GUARD.install()
Path(sys.argv[1], "slow_module.py").write_text(
    "import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(0.2)\\n")
sys.path.insert(0, sys.argv[1])
started = time.monotonic()
try:
    import slow_module  # the signal lands inside this import: held back until it is over
    threading.Event().wait(10)  # then a block where nothing calls GUARD.check()
except Interrupted as exc:
    print(f"{exc.signum} {time.monotonic() - started:.2f}")
"""


def test_signal_held_by_an_import_is_raised_when_it_is_over(tmp_path: Path) -> None:
    """A signal landing in one of the command's lazy imports (the CLI loading while the
    SSH connection is made in the background) ends mq once the import is over, even
    when the main thread then blocks with nothing to look at pending signals."""
    proc = subprocess.run([sys.executable, "-c", HELD_BY_AN_IMPORT, str(tmp_path)], capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    signum, seconds = proc.stdout.split()
    assert int(signum) == signal.SIGINT
    assert 0.2 <= float(seconds) < 2, proc.stdout  # not before the import ended, not after the 10 s wait
