"""The inventory's ``[queue]`` table and a pool's own ``policy``/``aging``, checked (see ``policy``)::

    [queue]
    policy = "priority"          # "fifo" (the default) or "priority"
    aging = 600                  # seconds per priority step (absent or 0: no aging)
    users = { alice = 5 }        # a user's waits get this priority ...
    keys = { "ci-*" = -5 }       # ... unless a key pattern matches first (fnmatch, file order)
    grace = 30                   # PostgreSQL queue: seconds a client that lost its connection
                                 # keeps its tickets and run locks (the file engine needs none)
    max_priority = 10            # PostgreSQL queue with a role per member: the largest priority
                                 # (either sign) a wait may ask for without mq_admin

Mistakes are added to ``found`` as ``InventoryError``s naming the dotted key,
like every other inventory mistake.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from .errors import InventoryError
from .policy import FIFO, POLICIES, QueueConfig, Rule, check_priority
from .tomlparse import dotted_key as _key
from .tomlparse import quoted as _quote

_QUEUE_KEYS = ("policy", "aging", "users", "keys", "grace", "max_priority")
MAX_AGING = 10 * 365 * 86400.0  # ten years per step: more is no aging at all
DEFAULT_MAX_PRIORITY = 10  # [queue] max_priority: what a member without mq_admin may ask for
MAX_GRACE = 86400.0  # a day: longer, a dead client would hold a board over a whole day


def parse_queue(found: List[InventoryError], path: str, body: object) -> QueueConfig:
    if not isinstance(body, dict):
        found.append(InventoryError(path, "queue", "expected a table ([queue])"))
        return QueueConfig()
    for key in body:
        if key not in _QUEUE_KEYS:
            found.append(InventoryError(path, _key("queue", key),
                                        f"unknown key (expected one of: {', '.join(_QUEUE_KEYS)})"))
    policy, aging = parse_pool_rule(found, path, "queue", body)
    users = _priorities(found, path, "users", body.get("users", {}))
    keys = _priorities(found, path, "keys", body.get("keys", {}))
    return QueueConfig(Rule(policy or FIFO, aging or 0.0), users, keys, _grace(found, path, body),
                       _max_priority(found, path, body))


def _max_priority(found: List[InventoryError], path: str, body: Dict[str, Any]) -> int:
    if "max_priority" not in body:
        return DEFAULT_MAX_PRIORITY
    value = body["max_priority"]
    try:
        return check_priority(value)
    except ValueError as exc:
        found.append(InventoryError(path, "queue.max_priority", str(exc)))
        return DEFAULT_MAX_PRIORITY


def _grace(found: List[InventoryError], path: str, body: Dict[str, Any]) -> Optional[float]:
    if "grace" not in body:
        return None
    value = body["grace"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_GRACE:
        found.append(InventoryError(path, "queue.grace", f"expected seconds from 0 to {MAX_GRACE:.0f}, got {value!r}"))
        return None
    return float(value)


def parse_pool_rule(found: List[InventoryError], path: str, where: str, table: Dict[str, Any]
                    ) -> Tuple[Optional[str], Optional[float]]:
    """``policy`` and ``aging`` of a ``[queue]`` or pool table (None where absent or wrong)."""
    policy: Optional[str] = None
    aging: Optional[float] = None
    if "policy" in table:
        value = table["policy"]
        if value in POLICIES:
            policy = str(value)
        else:
            shown = _quote(value) if isinstance(value, str) else repr(value)
            found.append(InventoryError(path, where + ".policy",
                                        f"expected \"fifo\" or \"priority\", got {shown}"))
    if "aging" in table:
        value = table["aging"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= MAX_AGING:
            found.append(InventoryError(path, where + ".aging",
                                        f"expected seconds per priority step (0 to {MAX_AGING:.0f}; 0: no aging), "
                                        f"got {value!r}"))
        else:
            aging = float(value)
    return policy, aging


def _priorities(found: List[InventoryError], path: str, key: str, body: object) -> Tuple[Tuple[str, int], ...]:
    where = _key("queue", key)
    if not isinstance(body, dict):
        found.append(InventoryError(path, where, "expected a table of NAME = PRIORITY"))
        return ()
    result = []
    for name, value in body.items():
        try:
            result.append((str(name), check_priority(value)))
        except ValueError as exc:
            found.append(InventoryError(path, _key("queue", key, name), str(exc)))
    return tuple(result)


__all__ = ["MAX_AGING", "MAX_GRACE", "parse_pool_rule", "parse_queue"]
