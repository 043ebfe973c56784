"""The lab inventory kept in the database (``mq admin load-inventory lab.toml``), so every
client of one queue sees the same systems, pools and lab hosts."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Dict, Optional

from mq.engine.core import policy
from mq.engine.core.inventory import Inventory, parse_inventory


def store(conn: Any, inventory: Inventory, toml: Optional[str] = None) -> None:
    """Replace the stored inventory with ``inventory`` (and its TOML text, when given)."""
    with conn.transaction():
        conn.execute("LOCK TABLE mq_inventory, mq_systems, mq_pools IN EXCLUSIVE MODE")
        conn.execute("DELETE FROM mq_systems")
        conn.execute("DELETE FROM mq_pools")
        conn.execute("INSERT INTO mq_inventory (id, path, toml, loaded, queue) VALUES (1, %s, %s, now(), %s) "
                     "ON CONFLICT (id) DO UPDATE SET path = excluded.path, toml = excluded.toml, "
                     "loaded = excluded.loaded, queue = excluded.queue",
                     (inventory.path, toml, json.dumps(queue_rules(inventory))))
        for position, system in enumerate(inventory.systems.values()):
            conn.execute("INSERT INTO mq_systems (name, position, host, attributes) VALUES (%s, %s, %s, %s)",
                         (system.name, position, getattr(system, "host", ""),
                          json.dumps(dataclasses.asdict(system))))
        for position, pool in enumerate(inventory.pools.values()):
            conn.execute("INSERT INTO mq_pools (name, position, members) VALUES (%s, %s, %s)",
                         (pool.name, position, list(pool.members)))


def queue_rules(inventory: Inventory) -> Dict[str, Any]:
    """The lab's ``[queue]`` as the server applies it to members with roles of their own
    (``queue.sql``: ``mq_shift``, ``mq_configured_priority``, ``mq_check_priority``): each
    target's rule ('' the lab's), the key patterns as regular expressions, the users, the bound
    on priorities a wait may ask for without mq_admin."""
    rules = {"": {"policy": inventory.queue.rule.policy, "aging": inventory.queue.rule.aging}}
    for pool in inventory.pools:
        rule = policy.rule_for(inventory, pool)
        rules[pool] = {"policy": rule.policy, "aging": rule.aging}
    return {"rules": rules, "keys": [[_regex(pattern), priority] for pattern, priority in inventory.queue.keys],
            "users": [[user, priority] for user, priority in inventory.queue.users],
            "max_priority": inventory.queue.max_priority}


def _regex(pattern: str) -> str:
    """An fnmatch pattern as an anchored POSIX regular expression (``*``, ``?``, ``[...]``)."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "^" + "".join(out) + "$"


def from_hello(hello: Dict[str, Any]) -> Optional[Inventory]:
    """The stored inventory, as ``mq_hello`` sent it (None: none was loaded)."""
    stored = hello.get("inventory")
    if not stored or stored.get("toml") is None:
        return None
    return parse_inventory(str(stored["toml"]), str(stored["path"]))


__all__ = ["from_hello", "queue_rules", "store"]
