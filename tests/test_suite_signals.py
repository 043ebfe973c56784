"""The suite itself: the children a test starts begin with SIGINT, SIGTERM and SIGHUP at
their defaults, even when the suite was started ignoring them (a background job of a
non-interactive shell, ``nohup``), so the Ctrl+C, TERM and HUP tests test mq and not the
shell the suite was started from (issue 17; conftest.pytest_configure)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pexpect

from conftest import CHILD_DEFAULT_SIGNALS

HERE = Path(__file__).resolve()
SHOW_MASKS = ["cat", "/proc/self/status"]  # not Python: it catches SIGINT itself


def masks(status: str) -> dict[str, int]:
    """``SigIgn``, ``SigBlk`` and ``SigCgt`` of a /proc/PID/status text."""
    wanted = ("SigIgn:", "SigBlk:", "SigCgt:")
    fields = dict(line.split(":", 1) for line in status.splitlines() if line.startswith(wanted))
    return {name: int(value.split()[0], 16) for name, value in fields.items()}


def at_default(status: str) -> list[str]:
    """The names of the signals among INT, TERM and HUP that are not at their default."""
    got = masks(status)
    return [signal.Signals(s).name for s in CHILD_DEFAULT_SIGNALS
            if (got["SigIgn"] | got["SigBlk"] | got["SigCgt"]) & (1 << (s - 1))]


def test_children_start_with_default_signals() -> None:
    """A subprocess and a pexpect child of the test process: INT, TERM and HUP neither
    ignored, blocked nor caught."""
    out = subprocess.run(SHOW_MASKS, capture_output=True, text=True, check=True).stdout
    assert at_default(out) == [], out
    child = pexpect.spawn(SHOW_MASKS[0], SHOW_MASKS[1:], encoding="utf-8", timeout=30)
    text = child.read()
    child.close()
    assert at_default(text) == [], text


def ignore_all() -> None:
    for signum in CHILD_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])


def test_a_suite_started_ignoring_signals_still_gives_its_children_the_defaults() -> None:
    """The test above, in a pytest started with INT, TERM and HUP ignored and HUP blocked,
    as ``nohup pytest &`` from a script starts it."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{HERE}::test_children_start_with_default_signals"],
                          capture_output=True, text=True, timeout=120, cwd=HERE.parent.parent,
                          preexec_fn=ignore_all)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout
