"""Signals while mq loads: one line and 128+N from mq's first line, when it is the program.

``mq/__init__`` imports this first (with the signals held off) when ``sys.argv``
says mq may be the program, not a library someone imported: the console
scripts ``mq`` and ``mq.sh``, or ``python -m mq``. Nothing is held or queued
while the CLI loads, so a signal just says so and ends the process; the CLI
hands over to ``signals.GUARD`` before a command touches a lab.

A signal ignored at start (``nohup``'s SIGHUP, a background job's SIGINT)
stays ignored, here and in ``GUARD``: children inherit it, as ``nohup`` means.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Optional, Sequence

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROGRAM_NAMES = ("mq", "mq.sh")  # the console scripts (pyproject.toml [project.scripts])


def exit_at_once(signum: int, _frame: Optional[FrameType]) -> None:
    """While loading: one line, exit 128+N (the same words as ``Interrupted``)."""
    os.write(2, f"mq: interrupted by {signal.Signals(signum).name}; nothing left held or queued\n".encode())
    os._exit(128 + signum)


def install() -> None:
    """Handle every signal of ``HANDLED`` that is not ignored (main thread only; idempotent)."""
    for signum in HANDLED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # ignored at start: stays ignored
        try:
            signal.signal(signum, exit_at_once)
        except ValueError:  # not the main thread: not a program's start
            return


def is_program(argv: Sequence[str], orig_argv: Sequence[str]) -> bool:
    """``argv`` (``sys.argv`` while ``mq`` is first imported) is that of ``mq``/``mq.sh``
    or of ``python -m mq`` (not ``-m mq.engine.host.agent`` and the like)."""
    if not argv:
        return False
    if argv[0] != "-m":  # a script: the console scripts are the only ones with these names
        return os.path.basename(argv[0]) in PROGRAM_NAMES
    if len(orig_argv) < len(argv):
        return False
    module = orig_argv[len(orig_argv) - len(argv)]  # the word before the program's own arguments
    if module.startswith("-"):  # "-mmq": the module's name glued to the option
        module = module.partition("m")[2]
    return module in ("mq", "mq.__main__")


def install_if_program() -> None:
    if is_program(getattr(sys, "argv", []), getattr(sys, "orig_argv", [])):
        install()
