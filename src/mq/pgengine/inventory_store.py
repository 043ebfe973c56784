"""The lab inventory kept in the database (``mq admin load-inventory lab.toml``), so every
client of one queue sees the same systems, pools and lab hosts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from mq.engine.inventory import Inventory, Pool, System, parse_inventory, system_fields


def store(conn: Any, inventory: Inventory, toml: Optional[str] = None) -> None:
    """Replace the stored inventory with ``inventory`` (and its TOML text, when given)."""
    with conn.transaction():
        conn.execute("LOCK TABLE mq_inventory, mq_systems, mq_pools IN EXCLUSIVE MODE")
        conn.execute("DELETE FROM mq_systems")
        conn.execute("DELETE FROM mq_pools")
        conn.execute("INSERT INTO mq_inventory (id, path, toml, loaded) VALUES (1, %s, %s, now()) "
                     "ON CONFLICT (id) DO UPDATE SET path = excluded.path, toml = excluded.toml, "
                     "loaded = excluded.loaded", (inventory.path, toml))
        for position, system in enumerate(inventory.systems.values()):
            conn.execute("INSERT INTO mq_systems (name, position, host, attributes) VALUES (%s, %s, %s, %s)",
                         (system.name, position, getattr(system, "host", ""),
                          json.dumps(dataclasses.asdict(system))))
        for position, pool in enumerate(inventory.pools.values()):
            conn.execute("INSERT INTO mq_pools (name, position, members) VALUES (%s, %s, %s)",
                         (pool.name, position, list(pool.members)))


def load(conn: Any) -> Optional[Inventory]:
    """The stored inventory (None: none was loaded). From its TOML text when it was stored,
    so it is checked and parsed exactly as a file is; else from the rows."""
    row = conn.execute("SELECT path, toml FROM mq_inventory WHERE id = 1").fetchone()
    if row is None:
        return None
    path, toml = row
    if toml is not None:
        return parse_inventory(toml, path)
    systems = {}
    for name, attributes in conn.execute("SELECT name, attributes FROM mq_systems ORDER BY position"):
        systems[name] = System(**system_fields(attributes))
    pools = {name: Pool(name=name, members=tuple(members))
             for name, members in conn.execute("SELECT name, members FROM mq_pools ORDER BY position")}
    return Inventory(path=path, systems=systems, pools=pools)


def hosts(conn: Any) -> dict[str, str]:
    """Each stored system's lab host ("": the lab's one host)."""
    return {name: host for name, host in conn.execute("SELECT name, host FROM mq_systems ORDER BY position")}


__all__ = ["hosts", "load", "store"]
