"""``mq systems``, ``system-tsv``, ``pool-tsv``, ``features``: the lab inventory."""

from __future__ import annotations

from typing import Optional

import typer

from .. import render
from ..errors import BadInputError
from .state import open_from


def systems(ctx: typer.Context, mode: Optional[str] = typer.Argument(None, help="'simple': names only."),
            as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Table of systems, then pools."""
    inv = open_from(ctx).inventory
    if as_json:
        render.out(render.envelope("systems", render.inventory_json(inv)))
    elif mode == "simple":
        render.write_lines(render.systems_simple(inv))
    elif mode is None:
        render.write_lines(render.systems_lines(inv))
    else:
        raise BadInputError(f"Unknown systems mode '{mode}' (did you mean 'simple'?)")


def system_tsv(ctx: typer.Context) -> None:
    """Systems and attributes, tab separated, with a header line."""
    render.write_lines(render.system_tsv(open_from(ctx).inventory))


def pool_tsv(ctx: typer.Context) -> None:
    """One line per pool: its name, then its members, tab separated."""
    render.write_lines(render.pool_tsv(open_from(ctx).inventory))


def features(ctx: typer.Context) -> None:
    """Which systems PXE-boot Linux and accept a DTB."""
    render.write_lines(render.features_lines(open_from(ctx).inventory))
