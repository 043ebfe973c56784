"""``mq status``: who holds what, who waits for it, and when their turn is expected."""

from __future__ import annotations

from typing import List, Optional

import typer

from mq.settings.errors import UsageError
from mq.views import render

from .state import complete_names, open_from


def status(ctx: typer.Context,
           names: Optional[List[str]] = typer.Argument(None, help="Systems or pools (default: all).",
                                                       autocompletion=complete_names),
           mine: bool = typer.Option(False, "--mine", help="Only what you hold and wait for, across the lab."),
           user: Optional[str] = typer.Option(None, "--user", metavar="NAME",
                                              help="Only what NAME holds and waits for, across the lab."),
           as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Boards, holders, and the waiters in queue order with their estimated start.

    Each waiter's ETA comes from walking the queue as the engine serves it: a held
    board frees at its holder's -T expiry when set, else after the median hold time
    of that board (or its pool) in the audit log, else it is unknown; the basis of
    each estimate is shown.
    """
    from mq.client import service
    from mq.views.status_view import mine_json, mine_lines, status_json, status_lines

    lab = open_from(ctx)
    if mine or user is not None:
        if mine and user is not None:
            raise UsageError("--mine and --user NAME: give one of them")
        who = user if user is not None else service.whoami(lab)
        found = service.status(lab, [])  # (the whole lab: a wait for a pool shows under its members)
        if as_json:
            render.out(render.envelope("mine", mine_json(found, who)))
        else:
            render.write_lines(mine_lines(found, who))
        return
    result = service.status(lab, list(names or []))
    if as_json:
        render.out(render.envelope("status", status_json(result)))
    else:
        render.write_lines(status_lines(result))
    for line in render.unread_lines(result.boards):
        render.diag(line)
