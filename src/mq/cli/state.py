"""Global options shared by every verb (set by the app callback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer

from ..render import err

if TYPE_CHECKING:
    from ..service import Lab


@dataclass
class Globals:
    host: Optional[str] = None
    base: Optional[str] = None
    debug: bool = False
    mqsh: bool = False  # invoked as mq.sh: mq.sh's configuration (see cli/mqsh.py)


def open_from(ctx: typer.Context) -> Lab:
    from ..config import load_config  # here, not at import: `mq --help` needs neither
    from ..service import open_lab

    opts: Globals = ctx.obj or Globals()
    lab = open_lab(load_config(host=opts.host, base=opts.base, mqsh=opts.mqsh))
    ctx.call_on_close(lab.close)
    for notice in lab.notices:
        err(notice)
    return lab


def complete_names(incomplete: str = "") -> list[str]:
    """Shell completion of system and pool names (``mq.inventory_cache``, loaded when asked)."""
    from ..inventory_cache import names

    return names(incomplete)
