"""``mq run`` on the lab host: lock (or check) a board, boot it, watch its console, clean up.

One call of ``run_job`` is one job. Whatever ends it (success, failure, the
client gone, a signal), its ``finally`` stops the console, powers the board
off, deletes the uploaded images and releases the lock the job took.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from . import job
from .boardlock import NO_KEY
from .errors import BadInputError
from .semaphore import Engine
from .signals import GUARD

# What the client side can ask for while a job runs (from the user's keyboard).
STDIN, DETACH, RELEASE = "stdin", "detach", "release"
Command = Tuple[str, bytes]


@dataclass
class JobSpec:
    target: str
    boards: List[str]
    key: str = NO_KEY
    mode: str = "run"  # run | held (-n) | reserve (-r)
    completion: Optional[str] = None
    error: Optional[str] = None
    timeout: float = -1.0  # -d; < 0: none
    budget: Optional[float] = None  # -w x -t
    interactive: bool = False  # -a
    files: List[str] = field(default_factory=list)  # host paths, in -f order
    dtb: str = ""
    bitstream: str = ""
    linux: bool = False


class JobIO(Protocol):
    """How a job talks to its client (over the agent protocol, or in-process)."""

    input_fds: Sequence[int]

    def emit(self, event: str, data: bytes = b"", **fields: Any) -> None: ...

    def on_input(self, fd: int) -> List[Command]: ...

    def tick(self) -> Optional[float]: ...


def _env(engine_root: str) -> Dict[str, str]:
    """Boot commands find ``mq.engine.simboard`` next to this engine."""
    env = dict(os.environ)
    env["PYTHONPATH"] = engine_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


ENGINE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_job(engine: Engine, spec: JobSpec, io: JobIO, job_dir: Optional[job.JobDir] = None) -> Dict[str, Any]:
    """Run one job to its end; returns ``{"outcome", "board", "notes"}``."""
    board = ""
    took = False
    console: Optional[job.Console] = None
    notes: List[str] = []
    env = _env(ENGINE_ROOT)
    try:  # from the top: an early error still removes the job's uploads
        completion = job.compile_pattern(spec.completion, "-c")
        error = job.compile_pattern(spec.error, "-e")
        if spec.mode == "run" and completion is None and not spec.interactive:
            raise BadInputError("mq run needs -c TEXT (or -r to reserve)")
        if spec.mode == "held":
            board = engine.check_held(spec.target, spec.key, spec.boards)
        else:
            with GUARD.deferred():  # interruptible while waiting; a grant is always recorded here
                grant = engine.wait(spec.target, key=spec.key, budget=spec.budget, boards=spec.boards,
                                    session=True, extra_fds=list(io.input_fds),
                                    on_extra=lambda fd: _ignore_keys(io, fd), on_tick=io.tick)
                board, took = grant.board, True
        io.emit("board", board=board, grant=took)
        system = engine.inventory.systems[board]
        images = job.Images(files=list(spec.files), dtb=spec.dtb, bitstream=spec.bitstream, linux=spec.linux)
        if spec.mode == "reserve":
            _wait_for(io, (RELEASE, DETACH))
            outcome = job.DETACHED
        else:
            if not system.boot:
                raise BadInputError(f"system {board} has no boot command in the inventory (systems.{board}.boot)")
            argv = job.expand(system.boot, system, images, f"systems.{board}.boot")
            console = job.Console(argv, env)
            outcome = _watch(console, spec, io, completion, error)
        return {"outcome": outcome, "board": board, "notes": notes}
    finally:
        with GUARD.deferred():  # a second Ctrl+C must not cut the clean-up short
            _clean_up(engine, spec, board, took, console, job_dir, env, notes)


def _clean_up(engine: Engine, spec: JobSpec, board: str, took: bool, console: Optional[job.Console],
              job_dir: Optional[job.JobDir], env: Dict[str, str], notes: List[str]) -> None:
    if console is not None:
        console.stop()
    if board and spec.mode != "held":
        system = engine.inventory.systems[board]
        if system.power_off:
            images = job.Images(files=list(spec.files), dtb=spec.dtb, bitstream=spec.bitstream,
                                linux=spec.linux)
            problem = job.power_off(job.expand(system.power_off, system, images,
                                               f"systems.{board}.power_off"), env)
            if problem:
                notes.append(problem)
    if job_dir is not None:
        job_dir.remove()
    if took:
        engine.end_session_lock(board, spec.key, reason="run ended")


def _watch(console: job.Console, spec: JobSpec, io: JobIO, completion: Any, error: Any) -> str:
    patterns = {name: p for name, p in ((job.COMPLETED, completion), (job.ERROR_TEXT, error)) if p is not None}
    deadline = time.monotonic() + spec.timeout if spec.timeout >= 0 else None

    def emit(data: bytes) -> None:
        io.emit("console", data)

    # keystrokes before the match (or without -a) are not sent to the board
    outcome = job.watch_console(console, emit, patterns, deadline, io.input_fds, lambda fd: _ignore_keys(io, fd),
                                io.tick)
    if not spec.interactive or outcome == job.CONSOLE_ENDED:
        return outcome
    io.emit("interactive", outcome=outcome)
    detached = False

    def on_input(fd: int) -> None:
        nonlocal detached
        for command in io.on_input(fd):
            if command[0] == STDIN:
                console.write(command[1])
            elif command[0] in (DETACH, RELEASE):
                detached = True

    job.watch_console(console, emit, {}, None, io.input_fds, on_input, io.tick, stopped=lambda: detached)
    return outcome


def _wait_for(io: JobIO, wanted: Sequence[str]) -> None:
    while True:
        tick = io.tick()
        ready, _, _ = select.select([*io.input_fds, *GUARD.wake_fds], [], [], tick)
        GUARD.check()
        for fd in ready:
            if fd not in GUARD.wake_fds and any(command[0] in wanted for command in io.on_input(fd)):
                return


def _ignore_keys(io: JobIO, fd: int) -> None:
    io.on_input(fd)


__all__ = ["DETACH", "RELEASE", "STDIN", "JobIO", "JobSpec", "run_job"]
