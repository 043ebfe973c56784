"""``mq status``: who holds what, who waits for it, and when their turn is expected."""

from __future__ import annotations

from typing import List, Optional

import typer

from mq.views import render

from .state import complete_names, open_from


def status(ctx: typer.Context,
           names: Optional[List[str]] = typer.Argument(None, help="Systems or pools (default: all).",
                                                       autocompletion=complete_names),
           as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Boards, holders, and the waiters in queue order with their estimated start.

    Each waiter's ETA comes from walking the queue as the engine serves it: a held
    board frees at its holder's -T expiry when set, else after the median hold time
    of that board (or its pool) in the audit log, else it is unknown; the basis of
    each estimate is shown.
    """
    from mq.client import service
    from mq.views.status_view import status_json, status_lines

    result = service.status(open_from(ctx), list(names or []))
    if as_json:
        render.out(render.envelope("status", status_json(result)))
    else:
        render.write_lines(status_lines(result))
    for line in render.unread_lines(result.boards):
        render.diag(line)
