"""``mq history``: the audit log's events, one line each (or ``history`` JSON)."""

from __future__ import annotations

from typing import Optional

import typer

from mq.views import render

from .state import complete_names, open_from


def history(ctx: typer.Context,
            name: Optional[str] = typer.Argument(None, help="A system or pool: only its events (a pool's: its "
                                                            "members' and the waits for it); default: all.",
                                                 metavar="[BOARD|POOL]", autocompletion=complete_names),
            since: Optional[str] = typer.Option(None, "--since", metavar="DURATION|DATE",
                                                help="Only events from then on: a span ago (90m, 12h, 7d, 2w) or a "
                                                     "date (2026-11-30, '2026-11-30 14:00', ISO 8601); default: "
                                                     "the whole log."),
            as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """What happened to the boards, from the audit log, oldest first.

    One line per event: time, event (grant, release, force, reclaim, taken-over,
    lock-lost, cancel, timeout, offline, online ...), board, user, key, grant number,
    the wait or hold it ends, and what else there is to say.
    """
    from mq.client import service
    from mq.client.since import parse_since
    from mq.views.history_view import history_json, history_lines

    start = None if since is None else parse_since(since)
    lab = open_from(ctx)
    events = [history_json(entry) for entry in service.events(lab, name, start)]
    if as_json:
        render.out(render.envelope("history", events))
    else:
        render.write_lines(history_lines(events))
