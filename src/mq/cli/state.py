"""Global options shared by every verb (set by the app callback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import typer

from ..config import load_config
from ..render import err
from ..service import Lab, open_lab


@dataclass
class Globals:
    host: Optional[str] = None
    base: Optional[str] = None
    debug: bool = False
    mqsh: bool = False  # invoked as mq.sh: mq.sh's configuration (see cli/mqsh.py)


def open_from(ctx: typer.Context) -> Lab:
    opts: Globals = ctx.obj or Globals()
    lab = open_lab(load_config(host=opts.host, base=opts.base, mqsh=opts.mqsh))
    ctx.call_on_close(lab.close)
    for notice in lab.notices:
        err(notice)
    return lab
