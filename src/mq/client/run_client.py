"""``mq run`` on the client: check the request, upload the images, run and stream the job.

The job itself runs on the lab host (``engine.run_host``).

Everything that can be checked before locking is checked here, so a bad
request never takes a board: the image count against the system's
``files``, ``-L`` and ``-b`` against ``pxe_linux`` and ``dtb``, and that every
file exists and is readable. On a pool, only the members that suit the job
are waited for.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mq.engine.core.arguments import MAX_SECONDS
from mq.engine.core.errors import BoardOfflineError, ExitCode
from mq.engine.core.inventory import System
from mq.engine.core.names import NO_KEY
from mq.engine.core.outcomes import CONSOLE_ENDED, DETACHED, OUTCOME_EXIT, TIMED_OUT, TIMEOUT_MARKER
from mq.engine.host.boot import compile_pattern
from mq.settings.errors import BadInputError, UsageError
from mq.transport.keyboard import Keyboard
from mq.views.waitline import WaitLine

from .console import ConsoleSink
from .service import Lab, sem_info, wait_budget

BIG_UPLOAD = 4 << 20  # show a progress bar on a terminal from this size
RESERVATION_KEY = "reservation"  # the key of a `run -r` given no -k: -info shows what the lock is


@dataclass
class RunOptions:
    target: str
    completion: str | None = None
    error: str | None = None
    timeout: float = -1.0
    log: str | None = None
    key: str = NO_KEY
    held: bool = False
    reserve: bool = False
    interactive: bool = False
    linux: bool = False
    dtb: str | None = None
    bitstream: str | None = None
    files: list[str] = field(default_factory=list)
    period: float = 8.0
    retries: int = -1
    priority: int | None = None  # None: the inventory's [queue]
    console_to_stderr: bool = False  # --json: stdout carries the summary only
    owner_only: bool = False  # -n as mq.sh checks it: the caller holds the board, whatever the key


@dataclass
class RunResult:
    outcome: str
    board: str
    exit_code: int
    notes: list[str]
    powered_off: bool = False  # the system's power_off ran and succeeded
    taken_by: str | None = None  # outcome lock-lost: who holds the board now (None: nobody)
    lost_why: str | None = None  # outcome lock-lost on the PostgreSQL queue: how the lock went
    duration: float = 0.0  # seconds, from the start of the command's run to its result


Notify = Callable[[str], None]


class Voice:
    """What ``mq run`` says on stderr as its job goes (``cli/mqsh_run`` says it as ``mq.sh``)."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self._line: WaitLine | None = None

    def starting(self, opts: RunOptions, boards: list[str]) -> None:
        """The request passed every check; nothing is copied or locked yet."""
        if opts.reserve and (opts.completion or opts.error or opts.files or opts.interactive):
            self.notify("mq: -r reserves the board without booting it; -c, -e, -f and -a are ignored")

    def queued(self, fields: dict[str, Any]) -> None:
        """Where the job stands in the queue (the waiting line)."""
        self._line = self._line or WaitLine()
        self._line.update(fields)

    def board(self, board: str, took: bool, reserve: bool) -> None:
        """The job has its board: ``took``, locked for it (else the caller held it, ``-n``)."""
        self.waited()
        if reserve:
            self.notify(f"mq: {board} is yours (locked by this command). Press Enter or Ctrl+D to power it off "
                        "and release it.")
        else:
            self.notify(f"mq: running on {board}" + ("" if took else " (already held by you)"))

    def interactive(self) -> None:
        if sys.stderr.isatty():  # the console may have left the cursor mid-line (a raw terminal: \r too)
            sys.stderr.write("\r\n")
        self.notify("mq: console is interactive now; Ctrl+] or Ctrl+D ends the session")

    def waited(self) -> None:
        """The wait is over, one way or the other."""
        if self._line is not None:
            self._line.close()
            self._line = None


def _unsuitable(system: System, opts: RunOptions) -> str | None:
    if not opts.reserve and not system.boot:
        return f"{system.name} has no boot command"
    if not opts.reserve and len(opts.files) != system.files:
        return f"{system.name} takes {system.files} image file(s) (-f), {len(opts.files)} given"
    if opts.linux and not system.pxe_linux:
        return f"{system.name} does not PXE-boot Linux (-L)"
    if opts.dtb and not system.dtb:
        return f"{system.name} does not accept a DTB (-b)"
    return None


def check(lab: Lab, opts: RunOptions) -> list[str]:
    """The boards that suit the job; raises before anything is locked or copied."""
    if not opts.reserve and opts.completion is None:  # -c "": no completion text, as mq.sh has it
        raise UsageError("mq run needs -c TEXT (the completion text) or -r (reserve the board)")
    if opts.dtb and not opts.linux:
        raise BadInputError("-b DTB is only accepted together with -L")
    no_limit = opts.timeout in (-1, math.inf)  # (-5 is a slip, not "no limit")
    if not no_limit and not 0 <= opts.timeout <= MAX_SECONDS:
        raise BadInputError(f"-d {opts.timeout:g}: must be a number of seconds up to {MAX_SECONDS:.0f} "
                            "(-1 or inf: no time limit)")
    wait_budget(opts.period, opts.retries)  # a bad -w fails here, before anything is copied
    if opts.held and opts.reserve:
        raise UsageError("-n (run on a board you hold) and -r (reserve a board) do not go together")
    compile_pattern(opts.completion, "-c")
    compile_pattern(opts.error, "-e")
    lab.warn_untrusted = False  # run refuses below instead, when it would run a command
    members = lab.inventory.members(opts.target)
    from mq.engine.host.trust import refuse_untrusted

    refuse_untrusted(lab.inventory, members)  # the host refuses it too
    reasons = {b: _unsuitable(lab.inventory.systems[b], opts) for b in members}
    suitable = [b for b, why in reasons.items() if why is None]
    if not suitable:
        if not opts.reserve and not any(lab.inventory.systems[b].boot for b in members):
            raise lab.inventory.missing_boot(members[0])  # the lab's mistake (exit 6), not the user's
        raise BadInputError("; ".join(r for r in reasons.values() if r))
    for path in [*opts.files, *(p for p in (opts.dtb, opts.bitstream) if p)]:
        if os.path.isdir(path):
            raise BadInputError(f"{path}: is a directory, not an image file")
        if not os.path.isfile(path):
            raise BadInputError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise BadInputError(f"{path}: not readable")
    if not lab.inventory.is_pool(opts.target):  # a board out of service (mq offline); a pool skips its own
        offline = sem_info(lab, opts.target)[0].offline
        if offline is not None:
            raise BoardOfflineError(opts.target, offline.reason, offline.user, offline.since)
    return suitable


