"""The typer application: global options and one command per verb."""

from __future__ import annotations

from typing import Optional

import typer

from mq import __version__

from . import check, import_mqsh, listing, run, sem, status
from .state import Globals

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="mq: a fair machine queue for shared embedded test boards (drop-in for mq.sh).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mq {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="Lab host ('local' = no SSH). Env MQ_HOST."),
    base: Optional[str] = typer.Option(None, "--base", help="Lock directory on the lab host. Env MQ_BASE."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for unexpected errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = Globals(host=host, base=base, debug=debug, mqsh=isinstance(ctx.obj, Globals) and ctx.obj.mqsh)


app.command("sem")(sem.sem)
app.command("run")(run.run_command)
app.command("status")(status.status)
app.command("systems")(listing.systems)
app.command("system-tsv")(listing.system_tsv)
app.command("pool-tsv")(listing.pool_tsv)
app.command("features")(listing.features)
app.command("check")(check.check)
app.command("import-mqsh")(import_mqsh.import_mqsh)

from . import history, stats  # noqa: E402 - issue 11: the audit log's history and statistics

app.command("history")(history.history)
app.command("stats")(stats.stats)

from . import holders, maintenance  # noqa: E402 - issue 11: the lockbot, and boards out of service

app.command("holders")(holders.holders)
app.command("offline")(maintenance.offline)
app.command("online")(maintenance.online)

from . import admin  # noqa: E402 - issue 13: the queue in PostgreSQL

app.add_typer(admin.admin, name="admin")

from . import demo  # noqa: E402 - issue 23: the demo lab's history

app.add_typer(demo.demo, name="demo")
