"""Invoked as ``mq.sh``: mq.sh master's command line, stdout and exit codes.

A script or CI job that swaps ``mq`` in for ``mq.sh`` must not see a
difference (``../shared/reference/mq-sh.md``, "Exact behaviour under the
``mq.sh`` name"). So under that name:

* ``sem`` is parsed as mq.sh's own loop parses it (an action takes the next
  word as the system, later options win, unknown options are named);
* every message goes to stdout in mq.sh's words, with mq.sh's exit codes
  (0, 1, 2), and nothing of mq's own (grant numbers, waiters) is added;
* configuration is mq.sh's: ``~/.mq`` (``HOST=``, ``BASE=``), else its
  built-in lab host; never the demo lab;
* an SSH failure of any command prints ``Unable to ssh to HOST`` on stdout and
  exits 1 (the seL4 CI repeats the test when it sees that line).

Nothing here imports typer: ``sem`` runs without loading the CLI framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from mq.client import service
from mq.engine.core.errors import (
    AlreadyHeldError,
    EngineError,
    Interrupted,
    NotAcquiredError,
    NotHolderError,
    UnknownTargetError,
)
from mq.engine.core.names import NO_KEY
from mq.engine.core.results import Grant
from mq.settings.config import load_config
from mq.views import render

from .acquire import acquire
from .mqsh_exits import FAILED, MISSING_VALUE, NOT_ACQUIRED, OK, Exit, already_held, gave_up, unknown_target
from .mqsh_usage import full_usage, sem_usage, usage

COMMANDS = ("run", "systems", "sem", "system-tsv", "pool-tsv", "features")
ACTIONS = ("-info", "-mr-info", "-signal", "-wait", "-cancel")
VALUE_OPTIONS = ("-w", "-t", "-k", "-T")
_INTEGER = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


@dataclass
class SemArgs:
    """``mq.sh sem`` as its shell loop reads it."""

    action: str = ""
    system: str = ""
    period: str = "8"
    retries: str = "-1"
    key: str = NO_KEY
    timeout: str = "0"
    force: bool = False
    dumpall: bool = False


def parse_sem(args: Sequence[str], prog: str) -> SemArgs:
    parsed = SemArgs()
    index = 0
    while index < len(args):
        word = args[index]
        if word in ACTIONS or word in VALUE_OPTIONS:
            if index + 1 >= len(args):
                render.err(f"{prog}: {word}: option requires an argument")
                raise Exit(MISSING_VALUE)
            value = args[index + 1]
            index += 2
            if word in ACTIONS:
                parsed.action, parsed.system = word, value
            else:
                setattr(parsed, {"-w": "period", "-t": "retries", "-k": "key", "-T": "timeout"}[word], value)
            continue
        index += 1
        if word == "-f":
            parsed.force = True
        elif word == "dumpall":
            parsed.dumpall = True
            return parsed
        elif word == "help":
            raise Exit(FAILED, sem_usage(prog))
        elif word == "--":
            break
        elif word.startswith("-") or parsed.system:  # a second name: mq.sh's loop knows no such word
            raise Exit(FAILED, [f"Unknown option {word}", *sem_usage(prog)])
        else:
            parsed.system = word
    if not _INTEGER.fullmatch(parsed.timeout):
        raise Exit(FAILED, ["-T <timeout> requires a positive integer"])
    return parsed


class Sem:
    """One ``mq.sh sem`` command on an opened lab."""

    def __init__(self, lab: service.Lab, args: SemArgs, prog: str) -> None:
        self.lab = lab
        self.args = args
        self.prog = prog
        self.lines: List[str] = []

    def run(self) -> int:
        args = self.args
        if args.dumpall:
            self.lines += [render.mr_info_line(s, as_mqsh=True)
                           for s in service.sem_dumpall(self.lab, order="directory")]
            return OK
        handlers: dict[str, Callable[[List[str]], int]] = {
            "-info": self._info, "-mr-info": self._info, "-signal": self._signal, "-wait": self._wait,
            "-cancel": self._cancel}
        if args.action not in handlers:  # `sem NAME`, `sem` alone
            raise Exit(FAILED, ["Unknown usage", *sem_usage(self.prog)])
        return handlers[args.action](self._members(args.system))

    def _members(self, name: str) -> List[str]:
        inventory = self.lab.inventory
        if name in inventory.systems:
            return [name]
        if name in inventory.pools:
            return list(inventory.pools[name].members)
        raise unknown_target(UnknownTargetError(name, list(inventory.systems), list(inventory.pools)))

    @property
    def is_pool(self) -> bool:
        return self.args.system in self.lab.inventory.pools

    def _info(self, members: List[str]) -> int:
        states = service.sem_info(self.lab, self.args.system)
        if self.is_pool:  # mq.sh names one member (a free one if any), then reports on it
            chosen = next((s for s in states if s.holder is None), states[0])
            self.lines.append(chosen.board)
            states = [chosen]
        line: Callable[..., str] = render.info_line if self.args.action == "-info" else render.mr_info_line
        self.lines += [line(s, as_mqsh=True) for s in states]
        return OK

    def _signal(self, members: List[str]) -> int:
        args = self.args
        try:
            released = service.sem_signal(self.lab, args.system, key=args.key, force=args.force)
        except NotHolderError as exc:
            board = exc.name if exc.name in members else members[0]
            if self.is_pool:
                self.lines.append(board)
            if not args.force:
                self.lines.append(f"Attempting to unlock system {board} with the wrong key!"
                                  if exc.why == NotHolderError.WRONG_KEY
                                  else f"Attempting to unlock system {board} that you do not hold")
            return OK
        if self.is_pool:
            self.lines.append(released[0].board)
        return OK

    def _cancel(self, members: List[str]) -> int:
        service.sem_cancel(self.lab, self.args.system, key=self.args.key)
        if self.is_pool:
            self.lines.append(members[0])
        return OK

    def _wait(self, members: List[str]) -> int:
        args = self.args
        name = args.system
        if not (_NUMBER.fullmatch(args.period) and _SIGNED.fullmatch(args.retries)):
            raise Exit(NOT_ACQUIRED, [f"Failed to acquire lock for system ({name})"])  # lockfile refuses them

        def report(grant: Grant) -> None:
            if grant.board != name:
                render.out(grant.board)  # a pool: the member it got, as mq.sh prints it

        try:
            acquire(self.lab, name, args.key, int(args.timeout), float(args.period), int(args.retries), report)
        except AlreadyHeldError as exc:
            raise already_held(exc) from None
        except NotAcquiredError as exc:
            raise gave_up(self.lab, name, exc) from None
        return OK


def sem(args: Sequence[str], prog: str, host: Optional[str], base: Optional[str]) -> int:
    parsed = parse_sem(args, prog)
    lab = service.open_lab(load_config(host=host, base=base, mqsh=True))
    command = Sem(lab, parsed, prog)
    try:
        return command.run()
    finally:  # what was said before an error, then the error's own lines (``main``)
        render.write_lines(command.lines)
        lab.close()


def failure(exc: EngineError) -> Exit:
    """Any other error, as mq.sh reports trouble: one line on stdout, exit 1."""
    from mq.transport.base import SshError

    if isinstance(exc, SshError):
        render.err(f"mq.sh: {exc.reason}")
        return Exit(FAILED, [f"Unable to ssh to {exc.host}"])
    if isinstance(exc, UnknownTargetError):
        return unknown_target(exc)
    return Exit(FAILED, [exc.message.splitlines()[0] if exc.message else "error"])


def main(argv: List[str], prog: str, host: Optional[str], base: Optional[str],
         delegate: Callable[[List[str]], int]) -> int:
    """``mq.sh ARGS``; commands other than ``sem`` go to ``delegate`` (the typer CLI as mq.sh)."""
    try:
        if not argv:
            raise Exit(FAILED, full_usage(prog))
        if argv[0] == "sem":
            return sem(argv[1:], prog, host, base)
        if argv[0] == "run":
            from . import mqsh_run

            return mqsh_run.main(argv[1:], prog, host, base)
        if argv[0] not in COMMANDS:
            raise Exit(OK, usage(prog))
        return delegate(argv)
    except Exit as leave:
        render.write_lines(leave.lines)
        return leave.code
    except Interrupted:
        raise
    except EngineError as exc:
        trouble = failure(exc)
        render.write_lines(trouble.lines)
        return trouble.code
