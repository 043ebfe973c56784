"""``mq run`` on the lab host: lock (or check) a board, boot it, watch its console, clean up.

The client side is ``mq.client.run_client``; booting and the console are ``boot``,
the uploaded images' directory ``jobdir``; the lock is taken and released
through ``interface.LockEngine``.

One call of ``run_job`` is one job. Whatever ends it (success, failure, the
client gone, a signal), its ``finally`` stops the console, powers the board
off, deletes the uploaded images and releases the lock the job took. While
the job runs, ``lockwatch`` watches that lock (or the one ``-n`` names): if it
is broken or reclaimed behind the job's back, the job ends with the outcome
``lock-lost`` and leaves the lock at the path alone (it is the new holder's).
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from mq.engine.core import health, outcomes
from mq.engine.core.errors import BadInputError, ClientGone, EngineError, Interrupted
from mq.engine.core.interface import JobEngine
from mq.engine.core.names import NO_KEY
from mq.engine.core.signals import GUARD
from mq.engine.lockdir.lockwatch import LockLoss, LockLost, LockWatch, watch_lock

from . import boot, trust
from .jobdir import JobDir

# What the client side can ask for while a job runs (from the user's keyboard):
# bytes for the board (-a), detach (Ctrl+] in -a), release (Enter in -r), end of input;
# and, for a bare job, that the lock the client holds for it was taken away (its data:
# the new holder, or empty).
STDIN, DETACH, RELEASE, EOF = "stdin", "detach", "release", "eof"
LOCK_LOST = "lock_lost"
Command = Tuple[str, bytes]


@dataclass
class JobSpec:
    target: str
    boards: List[str]
    key: str = NO_KEY
    mode: str = "run"  # run | held (-n) | reserve (-r)
    owner_only: bool = False  # -n as mq.sh checks it: the caller's lock, whatever its key
    completion: Optional[str] = None
    error: Optional[str] = None
    timeout: float = -1.0  # -d; < 0: none
    budget: Optional[float] = None  # -w x -t
    priority: Optional[int] = None  # --priority (None: the inventory's [queue])
    interactive: bool = False  # -a
    files: List[str] = field(default_factory=list)  # host paths, in -f order
    dtb: str = ""
    bitstream: str = ""
    linux: bool = False
    system: Optional[Dict[str, Any]] = None  # a bare job: this system's definition, its lock held elsewhere


class JobIO(Protocol):
    """How a job talks to its client (over the agent protocol, or in-process)."""

    input_fds: List[int]  # read afresh each time round: an implementation may empty it in place

    def emit(self, event: str, data: bytes = b"", **fields: Any) -> None: ...

    def on_input(self, fd: int) -> List[Command]: ...

    def tick(self) -> Optional[float]: ...


def _env(engine_root: str) -> Dict[str, str]:
    """Boot commands find ``mq.engine.host.simboard`` next to this engine."""
    env = dict(os.environ)
    env["PYTHONPATH"] = engine_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


ENGINE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # holds mq/


class _Keys:
    """The client's keyboard during one job. An end of input is remembered however
    early it comes (``-r </dev/null`` on a busy board), so it still ends the job later."""

    def __init__(self, io: JobIO) -> None:
        self.io = io
        self.ended = False
        self.board = ""
        self.bare = False  # a bare job: its lock is the client's (only then can the client say it is lost)

    def read(self, fd: int) -> List[Command]:
        commands = self.io.on_input(fd)
        if any(name == EOF for name, _ in commands):
            self.ended = True
        for name, data in commands:
            if name == LOCK_LOST and self.bare:  # the client's lock for the job is gone: stop, as for a lost lock file
                taken_by = data.decode("utf-8", "replace") or None
                raise LockLost(LockLoss(board=self.board, grant=None, taken_by=taken_by, noticed=time.time(),
                                        new_since=None))
        return commands

    def ignore(self, fd: int) -> None:
        """Keystrokes before the board is ready (or without ``-a``) are not sent to it."""
        self.read(fd)


def run_job(engine: JobEngine, spec: JobSpec, io: JobIO, job_dir: Optional[JobDir] = None) -> Dict[str, Any]:
    """Run one job to its end; returns ``{"outcome", "board", "notes", "powered_off"}`` and, when
    the job's lock was taken away (outcome ``lock-lost``), ``taken_by``: the new holder or None."""
    keys = _Keys(io)
    keys.bare = spec.system is not None
    why = "run ended"  # the audit log's reason for the release
    board = ""
    took = False
    console: Optional[boot.Console] = None
    watch: Optional[LockWatch] = None
    lost: Optional[LockLoss] = None
    notes: List[str] = []
    result: Dict[str, Any] = {"outcome": "", "board": "", "notes": notes, "powered_off": False}
    env = _env(ENGINE_ROOT)
    try:  # from the top: an early error still removes the job's uploads
        completion = boot.compile_pattern(spec.completion, "-c")
        error = boot.compile_pattern(spec.error, "-e")
        if spec.mode == "run" and spec.completion is None and not spec.interactive:  # -c "": no completion text
            raise BadInputError("mq run needs -c TEXT (or -r to reserve)")
        trust.refuse_untrusted(engine.inventory, spec.boards)  # before anything is locked
        with GUARD.deferred():  # interruptible while waiting; a grant is always recorded here
            board, grant = _take(engine, spec, keys)
            took = grant is not None
        result["board"] = keys.board = board
        watch = watch_lock(engine, board, grant)
        io.emit("board", board=board, grant=took)
        if spec.mode == "reserve":
            _wait_for(keys, (RELEASE, DETACH), watch)
            result["outcome"] = outcomes.DETACHED
        else:
            console = _boot(engine, spec, board, env)
            result["outcome"] = _watch(console, spec, keys, completion, error, watch)
        return result
    except LockLost as exc:  # not an error: the job ends, and its result says who took the board
        took = False  # never release what is there now: it is not the job's lock
        lost = _lost(exc.loss, result)
        return result
    except ClientGone as exc:
        why = f"client gone ({exc.message})"
        raise
    except Interrupted as exc:
        why = f"interrupted by {exc.signame}"
        raise
    finally:
        with GUARD.deferred():  # a second Ctrl+C must not cut the clean-up short
            if watch is not None and lost is not None:
                watch.settle(lost, spec.key, spec.mode)  # first: the new holder's own run may need the board
            elif watch is not None and result["outcome"] == outcomes.RELEASED:
                watch.let_go()
            result["powered_off"] = _clean_up(engine, spec, board, took and lost is None, console, job_dir, env,
                                              notes, why, result["outcome"])
            if watch is not None:
                watch.close()


