"""The client's copy of a remote lab's inventory, for shell completion offline.

Written whenever a command fetches the inventory from the lab host (``service.Lab.inventory``:
the listings, ``run``, every ``mq.sh sem``), and by ``mq sem`` when the copy is missing or
lacks the name the command gives (``service.Lab.note_name``); read by completion, which
must never open a connection. One file per lab: ``$XDG_CACHE_HOME/mq/inventory-HOST-BASE.json``
(``~/.cache`` without ``XDG_CACHE_HOME``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Optional

from mq.settings.config import Config, load_config

MQSH_NAME = "mq.sh"  # completing for this name: mq.sh's configuration (``~/.mq`` first)


def cache_path(config: Config) -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", f"{config.host}-{config.base}")[:150]
    return os.path.join(root, "mq", f"inventory-{safe}.json")


def save(config: Config, data: dict[str, Any]) -> None:
    if config.is_local:
        return
    path = cache_path(config)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError:
        pass


def load(config: Config) -> Optional[tuple[dict[str, Any], float]]:
    """The cached copy of a remote lab's inventory, as the host sent it, and when it was saved
    (None: there is none, or it cannot be read)."""
    path = cache_path(config)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        saved = os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("systems"), list):
        return None
    return data, saved


def cached(config: Config, pools: bool = True) -> Optional[list[str]]:
    """The system (and with ``pools``, pool) names of the cached copy, or None when there is none
    (or it is unreadable)."""
    try:
        with open(cache_path(config), encoding="utf-8") as handle:
            data = json.load(handle)
        return [str(s["name"]) for s in data["systems"]] + [str(p["name"]) for p in data["pools"] if pools]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lacks(config: Config, name: Optional[str] = None) -> bool:
    """A remote lab whose cached copy is missing, or does not know ``name``: worth refreshing."""
    if config.is_local:
        return False
    found = cached(config)
    return found is None or (name is not None and name not in found)


def names(incomplete: str = "", host: Optional[str] = None, base: Optional[str] = None,
          mqsh: Optional[bool] = None, pools: bool = True) -> list[str]:
    """System and pool names for completion (local inventory, or the cached remote one); the
    system names alone without ``pools`` (``mq offline``/``online`` take a board).

    ``host``/``base`` are the global options on the command line being completed; ``mqsh``
    says it is the ``mq.sh`` name's (None: decided by the name this process was started as).
    """
    if mqsh is None:
        mqsh = os.path.basename(sys.argv[0]) == MQSH_NAME
    try:
        config = load_config(host=host, base=base, mqsh=mqsh)
        if config.is_local:
            from mq.engine.core.inventory import load_inventory

            inv = load_inventory(config.lab)
            found: Optional[list[str]] = [*inv.systems, *(inv.pools if pools else ())]
        else:
            found = cached(config, pools)
    except Exception:
        return []
    return [n for n in found or [] if n.startswith(incomplete)]
