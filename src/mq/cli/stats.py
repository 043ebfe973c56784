"""``mq stats``: grants, utilization, waits and holds per board and pool, from the audit log."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Optional

import typer

from mq.settings.errors import BadInputError
from mq.views import render

from .state import open_from

DEFAULT_SINCE = "7d"


def _write_page(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole (a temporary file renamed over it) or not at all."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BadInputError(f"--html {path}: cannot write it: {exc.strerror or exc}") from None


def stats(ctx: typer.Context,
          since: str = typer.Option(DEFAULT_SINCE, "--since", metavar="DURATION|DATE",
                                    help="The period's start: a span ago (90m, 12h, 7d, 2w) or a date "
                                         "(2026-11-30, '2026-11-30 14:00', ISO 8601); it ends now."),
          as_json: bool = typer.Option(False, "--json", help="Versioned JSON output."),
          html: Optional[str] = typer.Option(None, "--html", metavar="FILE",
                                             help="Write the charts as one self-contained HTML page (inline SVG, "
                                                  "nothing fetched) instead of printing them.")) -> None:
    """Per board and pool: grants, utilization, wait and hold (median, 90th percentile), busiest hours.

    From the audit log, over the last 7 days unless --since says otherwise. On a
    terminal, drawn as bar charts; otherwise plain aligned text. A pool's utilization
    is the mean of its members'.
    """
    from mq.client import service
    from mq.client.since import parse_since
    from mq.views.stats import compute, report_json

    now = time.time()
    start = parse_since(since, now)
    lab = open_from(ctx)
    inventory = lab.inventory
    held_now = {s.board: s.holder.since_ns / 1e9 for s in service.sem_dumpall(lab) if s.holder is not None}
    events = service.events(lab, None, start)  # after the holders: a take-over they noticed is in it
    pools = {p.name: p.members for p in inventory.pools.values()}
    report = compute(events, start, now, list(inventory.systems), pools, held_now)
    if html is not None:
        from mq.views.stats_html import page

        _write_page(html, page(report))
        render.diag(f"wrote the stats page {html}")
    if as_json:
        render.out(render.envelope("stats", report_json(report)))
    elif html is None and sys.stdout.isatty():
        from mq.views.stats_chart import print_rich

        print_rich(report)
    elif html is None:
        from mq.views.stats_chart import plain_lines

        render.write_lines(plain_lines(report))
