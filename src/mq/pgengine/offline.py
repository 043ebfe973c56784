"""Boards out of service (``mq offline`` / ``mq online``), as the file engine's ``maintenance``.
An offline board has a row in ``mq_offline`` and, whenever nothing else holds it,
a maintenance lock (a ``mq_locks`` row with ``maintenance`` set, key ``offline:
REASON``). Pools skip it, a new wait for it alone fails at once, a queued waiter
keeps its place; a holder keeps it until its release, which puts the maintenance
lock in its place, as does a walk that finds the holder's lock past its ``-T`` or its
``run`` dead. ``online`` removes both and wakes the waiters. The server does each
(``queue.sql``: ``mq_offline``, ``mq_online``; both need mq_admin where members have
roles of their own).
"""

from __future__ import annotations

from typing import Any, Optional

from mq.engine.core.arguments import check_reason
from mq.engine.core.errors import BadInputError
from mq.engine.core.inventory import Inventory
from mq.engine.core.results import Offline

from .link import Link


def board_of(inventory: Inventory, name: str, verb: str) -> str:
    """``name`` as a board of the inventory (UnknownTargetError; a pool is refused)."""
    members = inventory.members(name)
    if inventory.is_pool(name):
        raise BadInputError(f"mq {verb} takes a board, not a pool: {name} is a pool of {' '.join(members)}")
    return name


def _offline(data: Any) -> Offline:
    return Offline(reason=str(data["reason"]), user=str(data["user"]), since=float(data["since"]),
                   locked=bool(data["locked"]))


def set_offline(link: Link, user: str, inventory: Inventory, board: str, reason: str,
                by_health: Optional[int] = None) -> Offline:
    """``by_health``: the board's health limit, reached (any member may then take it offline)."""
    board_of(inventory, board, "offline")
    reason = check_reason(reason)
    if by_health is not None:
        return _offline(link.run(lambda conn: link.call("mq_health_offline", user, board, by_health, reason,
                                                        link.grace, conn=conn)))
    return _offline(link.run(lambda conn: link.call("mq_offline", user, board, reason, link.grace, conn=conn)))


def set_online(link: Link, user: str, inventory: Inventory, board: str) -> Optional[Offline]:
    board_of(inventory, board, "online")
    data = link.run(lambda conn: link.call("mq_online", user, board, conn=conn))
    return None if data is None else _offline(data)


__all__ = ["board_of", "set_offline", "set_online"]
