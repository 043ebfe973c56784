"""Global options shared by every verb (set by the app callback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer

from mq.views.render import diag

if TYPE_CHECKING:
    from mq.client.service import Lab


@dataclass
class Globals:
    host: Optional[str] = None
    base: Optional[str] = None
    debug: bool = False
    mqsh: bool = False  # invoked as mq.sh: mq.sh's configuration (see cli/mqsh.py)


def open_from(ctx: typer.Context) -> Lab:
    from mq.client.service import open_lab
    from mq.settings.config import load_config  # here, not at import: `mq --help` needs neither

    opts: Globals = ctx.obj or Globals()
    lab = open_lab(load_config(host=opts.host, base=opts.base, mqsh=opts.mqsh))
    ctx.call_on_close(lab.close)
    for notice in lab.notices:
        diag(notice)
    lab.on_notice = diag
    return lab


def complete_names(ctx: typer.Context, incomplete: str = "") -> list[str]:
    """Shell completion of system and pool names (``mq.client.inventory_cache``, loaded when asked), from
    the lab the line being completed names (``--host``/``--base``), under the name it was typed."""
    from mq.client.inventory_cache import names

    given = ctx.find_root().params
    opts = ctx.obj if isinstance(ctx.obj, Globals) else Globals()
    return names(incomplete, host=given.get("host"), base=given.get("base"), mqsh=opts.mqsh)


def complete_boards(ctx: typer.Context, incomplete: str = "") -> list[str]:
    """Shell completion of system names only (``mq offline``/``online`` refuse a pool)."""
    from mq.client.inventory_cache import names

    given = ctx.find_root().params
    opts = ctx.obj if isinstance(ctx.obj, Globals) else Globals()
    return names(incomplete, host=given.get("host"), base=given.get("base"), mqsh=opts.mqsh, pools=False)


PRIORITY_HELP = ("Queue priority (higher first; default: the inventory's [queue], else 0); "
                 "orders the queue only under the priority policy.")


def check_priority_option(priority: Optional[int]) -> Optional[int]:
    """``--priority``, in range (a wrong one exits 5 before anything is asked of the lab)."""
    from mq.engine.core.policy import MAX_PRIORITY
    from mq.settings.errors import BadInputError

    if priority is not None and abs(priority) > MAX_PRIORITY:
        raise BadInputError(f"--priority {priority}: out of range (-{MAX_PRIORITY} to {MAX_PRIORITY})")
    return priority