def _lost(loss: LockLoss, result: Dict[str, Any]) -> Optional[LockLoss]:
    """The job's outcome when its lock went: ``released`` (its holder let it go with the key:
    a quiet end) or ``lock-lost`` (taken away: the loss to settle)."""
    if loss.released:
        result["outcome"] = outcomes.RELEASED
        return None
    result.update(outcome=outcomes.LOCK_LOST, taken_by=loss.taken_by)
    return loss


def _take(engine: JobEngine, spec: JobSpec, keys: _Keys) -> Tuple[str, Optional[int]]:
    """The board the job runs on, and the number of the grant that locked it for the job
    (None: ``-n``, the caller holds it already)."""
    if spec.mode == "held":
        return engine.check_held(spec.target, None if spec.owner_only else spec.key, spec.boards), None
    io = keys.io

    def progress(position: int, total: int) -> None:  # the client's waiting line
        from mq.engine.core.waitinfo import queue_event

        event = queue_event(engine, spec.target, spec.key, position, total)
        if event is not None:
            io.emit("queue", **event)

    granted = engine.wait(spec.target, key=spec.key, budget=spec.budget, boards=spec.boards, session=True,
                          extra_fds=io.input_fds, on_extra=keys.ignore, on_tick=io.tick, on_progress=progress,
                          priority=spec.priority)
    return granted.board, granted.grant


def _images(spec: JobSpec) -> boot.Images:
    return boot.Images(files=list(spec.files), dtb=spec.dtb, bitstream=spec.bitstream, linux=spec.linux,
                       completion=spec.completion or "", error=spec.error or "", timeout=spec.timeout,
                       keep_alive=spec.interactive)


def _boot(engine: JobEngine, spec: JobSpec, board: str, env: Dict[str, str]) -> boot.Console:
    """Start the system's ``boot`` command: the job's console."""
    system = engine.inventory.systems[board]
    if not system.boot:
        raise engine.inventory.missing_boot(board)
    return boot.Console(boot.expand(system.boot, system, _images(spec), f"systems.{board}.boot",
                                    path=engine.inventory.path), env)


