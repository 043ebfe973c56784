"""``mq sem``: wait, signal, info, mr-info, cancel and dumpall, as in mq.sh."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from mq.engine.core.arguments import MAX_LOCK_TIMEOUT
from mq.engine.core.errors import EngineError, NotAcquiredError
from mq.engine.core.names import NO_KEY
from mq.settings.errors import BadInputError, UsageError
from mq.views import render

from .durations import SECONDS, WHOLE_SECONDS, as_period_and_retries
from .state import PRIORITY_HELP, check_priority_option, complete_names, open_from

if TYPE_CHECKING:
    from mq.client import service
    from mq.engine.core.results import Grant

ACTIONS = ("wait", "signal", "info", "mr-info", "cancel")


def sem(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, help="System or pool (or 'dumpall').",
                                         autocompletion=complete_names),
    wait: bool = typer.Option(False, "--wait", "-wait", help="Acquire the lock (fair: in queue order)."),
    signal: bool = typer.Option(False, "--signal", "-signal", help="Release the lock."),
    info: bool = typer.Option(False, "--info", "-info", help="Show holder, grant number and waiters."),
    mr_info: bool = typer.Option(False, "--mr-info", "-mr-info", help="One machine-readable line per board."),
    cancel: bool = typer.Option(False, "--cancel", "-cancel", help="End your waits for NAME with KEY."),
    key: str = typer.Option(NO_KEY, "-k", "--key", help="Key stored with the lock ('0' = none)."),
    force: bool = typer.Option(False, "-f", "--force",
                               help="Release even another user's lock; with -cancel, end other users' waits too."),
    period: float = typer.Option(8.0, "-w", help="Seconds per retry period (budget = -w x -t)."),
    retries: int = typer.Option(-1, "-t", help="Retry periods: -1 forever, 0 one try."),
    lock_timeout: int = typer.Option(0, "-T", click_type=WHOLE_SECONDS,
                                     help="Others may reclaim the lock after this long (600, 10m, 2h)."),
    budget: Optional[float] = typer.Option(None, "--timeout", click_type=SECONDS,
                                           help="Wait at most this long in all (90s, 30m, 2h; 0: one try; "
                                                "-1 or inf: for ever), instead of -w x -t."),
    priority: Optional[int] = typer.Option(None, "--priority", help=PRIORITY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Versioned JSON output."),
) -> None:
    """Lock, release and inspect boards and pools (mq.sh sem).

    NAME is a system (one board) or a pool (whichever of its boards frees first);
    `mq systems` lists both. Give exactly one of -wait, -signal, -info, -mr-info and
    -cancel. `mq sem dumpall`, with no option, prints one line per held board:
    NAME LOCKED USER DATE [KEY], as -mr-info does.
    """
    chosen = [a for a, flag in zip(ACTIONS, (wait, signal, info, mr_info, cancel), strict=True) if flag]
    if len(chosen) > 1:
        raise BadInputError("Give only one of -wait, -signal, -info, -mr-info, -cancel")
    if not chosen:
        if name == "dumpall":
            return _dumpall(ctx, as_json)
        raise UsageError("Usage: mq sem -wait|-signal|-info|-mr-info|-cancel SYSTEM|POOL, or mq sem dumpall")
    if name is None:
        raise UsageError(f"mq sem -{chosen[0]} needs a system or pool name")
    if not 0 <= lock_timeout <= MAX_LOCK_TIMEOUT:
        raise BadInputError(f"-T {lock_timeout}: out of range (0 to {MAX_LOCK_TIMEOUT} seconds)")
    from mq.client import service  # here, not at import: `mq --help` needs no lab

    lab = open_from(ctx)
    action = chosen[0]
    if action == "wait":
        period, retries = as_period_and_retries(budget, period, retries)
        _wait(lab, name, key, lock_timeout, period, retries, as_json, check_priority_option(priority))
    elif action == "signal":
        released = service.sem_signal(lab, name, key=key, force=force)
        if as_json:
            render.out(render.envelope("released", [r.board for r in released]))
        else:
            for line in render.released_lines(released):
                render.diag(line)
    elif action == "cancel":
        count = service.sem_cancel(lab, name, key=key, force=force)
        if as_json:
            render.out(render.envelope("cancelled", {"name": name, "key": key, "count": count}))
        render.diag(f"Cancelled {count} wait(s) for {name} with key '{key}'")
    else:
        states = service.sem_info(lab, name)
        if as_json:
            render.out(render.envelope("info", [render.state_json(s) for s in states]))
        elif action == "info":
            render.write_lines(line for s in states for line in render.info_lines(s))
        else:
            render.write_lines(render.mr_info_line(s) for s in states)
        for line in render.unread_lines(states):
            render.diag(line)


def _wait(lab: service.Lab, name: str, key: str, lock_timeout: int, period: float, retries: int,
          as_json: bool, priority: Optional[int]) -> None:
    from .acquire import acquire

    def report(grant: Grant) -> None:
        via = f" (pool {name})" if grant.board != name else ""
        render.diag(f"Acquired lock for {grant.board}{via}, grant #{grant.grant}")
        if grant.reclaimed_from:
            render.diag(render.takeover_line(grant))
        render.out(render.envelope("grant", render.grant_json(grant)) if as_json else grant.board)

    one_try = retries == 0  # -t 0: no wait to show; a failure says who holds what it wanted
    try:
        acquire(lab, name, key, lock_timeout, period, retries, report, show_wait=not one_try, priority=priority)
    except NotAcquiredError as exc:
        if exc.reason:  # cancelled, or a reason of its own: as it is
            raise
        busy = _who_holds(lab, name)
        raise NotAcquiredError(exc.name, busy) if busy else exc from None


def _who_holds(lab: service.Lab, name: str) -> str:
    """What kept ``name`` from its waiter, for the failure line ('' when that cannot be read)."""
    import time

    from mq.client import service

    try:
        return render.busy_text(service.sem_info(lab, name), time.time())
    except EngineError:
        return ""


def _dumpall(ctx: typer.Context, as_json: bool) -> None:
    from mq.client import service

    states = service.sem_dumpall(open_from(ctx))
    if as_json:
        render.out(render.envelope("dumpall", [render.state_json(s) for s in states]))
    else:
        render.write_lines(render.mr_info_line(s) for s in states)
    for line in render.unread_lines(states):
        render.diag(line)
