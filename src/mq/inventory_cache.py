"""The client's copy of a remote lab's inventory, for shell completion offline.

Written whenever a command fetches the inventory from the lab host; read by
completion, which must never open a connection.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from .config import Config, load_config


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


def names(incomplete: str = "") -> list[str]:
    """System and pool names for completion (local inventory, or the cached remote one)."""
    try:
        config = load_config()
        if config.is_local:
            from .engine.inventory import load_inventory

            inv = load_inventory(config.lab)
            found = [*inv.systems, *inv.pools]
        else:
            with open(cache_path(config), encoding="utf-8") as handle:
                data = json.load(handle)
            found = [s["name"] for s in data["systems"]] + [p["name"] for p in data["pools"]]
    except Exception:
        return []
    return [n for n in found if n.startswith(incomplete)]
