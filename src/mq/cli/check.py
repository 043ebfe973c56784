"""``mq check``: find the mistakes in a lab file, the configuration and (``--host``) the lab host."""

from __future__ import annotations

from typing import Optional

import typer

from mq.engine.core.errors import safe_text
from mq.views import render

from .state import Globals


def check(ctx: typer.Context,
          file: Optional[str] = typer.Argument(None, help="A lab file (TOML) on this machine; default: the "
                                                          "configured lab's."),
          host: bool = typer.Option(False, "--host", help="Also check the lab host: reachable, lock directory "
                                                          "writable, lockfile(1) interop."),
          as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Check a lab file (or the configured lab) and the configuration; nothing is locked.

    Each problem is one line on stdout, `FILE: KEY: message` (a warning: `FILE: KEY: warning: ...`),
    then a count on stderr. With --host, one line per host check: `HOST: CHECK: ok` or
    `HOST: CHECK: FAIL: reason`. Exit 0 with no problem, else the first problem's code: 6 for the
    configuration or the lab file, 7 for the lock directory, 9 when the host cannot be reached.
    """
    from mq.client.check import check as run_checks  # here, not at import: only `mq check` needs it

    opts: Globals = ctx.obj or Globals()
    report = run_checks(file, host, opts.host, opts.base, opts.mqsh)
    for notice in report.notices:
        render.err(notice)
    if as_json:
        render.out(render.envelope("check", report.to_json()))
    else:
        render.write_lines([safe_text(finding.line(), 4096) for finding in report.findings])
    summary = report.summary()
    if summary:
        render.err(summary)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