def _clean_up(engine: JobEngine, spec: JobSpec, board: str, release: bool, console: Optional[boot.Console],
              job_dir: Optional[JobDir], env: Dict[str, str], notes: List[str], why: str, outcome: str) -> bool:
    """Stop the console, power the board off, judge the board's health, delete the uploads, release
    the lock if ``release``; whether ``power_off`` ran and succeeded."""
    powered_off = False
    problem = ""
    if console is not None:
        console.stop()
    if board and (spec.mode != "held" or console is not None):  # -n keeps the lock, not the power
        system = engine.inventory.systems[board]
        if system.power_off:
            problem = boot.power_off(boot.expand(system.power_off, system, _images(spec),
                                               f"systems.{board}.power_off", path=engine.inventory.path), env)
            if problem:
                notes.append(problem)
            powered_off = not problem
    if board and console is not None and outcome:  # before the release: an offline board is never free
        _judge_health(engine, board, console, outcome, problem, notes)
    if job_dir is not None:
        job_dir.remove()
    if release:
        engine.end_session_lock(board, spec.key, reason=why)
    return powered_off


def _judge_health(engine: JobEngine, board: str, console: boot.Console, outcome: str, problem: str,
                  notes: List[str]) -> None:
    """Count a board failure of this run (``health``), or end the board's row; best effort: the
    job's own result stands whatever happens here."""
    status = console.proc.returncode if outcome == outcomes.CONSOLE_ENDED else None
    verdict = health.judge(outcome, console.printed, status, problem)
    if verdict is False:
        return
    failure = verdict if isinstance(verdict, health.Failure) else None
    try:
        count, offline = engine.note_health(board, failure)
    except EngineError as exc:
        notes.append(f"board health not recorded: {exc.message}")
        return
    line = health.note_line(board, failure, count, engine.inventory.systems[board].health_limit, offline)
    if line:
        notes.append(line)


def _watch(console: boot.Console, spec: JobSpec, keys: _Keys, completion: Any, error: Any,
           watch: Optional[LockWatch]) -> str:
    io = keys.io
    wanted = ((outcomes.COMPLETED, completion), (outcomes.ERROR_TEXT, error))
    patterns = {name: p for name, p in wanted if p is not None}
    deadline = time.monotonic() + spec.timeout if 0 <= spec.timeout < boot.NO_DEADLINE else None

    def emit(data: bytes) -> None:
        io.emit("console", data)

    if spec.completion == "" and spec.interactive:  # -c "" -a: an empty text is found at once (mq.sh)
        outcome = outcomes.COMPLETED
    else:
        outcome = boot.watch_console(console, emit, patterns, deadline, io.input_fds, keys.ignore, io.tick,
                                     watch=watch)
    if not spec.interactive or outcome == outcomes.CONSOLE_ENDED:
        return outcome
    io.emit("interactive", outcome=outcome)
    detached = keys.ended  # input already ended: as if Ctrl+D came now

    def on_input(fd: int) -> None:
        nonlocal detached
        for command in keys.read(fd):
            if command[0] == STDIN:
                console.write(command[1])
            elif command[0] in (DETACH, RELEASE, EOF):
                detached = True

    if not detached:
        boot.watch_console(console, emit, {}, None, io.input_fds, on_input, io.tick, stopped=lambda: detached,
                           watch=watch)
    return outcome


def _wait_for(keys: _Keys, wanted: Sequence[str], watch: Optional[LockWatch]) -> None:
    io = keys.io
    watched = watch.fds if watch is not None else []
    while not keys.ended:
        waits = [d for d in (io.tick(), watch.sleep() if watch else None) if d is not None]
        ready, _, _ = select.select([*io.input_fds, *watched, *GUARD.wake_fds], [], [], min(waits) if waits else None)
        GUARD.check()
        if watch is not None:
            watch.look(ready)
        for fd in ready:
            if fd not in GUARD.wake_fds and fd not in watched \
                    and any(command[0] in wanted for command in keys.read(fd)):
                return


__all__ = ["DETACH", "EOF", "LOCK_LOST", "RELEASE", "STDIN", "JobIO", "JobSpec", "run_job"]
