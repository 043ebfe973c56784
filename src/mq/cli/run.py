"""``mq run``: boot images on a board or pool member and follow its console (mq.sh run)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from mq.engine.core.errors import safe_text
from mq.engine.core.names import NO_KEY
from mq.views import render

from .durations import SECONDS, as_period_and_retries
from .state import PRIORITY_HELP, check_priority_option, complete_names, open_from

OUTCOME_TEXT = {
    "completed": "completion text found",
    "error": "error text found",
    "timeout": "timed out (-d) before the completion text",
    "console-ended": "the console ended before the completion text",
    "detached": "released",
    "released": "its lock was released (sem -signal with its key); job ended",
}
LOCK_LOST = "lock-lost"  # engine.core.outcomes.LOCK_LOST (not imported here: only `mq run` loads the engine's run side)


def run_command(
    ctx: typer.Context,
    system: str = typer.Option(..., "-s", help="System or pool to run on.", autocompletion=complete_names),
    completion: Optional[str] = typer.Option(None, "-c", help="Completion text (regular expression): success."),
    error: Optional[str] = typer.Option(None, "-e", help="Error text (regular expression): failure."),
    timeout: float = typer.Option(-1, "-d", click_type=SECONDS,
                                  help="How long without the completion text before failing (600, 10m; -1: none)."),
    log: Optional[str] = typer.Option(None, "-l", help="Also write the console to this file."),
    key: str = typer.Option(NO_KEY, "-k", help="Lock key."),
    held: bool = typer.Option(False, "-n", help="You already hold the lock: run, do not release."),
    reserve: bool = typer.Option(False, "-r", help="Reserve: lock, wait for Enter or Ctrl+D, release."),
    interactive: bool = typer.Option(False, "-a", help="Keep the console open and interactive after the text."),
    linux: bool = typer.Option(False, "-L", help="The image is Linux (PXE-booting systems only)."),
    dtb: Optional[str] = typer.Option(None, "-b", help="Device tree blob (with -L, on systems that take one)."),
    bitstream: Optional[str] = typer.Option(None, "--bitstream", help="FPGA bitstream file."),
    files: list[str] = typer.Option([], "-f", help="Image file; repeat for systems taking several."),
    period: float = typer.Option(8.0, "-w", help="Seconds per retry period while waiting for the lock."),
    retries: int = typer.Option(-1, "-t", help="Retry periods: -1 forever, 0 one try."),
    budget: Optional[float] = typer.Option(None, "--timeout", click_type=SECONDS,
                                           help="Wait for the lock at most this long in all (90s, 30m, 2h; 0: one "
                                                "try; -1 or inf: for ever), instead of -w x -t."),
    priority: Optional[int] = typer.Option(None, "--priority", help=PRIORITY_HELP),
    as_json: bool = typer.Option(False, "--json", help="The console to stderr; on stdout, a summary (JSON)."),
) -> None:
    """Lock, boot, stream the console until the completion text, power off, release."""
    from mq.client.run_client import RunOptions, Voice, run  # here, not at import: only `mq run` needs it

    period, retries = as_period_and_retries(budget, period, retries)
    lab = open_from(ctx)
    result = run(lab, RunOptions(target=system, completion=completion, error=error, timeout=timeout, log=log,
                                 key=key, held=held, reserve=reserve, interactive=interactive, linux=linux, dtb=dtb,
                                 bitstream=bitstream, files=files, period=period, retries=retries,
                                 priority=check_priority_option(priority), console_to_stderr=as_json),
                 Voice(render.diag))
    for note in result.notes:
        render.diag(f"mq: warning: {note}")
    if result.outcome == LOCK_LOST:
        render.diag(lock_lost_line(result.board, result.taken_by, result.powered_off, result.lost_why))
    else:
        render.diag(f"mq: {result.board}: {OUTCOME_TEXT.get(result.outcome, result.outcome)}")
    if as_json:
        render.out(render.envelope("run", {
            "board": result.board, "target": system, "result": result.outcome, "exit_code": result.exit_code,
            "duration": result.duration, "log": os.path.abspath(log) if log else None,
            "powered_off": result.powered_off, "taken_by": result.taken_by, "lost_why": result.lost_why,
            "notes": result.notes}))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def lock_lost_line(board: str, taken_by: Optional[str], powered_off: bool, why: Optional[str] = None) -> str:
    """The one line for a job whose lock was taken away behind its back (exit 15); ``why``: how
    it went, when the queue knows (the PostgreSQL queue's audit log)."""
    if why is not None:
        how = (f"taken by {safe_text(taken_by)}" if taken_by else "lost") + f" ({safe_text(why, 200)})"
    else:
        how = f"taken by {safe_text(taken_by)} (lockfile -l or a -T reclaim)" if taken_by else "removed by someone"
    return f"mq: the lock for {board} was {how}; job stopped" + (", board powered off" if powered_off else "")
