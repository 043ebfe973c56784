"""``mq.sh run``: mq.sh's command line, stdout lines and exit codes for a job.

Under the name ``mq.sh`` a ``run`` is what ``mq.sh``'s users and CI scripts read
(``../shared/reference/mq-sh.md``, "``mq.sh``'s usage texts"):

* stdout carries ``mq.sh``'s own lines (``Selecting system 'NAME' from pool
  'POOL'``, ``Acquiring lock for NAME`` and the board's ``-info`` line, ``Lock
  acquired, we are allowed to run``; for ``-r`` the reservation's lines and
  ``Attempting to power off machine now that you are done``) and the console;
  stderr carries nothing of mq's own (no waiting line, no ``mq:`` lines);
* an option or file error is one line on stdout, exit 1; a lock it cannot get
  is ``Failed to acquire lock for system (NAME)``, exit 2; ``-n`` checks that
  the caller holds the board, whatever its key, else ``Failed to run because
  you said you own the lock (-n flag), but you don't!``, exit 1;
* ``-c ""`` is no completion text: the job runs until the console ends (exit 0),
  the error text, ``-d``, or the client hangs up (the sddf CI's ``run -n -c ""
  -a``). A job's own outcome keeps mq's exit code (README "Exit codes").

Nothing here imports typer.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from mq.client import service
from mq.client.run_client import RunOptions, Voice, run
from mq.engine.core.errors import (
    AlreadyHeldError,
    BadInputError,
    Interrupted,
    NotAcquiredError,
    NotHolderError,
    UnknownTargetError,
)
from mq.engine.core.names import NO_KEY
from mq.settings.config import load_config
from mq.views import render

from .mqsh_exits import FAILED, Exit, already_held, gave_up, unknown_target
from .mqsh_usage import run_usage

VALUES = {"-s": "target", "-c": "completion", "-e": "error", "-d": "timeout", "-l": "log", "-k": "key",
          "-b": "dtb", "--bitstream": "bitstream", "-w": "period", "-t": "retries"}
FLAGS = {"-n": "held", "-r": "reserve", "-a": "interactive", "-L": "linux"}
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
NOT_OWNER = "Failed to run because you said you own the lock (-n flag), but you don't!"


@dataclass
class RunArgs:
    """``mq.sh run`` as its option loop reads it (the last of a repeated option wins, ``-f`` adds)."""

    values: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    files: List[str] = field(default_factory=list)


def parse_run(args: Sequence[str], prog: str) -> RunArgs:
    parsed = RunArgs()
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word in FLAGS:
            parsed.flags.add(FLAGS[word])
        elif word in VALUES or word == "-f":
            if index >= len(args):
                raise Exit(FAILED, [f"Option {word} requires an argument"])
            value = args[index]
            index += 1
            if word == "-f":
                parsed.files.append(value)
            else:
                parsed.values[VALUES[word]] = value
        elif word == "help":
            raise Exit(FAILED, run_usage(prog))
        else:
            raise Exit(FAILED, [f"Unknown option {word}"])
    return parsed


def options(parsed: RunArgs) -> RunOptions:
    """The job, or ``Exit`` with mq.sh's one line for what is wrong with the command line."""
    values = parsed.values
    if "target" not in values:
        raise Exit(FAILED, ["No system specified (-s SYSTEM)"])
    if "completion" not in values and "reserve" not in parsed.flags:
        raise Exit(FAILED, ["Either -c <completion text> or -r (reserve) is required"])
    for option, name in (("-d", "timeout"), ("-w", "period"), ("-t", "retries")):
        if name in values and not _NUMBER.fullmatch(values[name]):
            raise Exit(FAILED, [f"{option} requires a number, not '{values[name]}'"])
    for path in parsed.files:
        if not os.path.isfile(path):
            raise Exit(FAILED, [f'File "{path}" either does not exist, or is not considered a valid file'])
    timeout = float(values.get("timeout", "-1"))
    return RunOptions(
        target=values["target"], completion=values.get("completion"), error=values.get("error") or None,
        timeout=-1.0 if timeout < 0 else timeout, log=values.get("log"), key=values.get("key", NO_KEY),
        held="held" in parsed.flags, reserve="reserve" in parsed.flags, interactive="interactive" in parsed.flags,
        linux="linux" in parsed.flags, dtb=values.get("dtb"), bitstream=values.get("bitstream"),
        files=list(parsed.files), period=float(values.get("period", "8")),
        retries=int(float(values.get("retries", "-1"))), owner_only="held" in parsed.flags)


class MqshVoice(Voice):
    """A job's progress in ``mq.sh``'s lines on stdout; nothing of mq's on stderr."""

    def __init__(self, lab: service.Lab, opts: RunOptions) -> None:
        super().__init__(lambda message: None)
        self.lab = lab
        self.opts = opts
        self.pool = lab.inventory.is_pool(opts.target)

    def starting(self, opts: RunOptions, boards: List[str]) -> None:
        if not opts.held and not self.pool:
            self._say(f"Acquiring lock for {opts.target}",
                      *(render.info_line(s, as_mqsh=True) for s in service.sem_info(self.lab, opts.target)))

    def queued(self, fields: dict[str, Any]) -> None:
        return  # mq.sh waits in silence

    def board(self, board: str, took: bool, reserve: bool) -> None:
        if not took:
            return  # -n: mq.sh says nothing before the console
        lines = [f"Selecting system '{board}' from pool '{self.opts.target}'", f"Acquiring lock for {board}"] \
            if self.pool else []
        lines.append("Lock acquired, we are allowed to run")
        if reserve:
            lines += [f"This is a reservation. You now own {board} and",
                      "can do what you want. Press ctrl+d or enter here when done"]
        self._say(*lines)

    def interactive(self) -> None:
        return

    @staticmethod
    def _say(*lines: str) -> None:
        render.write_lines(lines)
        sys.stdout.flush()


def main(args: Sequence[str], prog: str, host: Optional[str], base: Optional[str]) -> int:
    """``mq.sh run ARGS``; errors of the lab itself go to ``mqsh.main`` (one line, exit 1)."""
    opts = options(parse_run(args, prog))
    lab = service.open_lab(load_config(host=host, base=base, mqsh=True))
    try:
        return _run(lab, opts)
    finally:
        lab.close()


def _run(lab: service.Lab, opts: RunOptions) -> int:
    inventory = lab.inventory
    try:
        inventory.members(opts.target)
    except UnknownTargetError as exc:
        raise unknown_target(exc) from None
    system = inventory.systems.get(opts.target)
    if system is not None and not opts.reserve and len(opts.files) != system.files:
        raise Exit(FAILED, [f"Wrong number of files specified for system {opts.target}"])
    try:
        result = run(lab, opts, MqshVoice(lab, opts))
    except BadInputError as exc:
        raise Exit(FAILED, [exc.message.splitlines()[0]]) from None
    except NotHolderError:
        raise Exit(FAILED, [NOT_OWNER]) from None
    except NotAcquiredError as exc:
        raise gave_up(lab, opts.target, exc) from None
    except AlreadyHeldError as exc:
        raise already_held(exc) from None
    except Interrupted as exc:  # mq.sh's trap: the job is cleaned up, nothing more is said
        return int(exc.exit_code)
    if opts.reserve:
        MqshVoice._say("Attempting to power off machine now that you are done")
    return result.exit_code
