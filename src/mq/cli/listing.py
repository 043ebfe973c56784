"""``mq systems``, ``system-tsv``, ``pool-tsv``, ``features``: the lab inventory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from mq.settings.errors import BadInputError
from mq.views import render

from .state import Globals, open_from

if TYPE_CHECKING:
    from mq.engine.core.inventory import Inventory

JSON_HELP = "Versioned JSON output."


def systems(ctx: typer.Context,
            mode: Optional[str] = typer.Argument(None, help="'simple': the names only, one a line.", metavar="[MODE]"),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Table of systems, then pools.

    With no MODE, a table of every system and its attributes, then each pool and its
    members. MODE 'simple' prints just the names, one a line, systems then pools (as
    `mq.sh systems simple`, for scripts and completion).
    """
    if mode not in (None, "simple"):  # (with --json too: the mode is checked, whatever the format)
        raise BadInputError(f"Unknown systems mode '{mode}' (did you mean 'simple'?)")
    inv = inventory_of(ctx)
    as_mqsh = _as_mqsh(ctx)  # mq.sh's own boxes, byte for byte
    if as_json:
        render.out(render.envelope("systems", render.inventory_json(inv)))
    elif mode == "simple":
        render.write_lines(render.systems_simple(inv, as_mqsh=as_mqsh))
    else:
        render.write_lines(render.systems_lines(inv, as_mqsh=as_mqsh))


def inventory_of(ctx: typer.Context) -> Inventory:
    """The lab's inventory; when its host cannot be reached, the copy the last command that
    read it kept (``inventory_cache``), saying on stderr how old it is (as ``mq.sh``, which
    reads its own scripts, nothing is said)."""
    from mq.settings.config import load_config
    from mq.transport.base import SshError

    try:
        return open_from(ctx).inventory
    except SshError as exc:
        from mq.client.service import cached_inventory

        opts: Globals = ctx.obj or Globals()
        cached = cached_inventory(load_config(host=opts.host, base=opts.base, mqsh=opts.mqsh))
        if cached is None:
            raise
        inventory, saved = cached
        if not opts.mqsh:
            import time

            render.diag(f"{exc.host} cannot be reached ({exc.reason}): listing its inventory as it was "
                        f"{_age(saved)} ago (cached {time.strftime('%Y-%m-%d %H:%M', time.localtime(saved))})")
        return inventory


def _age(since: float) -> str:
    import time

    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _listing(ctx: typer.Context, as_json: bool, kind: str, data: Callable[[Inventory], Any],
             lines: Callable[[Inventory], list[str]]) -> None:
    inv = inventory_of(ctx)
    if as_json:
        render.out(render.envelope(kind, data(inv)))
    else:
        render.write_lines(lines(inv))


def system_tsv(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Systems and attributes, tab separated, with a header line."""
    _listing(ctx, as_json, "system-tsv", lambda inv: render.inventory_json(inv)["systems"], render.system_tsv)


def pool_tsv(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """One line per pool: its name, then its members, tab separated."""
    _listing(ctx, as_json, "pool-tsv", lambda inv: render.inventory_json(inv)["pools"], render.pool_tsv)


def features(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Which systems PXE-boot Linux and accept a DTB."""
    _listing(ctx, as_json, "features", render.features_json,
             lambda inv: render.features_lines(inv, as_mqsh=_as_mqsh(ctx)))


def _as_mqsh(ctx: typer.Context) -> bool:
    return bool(isinstance(ctx.obj, Globals) and ctx.obj.mqsh)
