"""``mq offline BOARD --reason TEXT`` and ``mq online BOARD``: boards out of service."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

import typer

from mq.engine.core.errors import safe_text
from mq.views import render

from .state import complete_boards, open_from

if TYPE_CHECKING:
    from mq.engine.core.results import Offline


def offline_json(board: str, offline: Offline, holder: Optional[str] = None) -> dict[str, Any]:
    """``mq offline --json``: the board, why, by whom, since when, and whether its maintenance
    lock is in place (else ``held_by`` still holds it: the lock takes its place at the release)."""
    return {"board": board, "reason": offline.reason, "user": offline.user, "since": offline.since,
            "maintenance_lock": offline.locked, "held_by": None if offline.locked else holder}


def offline(ctx: typer.Context,
            board: str = typer.Argument(..., help="The board (a system, not a pool).", autocompletion=complete_boards),
            reason: str = typer.Option(..., "--reason", help="Why it is out of service (shown to everyone)."),
            as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Take a board out of service, saying why.

    Pools skip it (their waiters go on with the other members), a new wait for it alone
    (sem -wait, run) fails at once with the reason (exit 16), and every listing shows it.
    Old tools are kept off too: while the board is free it is held by a maintenance lock
    (key 'offline: REASON'), which lockfile(1) and mq.sh cannot take. A board someone holds
    stays theirs until they release it; then the maintenance lock takes its place. A waiter
    already queued for the board keeps its place. Any user of the lab may do this (audited);
    again on an offline board, it gives a new reason. `mq online BOARD` ends it.
    """
    from mq.client import service

    lab = open_from(ctx)
    result = service.set_offline(lab, board, reason)
    holder = None
    if not result.locked:
        state = service.sem_info(lab, board)[0]
        holder = state.holder.user if state.holder is not None else None
    if as_json:
        render.out(render.envelope("offline", offline_json(board, result, holder)))
    shown = safe_text(result.reason, 256)
    if result.locked:
        render.diag(f"{board} is offline: {shown} (its maintenance lock keeps lockfile(1) and mq.sh off it)")
    elif holder is not None:
        render.diag(f"{board} is offline: {shown}; {safe_text(holder)} still holds it, and its maintenance "
                    "lock takes its place when released")
    else:
        render.diag(f"{board} is offline: {shown} (its maintenance lock could not be put in place yet)")


def online(ctx: typer.Context,
           board: str = typer.Argument(..., help="The board (a system, not a pool).", autocompletion=complete_boards),
           as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Put a board taken offline back in service.

    Its maintenance lock is removed (only that very lock: a holder's lock stays theirs) and
    its waiters are served as after a release. Any user of the lab may do this (audited).
    On a board that is not offline nothing changes: a note on stderr, exit 0.
    """
    from mq.client import service

    was = service.set_online(open_from(ctx), board)
    if as_json:
        data = None if was is None else {"reason": was.reason, "user": was.user, "since": was.since}
        render.out(render.envelope("online", {"board": board, "was_offline": data}))
    if was is None:
        render.diag(f"{board} was not offline; nothing changed")
    else:
        now = time.time()
        render.diag(f"{board} is back in service, after {render.duration(now - was.since)} offline "
                    f"(since {render.clock(was.since, now)}, by {safe_text(was.user)}: {safe_text(was.reason, 256)})")
