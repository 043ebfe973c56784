"""``mq demo``: the built-in demo lab's extras (``mq demo traffic``)."""

from __future__ import annotations

import typer

from mq.views import render

from .state import Globals

demo = typer.Typer(help="The built-in demo lab (simulated boards, no configuration).", no_args_is_help=True)


@demo.command("traffic")
def traffic(ctx: typer.Context,
            days: int = typer.Option(7, "--days", help="Days of history to make (1 to 90).")) -> None:
    """Write a plausible history of CI jobs and people into the demo lab's audit log.

    So that `mq status` has hold times for its ETAs and `mq history`, `mq stats` and
    `mq stats --html` show something real on the first day. The records go before the lab's
    own (marked "generated"); only the built-in demo lab is written to, never a configured one.
    """
    from mq.client.demo_traffic import add_traffic
    from mq.settings.config import load_config

    opts = ctx.find_root().obj if isinstance(ctx.find_root().obj, Globals) else Globals()
    written = add_traffic(load_config(host=opts.host, base=opts.base), days)
    render.diag(f"wrote {written} records ({days} days of generated use) into the demo lab's audit log")