class UploadBar:
    """"uploading images" on a terminal, for uploads of ``BIG_UPLOAD`` or more; shown from the
    first bytes sent (a transport that uploads later, inside the job, shows it then)."""

    def __init__(self, total: int) -> None:
        self._bar: Any = None
        self.total = total
        self.done = 0
        self._wanted = total >= BIG_UPLOAD and os.isatty(2)

    def advance(self, sent: int) -> None:
        """``sent`` more bytes are on the host; at the total, the bar goes."""
        self.done += sent
        if self._wanted and self._bar is None:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task("uploading images", total=self.total)
            self._bar.start()
        if self._bar is not None:
            self._bar.advance(self._task, sent)
            if self.done >= self.total:
                self.close()

    def close(self) -> None:
        self._wanted = False
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _upload_all(lab: Lab, paths: list[str]) -> list[str]:
    bar = UploadBar(sum(os.path.getsize(p) for p in paths))
    try:
        return [lab.transport.upload(p, os.path.basename(p), bar.advance) for p in paths]
    finally:
        bar.close()


def run(lab: Lab, opts: RunOptions, voice: Voice) -> RunResult:
    started = time.monotonic()
    boards = check(lab, opts)
    sink = ConsoleSink(opts.log, opts.console_to_stderr)
    voice.starting(opts, boards)
    try:
        result = _run(lab, opts, boards, sink, voice)
        sink.finish()
        result.duration = round(time.monotonic() - started, 3)
        return result
    finally:
        sink.close()


def _run(lab: Lab, opts: RunOptions, boards: list[str], sink: ConsoleSink, voice: Voice) -> RunResult:
    uploaded = _upload_all(lab, opts.files)
    extra = _upload_all(lab, [p for p in (opts.dtb, opts.bitstream) if p])
    dtb = extra.pop(0) if opts.dtb else ""
    bitstream = extra.pop(0) if opts.bitstream else ""
    spec: dict[str, Any] = {
        "target": opts.target, "boards": boards,
        "key": RESERVATION_KEY if opts.reserve and opts.key == NO_KEY else opts.key,
        "mode": "held" if opts.held else "reserve" if opts.reserve else "run",
        "completion": opts.completion, "error": opts.error,
        "timeout": opts.timeout if math.isfinite(opts.timeout) else -1.0,  # -d inf: no deadline (finite on the wire)
        "budget": wait_budget(opts.period, opts.retries), "interactive": opts.interactive, "files": uploaded,
        "dtb": dtb, "bitstream": bitstream, "linux": opts.linux,
    }
    if opts.priority is not None:
        spec["priority"] = opts.priority
    if opts.owner_only:
        spec["owner_only"] = True
    keyboard = Keyboard("reserve") if opts.reserve else Keyboard("interactive") if opts.interactive else None

    upload: UploadBar | None = None  # the PostgreSQL queue uploads once it knows the board's host

    def on_event(event: str, data: bytes, fields: dict[str, Any]) -> None:
        nonlocal upload
        if event == "console":
            sink.write(data)
        elif event == "upload":
            upload = upload or UploadBar(int(fields.get("total", 0)))
            upload.advance(int(fields.get("sent", 0)))
        elif event == "queue":
            voice.queued(fields)
        elif event == "board":
            voice.board(str(fields.get("board", "?")), bool(fields.get("grant")), opts.reserve)
        elif event == "interactive":
            voice.interactive()

    try:
        if keyboard is not None:
            with keyboard.terminal():
                result = lab.transport.run_job(spec, on_event, keyboard)
        else:
            result = lab.transport.run_job(spec, on_event, None)
    finally:
        voice.waited()
        if upload is not None:
            upload.close()
    outcome = str(result["outcome"])
    if outcome == TIMED_OUT:  # after all the console (its events came before the result), on a line of its own
        sink.line(TIMEOUT_MARKER)
    no_text = outcome == CONSOLE_ENDED and opts.completion == ""  # -c "": the console's end is the job's end
    code = ExitCode.OK if outcome == DETACHED or no_text else OUTCOME_EXIT.get(outcome, 1)
    taken_by, why = result.get("taken_by"), result.get("lost_why")
    return RunResult(outcome=outcome, board=str(result["board"]), exit_code=code, notes=list(result["notes"]),
                     powered_off=bool(result.get("powered_off")), taken_by=None if taken_by is None else str(taken_by),
                     lost_why=None if why is None else str(why))
