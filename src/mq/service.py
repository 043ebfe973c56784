"""The library API the CLI calls: find the lab, open the engine, return results.

Only the local transport exists so far (``host = "local"``): the engine
runs in this process, with no SSH at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from .config import Config
from .engine.boardlock import NO_KEY
from .engine.inventory import Inventory, load_inventory
from .engine.semaphore import BoardState, Engine, Grant, Released
from .errors import ConfigError

DEMO_NOTICE = ("mq: no configuration found; created a demo lab with simulated boards in {base} "
               "(set MQ_HOST/MQ_BASE or ~/.config/mq/config.toml for a real lab)")


def wait_budget(period: float, retries: int) -> Optional[float]:
    """mq.sh's ``-w``/``-t`` as a total budget: -1 forever, 0 one try, else period x retries."""
    if retries < 0:
        return None
    return max(0.0, period) * retries


@dataclass
class Lab:
    """An opened lab: its inventory and the engine that owns its locks."""

    config: Config
    inventory: Inventory
    engine: Engine
    notices: List[str] = field(default_factory=list)


def _create_demo_lab(config: Config) -> Optional[str]:
    from .engine.demo import DEMO_INVENTORY

    if os.path.exists(config.lab):
        return None
    os.makedirs(config.base, mode=0o700, exist_ok=True)
    tmp = config.lab + f".tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(DEMO_INVENTORY)
    os.replace(tmp, config.lab)
    return DEMO_NOTICE.format(base=config.base)


def open_lab(config: Config) -> Lab:
    notices: List[str] = []
    if not config.is_local:
        raise ConfigError(config.sources.get("host", "host"), "host",
                          f"'{config.host}': remote lab hosts need the SSH transport (not built yet); "
                          "use host = \"local\"")
    if config.default_lab:
        notice = _create_demo_lab(config)
        if notice:
            notices.append(notice)
    inventory = load_inventory(config.lab)
    return Lab(config=config, inventory=inventory, engine=Engine(config.base, inventory), notices=notices)


def sem_wait(lab: Lab, name: str, key: str = NO_KEY, lock_timeout: int = 0, period: float = 8.0,
             retries: int = -1) -> Grant:
    return lab.engine.wait(name, key=key, timeout=lock_timeout, budget=wait_budget(period, retries))


def sem_signal(lab: Lab, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
    return lab.engine.signal(name, key=key, force=force)


def sem_info(lab: Lab, name: str) -> List[BoardState]:
    return lab.engine.info(name)


def sem_cancel(lab: Lab, name: str, key: str = NO_KEY) -> int:
    return lab.engine.cancel(name, key=key)


def sem_dumpall(lab: Lab) -> List[BoardState]:
    return lab.engine.dumpall()
